"""One optimizer step on the native kernels: the CPU module's OpenMP loops, or
the CUDA kernels (on the GPU, or emulated on the CPU) with one launch per
bucket, in which the last block also ends the step and writes the per-tensor
values of the next update."""
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
        rows += [e.work.data_ptr(), e.grad_ptr, s0, s1, s2, e.step.data_ptr(), e.work.numel(), e.group,
                 _ptr(e.copy_out), _ptr(e.scales)]
    assert len(rows) == fields * len(bucket.entries)
    return rows


@dataclass
class NativeTables:
    """A bucket's pointer table on its device and, for the CUDA kernels, its
    chunk table, the tensors' values for their next update and the counter of
    finished blocks."""
    table: torch.Tensor  # int64 (tensors, NUM_TENSOR_FIELDS)
    grad_ptrs: list
    chunks: torch.Tensor | None = None  # int64 (tensor, first element) per block
    num_chunks: int = 0
    scalars: torch.Tensor | None = None  # float64 (tensors, TENSOR_SCALAR_FIELDS)
    blocks_done: torch.Tensor | None = None  # int32 (1,), 0 between launches
    prepared: int | None = None  # DeviceState.generation the scalars were written for


def build_tables(bucket: Bucket, device_kernels: bool) -> NativeTables:
    """The bucket's tables, uploaded to its device (a copy from host memory:
    done when the tables are built, not at every step)."""
    rows = torch.tensor(_tensor_rows(bucket), dtype=torch.int64)
    table = rows.view(len(bucket.entries), -1).to(bucket.device)
    tables = NativeTables(table, [e.grad_ptr for e in bucket.entries])
    if device_kernels:
        starts = [v for t, e in enumerate(bucket.entries) for begin in range(0, e.work.numel(), CUDA_CHUNK)
                  for v in (t, begin)]
        # a bucket of empty tensors still gets one (empty) chunk: its launch ends the step
        starts = starts or [0, 0]
        tables.chunks = torch.tensor(starts, dtype=torch.int64).to(bucket.device)
        tables.num_chunks = len(starts) // 2
        fields = _native.format_constants().TENSOR_SCALAR_FIELDS
        tables.scalars = torch.zeros(len(bucket.entries), fields, dtype=torch.float64, device=bucket.device)
        tables.blocks_done = torch.zeros(1, dtype=torch.int32, device=bucket.device)
    return tables


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _location(device: torch.device) -> tuple:
    """(device index, stream) for a CUDA-kernel module call."""
    if device.type == "cuda":
        return device.index, torch.cuda.current_stream(device).cuda_stream
    return 0, 0


def _tables(bucket: Bucket, backend: str) -> NativeTables:
    """The bucket's tables, built once and kept with it; a grad that moved since
    the last step only rewrites the grad column: on the CPU with a copy, for the
    CUDA kernels with kernels whose arguments carry the addresses (no host
    memory copied, and under CUDA graph capture every replay writes the
    capture's grad addresses)."""
    device_kernels = backend in _native.DEVICE_KERNEL_BACKENDS
    if bucket.native is None:
        if _capturing(bucket.device):
            raise RuntimeError("fusedlr: the first step of these params is being captured in a CUDA graph; take "
                               "at least one eager step (the usual warm-up before capture) so the device tables "
                               "exist before capture")
        bucket.native = build_tables(bucket, device_kernels)
        return bucket.native
    tables = bucket.native
    grad_ptrs = [e.grad_ptr for e in bucket.entries]
    if tables.grad_ptrs != grad_ptrs:
        constants = _native.format_constants()
        column = constants.TENSOR_FIELDS["grad"]
        if device_kernels:
            _native.module_of(backend).write_column(
                *_location(bucket.device), tables.table.data_ptr() + column * tables.table.element_size(),
                constants.NUM_TENSOR_FIELDS, grad_ptrs)
            if _capturing(bucket.device):
                grad_ptrs = None  # replays rewrite the column: the next eager step must write it again
        else:
            tables.table[:, column].copy_(torch.tensor(grad_ptrs, dtype=torch.int64))
        tables.grad_ptrs = grad_ptrs
    return tables


def _ptr(t: torch.Tensor | None) -> int:
    return t.data_ptr() if t is not None else 0


def _step_args(ds: DeviceState, kind: str, num_groups: int, grad_scale, found_inf, clipping=None) -> dict:
    constants = _native.format_constants()
    return dict(groups=ds.groups.data_ptr(), num_groups=num_groups, program=ds.program.data_ptr(),
                plateau=ds.plateau.data_ptr(), global_step=ds.step.data_ptr(), grad_scale=_ptr(grad_scale),
                found_inf=_ptr(found_inf), clipping=_ptr(clipping), kind=constants.OPTIMIZER_KINDS[kind])


