"""The native kernels as torch custom ops, for torch.compile.

The eager step keeps Python-side caches keyed on ``data_ptr()``, which Dynamo
cannot trace. Under ``torch.compile`` the step instead hands each device's
tensors to the custom op ``fusedlr::native_step`` (declared with the tensors it
mutates, and a fake implementation that does nothing), so the compiled graph
calls the same native kernels without a graph break; ``fusedlr::plateau_report``
does the same for ``opt.report``. The reference backend is plain torch ops and
is traced as it is.
"""
# (no `from __future__ import annotations`: older torch.library reads the op
# schemas from real annotation objects)
from typing import Optional

import torch

from .. import _native
from . import native_backend, reference_backend
from .buckets import Bucket, Entry, collect

# entry_info holds, per entry: group, bucket, and the index in `states` of its
# state0..state2 (-1 where the optimizer keeps none).
_ENTRY_FIELDS = 5
# bucket_info holds, per bucket: maximize, nesterov, amsgrad.
_BUCKET_FIELDS = 3

# Pointer tables of recent native_step calls, keyed on the addresses they hold,
# so replaying a compiled step does not rebuild them (bounded: one per layout).
_TABLE_CACHE: dict = {}
_TABLE_CACHE_SIZE = 64


class _DeviceTables:
    """The DeviceState fields native_backend.run reads."""

    def __init__(self, step, next_lr, applied, groups, program, plateau):
        self.device = step.device
        self.step, self.next_lr, self.applied = step, next_lr, applied
        self.groups, self.program, self.plateau = groups, program, plateau


@torch.library.custom_op("fusedlr::native_step", mutates_args=("params", "states", "steps", "global_step", "next_lr",
                                                                   "applied"))
def native_step(params: list[torch.Tensor], grads: list[torch.Tensor], states: list[torch.Tensor],
                steps: list[torch.Tensor], global_step: torch.Tensor, next_lr: torch.Tensor,
                applied: torch.Tensor, groups: torch.Tensor, program: torch.Tensor, plateau: torch.Tensor,
                grad_scale: Optional[torch.Tensor],
                found_inf: Optional[torch.Tensor], entry_info: list[int], bucket_info: list[int],
                kind: str, num_groups: int) -> None:
    """One device's optimizer step on the native kernel (see native_backend.run)."""
    buckets = [Bucket(global_step.device, torch.float32, *map(bool, bucket_info[b:b + _BUCKET_FIELDS]))
               for b in range(0, len(bucket_info), _BUCKET_FIELDS)]
    for i, (p, g, step) in enumerate(zip(params, grads, steps)):
        group, bucket, *slots = entry_info[_ENTRY_FIELDS * i:_ENTRY_FIELDS * (i + 1)]
        work = p if p.is_contiguous() else p.contiguous()
        entry_states = tuple(states[s] if s >= 0 else None for s in slots)
        buckets[bucket].dtype = p.dtype
        buckets[bucket].entries.append(Entry(p, work, g.contiguous(), entry_states, step, group, ""))
    for bucket in buckets:
        bucket.native = _cached_tables(bucket)
    tables = _DeviceTables(global_step, next_lr, applied, groups, program, plateau)
    native_backend.run(tables, [b for b in buckets if b.entries], kind, num_groups, grad_scale, found_inf)


@native_step.register_fake
def _(params, grads, states, steps, global_step, next_lr, applied, groups, program, plateau, grad_scale, found_inf,
      entry_info, bucket_info, kind, num_groups) -> None:
    return None


@torch.library.custom_op("fusedlr::plateau_report", mutates_args=("plateau", "next_lr"))
def plateau_report(plateau: torch.Tensor, next_lr: torch.Tensor, metric: torch.Tensor, groups: torch.Tensor,
                   program: torch.Tensor, global_step: torch.Tensor, num_groups: int) -> None:
    """opt.report(metric) on the native kernel: the plateau step, then the next lrs."""
    args = dict(groups=groups.data_ptr(), num_groups=num_groups, program=program.data_ptr(),
                plateau=plateau.data_ptr(), global_step=global_step.data_ptr(), metric=metric.data_ptr(),
                next_lr=next_lr.data_ptr())
    if plateau.device.type == "cuda":
        _native.cuda_module.plateau_report(plateau.device.index, torch.cuda.current_stream(plateau.device).cuda_stream,
                                           **args)
    else:
        _native.cpu_module.plateau_report(**args)


@plateau_report.register_fake
def _(plateau, next_lr, metric, groups, program, global_step, num_groups) -> None:
    return None


def _cached_tables(bucket: Bucket):
    """A kept native table for the same tensors (native_backend rewrites the
    grad column itself when only grads moved)."""
    key = (bucket.device, bucket.dtype, tuple(
        (e.work.data_ptr(), e.step.data_ptr(), e.work.numel(), e.group,
         *(s.data_ptr() if s is not None else 0 for s in e.states)) for e in bucket.entries))
    tables = _TABLE_CACHE.get(key)
    if tables is None:
        tables = native_backend.build_tables(bucket)
        if len(_TABLE_CACHE) >= _TABLE_CACHE_SIZE:
            _TABLE_CACHE.pop(next(iter(_TABLE_CACHE)))
        _TABLE_CACHE[key] = tables
    return tables


def traced_step(optimizer, backend_of, grad_scale, found_inf, on_device) -> None:
    """The body of ``FusedOptimizer.step`` under torch.compile: buckets gathered
    without the eager caches, then one ``fusedlr::native_step`` per device (or the
    reference maths, traced)."""
    work = collect(optimizer)
    for device, ds in optimizer._devices.items():
        buckets = work.get(device, [])
        scale, inf = on_device(grad_scale, device), on_device(found_inf, device)
        if backend_of(device) == "reference":
            reference_backend.run(ds, buckets, optimizer.kind, optimizer.param_groups, scale, inf)
            continue
        params, grads, states, steps, entry_info, bucket_info = [], [], [], [], [], []
        for b, bucket in enumerate(buckets):
            bucket_info += [int(bucket.maximize), int(bucket.nesterov), int(bucket.amsgrad)]
            for e in bucket.entries:
                slots = []
                for s in e.states:
                    slots.append(len(states) if s is not None else -1)
                    if s is not None:
                        states.append(s)
                entry_info += [e.group, b, *slots]
                params.append(e.param)
                grads.append(e.grad)
                steps.append(e.step)
        torch.ops.fusedlr.native_step(params, grads, states, steps, ds.step, ds.next_lr, ds.applied, ds.groups,
                                      ds.program, ds.plateau, scale, inf, entry_info, bucket_info, optimizer.kind,
                                      len(optimizer.param_groups))
