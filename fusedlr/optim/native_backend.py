"""One optimizer step on the native kernels (CPU module or CUDA module)."""
from __future__ import annotations

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


def _tables(ds: DeviceState, bucket: Bucket) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(tensor table, chunk table or None, number of chunks) on the bucket's device.
    CUDA tables are cached and re-uploaded only when a pointer changes."""
    rows = _tensor_rows(bucket)
    if bucket.device.type == "cpu":
        return torch.tensor(rows, dtype=torch.int64), None, 0
    key = (bucket.dtype, bucket.maximize, bucket.nesterov, bucket.amsgrad)
    cached = ds.tensor_tables.get(key)
    if cached is not None and cached[0] == rows:
        return cached[1], cached[2], cached[3]
    chunks = [v for t, e in enumerate(bucket.entries) for begin in range(0, e.work.numel(), CUDA_CHUNK)
              for v in (t, begin)]
    table = torch.tensor(rows, dtype=torch.int64).to(bucket.device)
    chunk_table = torch.tensor(chunks or [0], dtype=torch.int64).to(bucket.device)
    ds.tensor_tables[key] = (rows, table, chunk_table, len(chunks) // 2)
    return table, chunk_table, len(chunks) // 2


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
                  global_step=ds.step.data_ptr(), grad_scale=_ptr(grad_scale), found_inf=_ptr(found_inf),
                  kind=constants.OPTIMIZER_KINDS[kind])
    threads = torch.get_num_threads()
    for i, bucket in enumerate(buckets):
        table, chunks, num_chunks = _tables(ds, bucket)
        args = dict(common, tensors=table.data_ptr(), num_tensors=len(bucket.entries),
                    dtype=constants.DTYPES[str(bucket.dtype).removeprefix("torch.")],
                    maximize=bucket.maximize, nesterov=bucket.nesterov, amsgrad=bucket.amsgrad)
        if on_cuda:
            module.update(*prefix, chunks=chunks.data_ptr(), num_chunks=num_chunks, chunk_size=CUDA_CHUNK, **args)
        else:
            module.update(num_threads=threads, **args)
        module.finish(*prefix, advance=i == len(buckets) - 1, next_lr=ds.next_lr.data_ptr(), **args)
        bucket.write_back()
    if not buckets:  # nothing had a grad: the schedule still moves, as a torch scheduler would
        module.finish(*prefix, tensors=0, num_tensors=0, dtype=0, maximize=False, nesterov=False, amsgrad=False,
                      advance=True, next_lr=ds.next_lr.data_ptr(), **common)