def _dtype_code(dtype: torch.dtype) -> int:
    return _native.format_constants().DTYPES[str(dtype).removeprefix("torch.")]


def _bucket_args(bucket: Bucket, tables: NativeTables) -> dict:
    return dict(tensors=tables.table.data_ptr(), num_tensors=len(bucket.entries), dtype=_dtype_code(bucket.dtype),
                grad_dtype=_dtype_code(bucket.grad_dtype), state_dtype=_dtype_code(bucket.state_dtype),
                stochastic_rounding=bucket.stochastic_rounding, maximize=bucket.maximize, nesterov=bucket.nesterov,
                amsgrad=bucket.amsgrad)


def _outputs(ds: DeviceState) -> dict:
    """Where a step writes the groups' next lrs, whether it was applied and its history row."""
    return dict(next_lr=ds.next_lr.data_ptr(), applied=ds.applied.data_ptr(), history=_ptr(ds.history))


def _device_step_args(ds: DeviceState, tables: NativeTables | None, last_bucket: bool) -> dict:
    return dict(scalars=_ptr(tables.scalars) if tables else 0, group_values=ds.group_values.data_ptr(),
                last_bucket=last_bucket, **_outputs(ds))


def run(ds: DeviceState, buckets: list[Bucket], kind: str, num_groups: int,
        grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None, backend: str,
        clipping: torch.Tensor | None = None) -> None:
    """Update every bucket on ds.device, then advance its schedule step.
    ``clipping``: the device's clip coefficient and grad norm (clipping.py), or None."""
    module = _native.module_of(backend)
    common = _step_args(ds, kind, num_groups, grad_scale, found_inf, clipping)
    if backend not in _native.DEVICE_KERNEL_BACKENDS:
        threads = torch.get_num_threads()
        for i, bucket in enumerate(buckets):
            args = module.step_args(**common, **_bucket_args(bucket, _tables(bucket, backend)), **_outputs(ds))
            module.update(args, num_threads=threads)
            module.finish(args, advance=i == len(buckets) - 1)
            bucket.write_back()
        if not buckets:  # nothing had a grad: the schedule still moves, as a torch scheduler would
            module.finish(module.step_args(**common, **_outputs(ds)), advance=True)
        return
    location = _location(ds.device)
    stepped = []
    for i, bucket in enumerate(buckets):
        tables = _tables(bucket, backend)
        args = module.step_args(**common, **_bucket_args(bucket, tables),
                                **_device_step_args(ds, tables, i == len(buckets) - 1))
        # the values of this update were written by the last step's kernels only if these tables
        # took part in it and nothing changed since (the groups, the counter, the plateau)
        if tables.prepared != ds.generation or not any(t is tables for t in ds.stepped_tables):
            module.step(*location, args, mode=module.PREPARE)
            tables.prepared = ds.generation
        stepped.append(tables)
        module.update(*location, args, chunks=tables.chunks.data_ptr(), num_chunks=tables.num_chunks,
                      chunk_size=CUDA_CHUNK, blocks_done=tables.blocks_done.data_ptr())
        bucket.write_back()
    ds.stepped_tables[:] = stepped
    if not buckets:
        module.step(*location, module.step_args(**common, **_device_step_args(ds, None, True)),
                    mode=module.END_STEP)


def prepare(ds: DeviceState, buckets: list[Bucket], kind: str, num_groups: int, backend: str) -> None:
    """Rewrite the values of every bucket's next update after the groups, the
    counter or the plateau changed outside a step (upload_hyperparameters,
    report); launched as kernels, so a CUDA graph may capture it."""
    if backend not in _native.DEVICE_KERNEL_BACKENDS:
        return  # the CPU evaluates each step's values in the step itself
    module = _native.module_of(backend)
    common = _step_args(ds, kind, num_groups, None, None)
    prepared = [bucket.native for bucket in buckets if bucket.native is not None]  # others: at their first step
    for i, bucket in enumerate(buckets):
        if bucket.native is None:
            continue
        args = module.step_args(**common, **_bucket_args(bucket, bucket.native),
                                **_device_step_args(ds, bucket.native, i == len(buckets) - 1))
        module.step(*_location(ds.device), args, mode=module.PREPARE)
        bucket.native.prepared = ds.generation
    ds.stepped_tables[:] = prepared
