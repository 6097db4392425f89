"""One optimizer step on the native kernels (CPU module or CUDA module)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _native
from .buckets import Bucket
from .device_state import DeviceState

# Elements per CUDA block; the chunk table maps each block to (tensor, first element).
CUDA_CHUNK = 1 << 16


def _tensor_rows(bucket: Bucket) -> list[int]:
    fields = _native.format_constants().NUM_TENSOR_FIELDS
    rows = []
    for e in bucket.entries:
        s0, s1, s2 = (t.data_ptr() if t is not None else 0 for t in e.states)
        rows += [e.work.data_ptr(), e.grad.data_ptr(), s0, s1, s2, e.step.data_ptr(), e.work.numel(), e.group]
    assert len(rows) == fields * len(bucket.entries)
    return rows


@dataclass
class NativeTables:
    """A bucket's pointer table (and CUDA chunk table) on its device."""
    table: torch.Tensor  # int64 (tensors, NUM_TENSOR_FIELDS)
    chunks: torch.Tensor | None  # CUDA: int64 (tensor, first element) per block
    num_chunks: int
    grad_ptrs: list


def build_tables(bucket: Bucket) -> NativeTables:
    """The bucket's pointer table (and CUDA chunk table), uploaded to its device."""
    rows = torch.tensor(_tensor_rows(bucket), dtype=torch.int64)
    chunks, num_chunks = None, 0
    if bucket.device.type == "cuda":
        starts = [v for t, e in enumerate(bucket.entries) for begin in range(0, e.work.numel(), CUDA_CHUNK)
                  for v in (t, begin)]
        chunks = torch.tensor(starts or [0], dtype=torch.int64).to(bucket.device)
        num_chunks = len(starts) // 2
    table = rows.view(len(bucket.entries), -1).to(bucket.device)
    return NativeTables(table, chunks, num_chunks, [e.grad_ptr for e in bucket.entries])


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _tables(bucket: Bucket) -> NativeTables:
    """The bucket's tables, built once and kept with it; a grad that moved since
    the last step only rewrites the grad column. Under CUDA graph capture (where
    grads are usually allocated anew by the captured backward) that rewrite is
    done by captured kernels, so every replay writes the capture's grad addresses."""
    if bucket.native is None:
        if _capturing(bucket.device):
            raise RuntimeError("fusedlr: the first step of these params is being captured in a CUDA graph; take "
                               "at least one eager step (the usual warm-up before capture) so the device tables "
                               "exist before capture")
        bucket.native = build_tables(bucket)
        return bucket.native
    tables = bucket.native
    grad_ptrs = [e.grad_ptr for e in bucket.entries]
    if tables.grad_ptrs != grad_ptrs:
        constants = _native.format_constants()
        column = constants.TENSOR_FIELDS["grad"]
        if _capturing(bucket.device):
            device = bucket.device.index
            _native.cuda_module.write_column(device, torch.cuda.current_stream(bucket.device).cuda_stream,
                                             tables.table.data_ptr() + column * tables.table.element_size(),
                                             constants.NUM_TENSOR_FIELDS, grad_ptrs)
            grad_ptrs = None  # replays rewrite the column: the next eager step must write it again
        else:
            tables.table[:, column].copy_(torch.tensor(grad_ptrs, dtype=torch.int64))
        tables.grad_ptrs = grad_ptrs
    return tables


def _ptr(t: torch.Tensor | None) -> int:
    return t.data_ptr() if t is not None else 0


def run(ds: DeviceState, buckets: list[Bucket], kind: str, num_groups: int,
        grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> None:
    """Update every bucket on ds.device, then advance its schedule step."""
    on_cuda = ds.device.type == "cuda"
    module = _native.cuda_module if on_cuda else _native.cpu_module
    constants = _native.format_constants()
    prefix = (ds.device.index, torch.cuda.current_stream(ds.device).cuda_stream) if on_cuda else ()
    common = dict(groups=ds.groups.data_ptr(), num_groups=num_groups, program=ds.program.data_ptr(),
                  plateau=ds.plateau.data_ptr(),
                  global_step=ds.step.data_ptr(), grad_scale=_ptr(grad_scale), found_inf=_ptr(found_inf),
                  kind=constants.OPTIMIZER_KINDS[kind])
    outputs = dict(next_lr=ds.next_lr.data_ptr(), applied=ds.applied.data_ptr())
    threads = torch.get_num_threads()
    for i, bucket in enumerate(buckets):
        tables = _tables(bucket)
        args = dict(common, tensors=tables.table.data_ptr(), num_tensors=len(bucket.entries),
                    dtype=constants.DTYPES[str(bucket.dtype).removeprefix("torch.")],
                    maximize=bucket.maximize, nesterov=bucket.nesterov, amsgrad=bucket.amsgrad)
        if on_cuda:
            module.update(*prefix, chunks=tables.chunks.data_ptr(), num_chunks=tables.num_chunks,
                          chunk_size=CUDA_CHUNK, **args)
        else:
            module.update(num_threads=threads, **args)
        module.finish(*prefix, advance=i == len(buckets) - 1, **outputs, **args)
        bucket.write_back()
    if not buckets:  # nothing had a grad: the schedule still moves, as a torch scheduler would
        module.finish(*prefix, tensors=0, num_tensors=0, dtype=0, maximize=False, nesterov=False, amsgrad=False,
                      advance=True, **outputs, **common)
