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
import weakref
from typing import Optional

import torch

from .. import _native
from . import native_backend, reference_backend
from .buckets import Bucket, Entry, collect

# entry_info holds, per entry: group, bucket, and the index in `states` of its
# state0..state2, of its fp32 master copy or low halves and of its 8-bit states'
# absmax values (-1 where the optimizer keeps none).
_ENTRY_FIELDS = 7
# bucket_info holds, per bucket: maximize, nesterov, amsgrad, stochastic_rounding.
_BUCKET_FIELDS = 4

# Each optimizer's kept tables for its compiled steps (with the list of those
# whose update ended the last step), found from the address of its step counter
# and dropped with its DeviceState, not shared with other optimizers. At most
# _TABLES_KEPT layouts are kept per optimizer, the oldest dropped first (a graph
# captured from a compiled step replays the latest ones).
_TABLES_BY_COUNTER: dict = {}
_TABLES_KEPT = 32


def register_device_state(ds) -> None:
    """Make ``ds.compiled_tables`` the cache of its compiled steps, for as long as ``ds`` lives."""
    key = ds.step.data_ptr()
    _TABLES_BY_COUNTER[key] = (ds.compiled_tables, ds.stepped_tables)
    weakref.finalize(ds, _TABLES_BY_COUNTER.pop, key, None)


class _DeviceTables:
    """The DeviceState fields native_backend.run reads."""

    def __init__(self, step, next_lr, applied, groups, program, plateau, group_values, generation, stepped_tables,
                 history):
        self.device = step.device
        self.history = history if history.numel() else None
        self.step, self.next_lr, self.applied = step, next_lr, applied
        self.groups, self.program, self.plateau, self.group_values = groups, program, plateau, group_values
        self.generation, self.stepped_tables = generation, stepped_tables


@torch.library.custom_op("fusedlr::native_step", mutates_args=("params", "states", "steps", "global_step", "next_lr",
                                                                   "applied", "group_values", "history"))
def native_step(params: list[torch.Tensor], grads: list[torch.Tensor], states: list[torch.Tensor],
                steps: list[torch.Tensor], global_step: torch.Tensor, next_lr: torch.Tensor,
                applied: torch.Tensor, groups: torch.Tensor, program: torch.Tensor, plateau: torch.Tensor,
                group_values: torch.Tensor, history: torch.Tensor, grad_scale: Optional[torch.Tensor],
                found_inf: Optional[torch.Tensor], clipping: Optional[torch.Tensor], entry_info: list[int],
                bucket_info: list[int], kind: str, num_groups: int, backend: str, generation: int) -> None:
    """One device's optimizer step on the native kernel (see native_backend.run).
    ``generation``: the DeviceState's, so the CUDA kernels' per-tensor values
    are rewritten after the tables changed (a new value recompiles)."""
    buckets = [Bucket(global_step.device, torch.float32, *map(bool, bucket_info[b:b + _BUCKET_FIELDS - 1]),
                      stochastic_rounding=bool(bucket_info[b + _BUCKET_FIELDS - 1]))
               for b in range(0, len(bucket_info), _BUCKET_FIELDS)]
    for i, (p, g, step) in enumerate(zip(params, grads, steps)):
        group, bucket, *slots, master, scales = entry_info[_ENTRY_FIELDS * i:_ENTRY_FIELDS * (i + 1)]
        entry_states = tuple(states[s] if s >= 0 else None for s in slots)
        if master < 0:
            work, copy_out = (p if p.is_contiguous() else p.contiguous()), None
        else:  # the master is updated, the param written as its rounding (or, for low halves, with them)
            work = states[master]
            copy_out = p if p.is_contiguous() else p.contiguous() if work.dtype == torch.int16 else \
                torch.empty_like(p, memory_format=torch.contiguous_format)
        buckets[bucket].dtype, buckets[bucket].grad_dtype = work.dtype, p.dtype
        buckets[bucket].state_dtype = next((s.dtype for s in entry_states if s is not None), work.dtype)
        buckets[bucket].entries.append(Entry(p, work, g.contiguous(), entry_states, step, group, "",
                                             copy_out=copy_out, scales=states[scales] if scales >= 0 else None))
    cache, stepped_tables = _TABLES_BY_COUNTER[global_step.data_ptr()]
    device_kernels = backend in _native.DEVICE_KERNEL_BACKENDS
    for bucket in buckets:
        bucket.native = _cached_tables(cache, bucket, device_kernels)
        if generation < 0:
            bucket.native.prepared = None  # prepare the next update's values in every step
    tables = _DeviceTables(global_step, next_lr, applied, groups, program, plateau, group_values, generation,
                           stepped_tables, history)
    native_backend.run(tables, [b for b in buckets if b.entries], kind, num_groups, grad_scale, found_inf, backend,
                       clipping)


@native_step.register_fake
def _(params, grads, states, steps, global_step, next_lr, applied, groups, program, plateau, group_values, history,
      grad_scale, found_inf, clipping, entry_info, bucket_info, kind, num_groups, backend, generation) -> None:
    return None


def native_report(plateau: torch.Tensor, next_lr: torch.Tensor, metric: Optional[torch.Tensor], metric_value: float,
                  groups: torch.Tensor, program: torch.Tensor, global_step: torch.Tensor, num_groups: int,
                  backend: str) -> None:
    """opt.report on a native kernel: the plateau step, then the next lrs. The
    metric is a float64 tensor on the device, or (metric None) a number handed
    to the kernel as an argument."""
    module = _native.module_of(backend)
    args = module.step_args(groups=groups.data_ptr(), num_groups=num_groups, program=program.data_ptr(),
                            plateau=plateau.data_ptr(), global_step=global_step.data_ptr(),
                            next_lr=next_lr.data_ptr())
    if backend == "cpu":
        value = torch.tensor(metric_value, dtype=torch.float64) if metric is None else metric
        module.plateau_report(args, metric=value.data_ptr())
        return
    location = (plateau.device.index, torch.cuda.current_stream(plateau.device).cuda_stream) \
        if plateau.device.type == "cuda" else (0, 0)
    module.plateau_report(*location, args, metric=0 if metric is None else metric.data_ptr(),
                          metric_value=metric_value)


@torch.library.custom_op("fusedlr::plateau_report", mutates_args=("plateau", "next_lr"))
def plateau_report(plateau: torch.Tensor, next_lr: torch.Tensor, metric: torch.Tensor, groups: torch.Tensor,
                   program: torch.Tensor, global_step: torch.Tensor, num_groups: int, backend: str) -> None:
    """opt.report(metric) on the native kernel, traceable by torch.compile. The
    CUDA kernels' per-tensor values of the next update are rewritten by the
    compiled step, which prepares them every step when a plateau is used."""
    native_report(plateau, next_lr, metric, 0.0, groups, program, global_step, num_groups, backend)


@plateau_report.register_fake
def _(plateau, next_lr, metric, groups, program, global_step, num_groups, backend) -> None:
    return None


def _cached_tables(cache: dict, bucket: Bucket, device_kernels: bool):
    """A kept native table for the same tensors (native_backend rewrites the
    grad column itself when only grads moved)."""
    key = (bucket.device, bucket.dtype, tuple(
        (e.work.data_ptr(), e.step.data_ptr(), e.work.numel(), e.group,
         e.copy_out.data_ptr() if e.copy_out is not None else 0, e.scales.data_ptr() if e.scales is not None else 0,
         *(s.data_ptr() if s is not None else 0 for s in e.states)) for e in bucket.entries))
    tables = cache.pop(key, None)
    if tables is None:
        tables = native_backend.build_tables(bucket, device_kernels)
        if len(cache) >= _TABLES_KEPT:
            cache.pop(next(iter(cache)))
    cache[key] = tables  # (re)inserted last: the most recently used
    return tables


def traced_step(optimizer, backend_of, grad_scale, found_inf, on_device) -> None:
    """The body of ``FusedOptimizer.step`` under torch.compile: buckets gathered
    without the eager caches, then one ``fusedlr::native_step`` per device (or the
    reference maths, traced)."""
    work = collect(optimizer)
    optimizer._compiled_steps = True
    clips = optimizer._clip_grads(work, grad_scale)
    for device, ds in optimizer._devices.items():
        buckets = work.get(device, [])
        scale, inf = on_device(grad_scale, device), on_device(found_inf, device)
        clipping = ds.clipping if clips else None
        backend = backend_of(device)
        if backend == "reference":
            reference_backend.run(ds, buckets, optimizer.spec, optimizer.param_groups, scale, inf, clipping)
            continue
        params, grads, states, steps, entry_info, bucket_info = [], [], [], [], [], []
        for b, bucket in enumerate(buckets):
            bucket_info += [int(bucket.maximize), int(bucket.nesterov), int(bucket.amsgrad),
                            int(bucket.stochastic_rounding)]
            for e in bucket.entries:
                slots = []
                for s in (*e.states, e.work if e.copy_out is not None else None, e.scales):  # master, absmax last
                    slots.append(len(states) if s is not None else -1)
                    if s is not None:
                        states.append(s)
                entry_info += [e.group, b, *slots]
                params.append(e.target)
                grads.append(e.grad)
                steps.append(e.step)
        # the CUDA kernels' per-tensor values follow the tables' generation; with
        # a plateau a report may change them between steps, so they are prepared every step
        generation = 0 if backend not in _native.DEVICE_KERNEL_BACKENDS else \
            -1 if ds.plateau_schedule is not None else ds.generation
        history = ds.history if ds.history is not None else ds.no_history
        torch.ops.fusedlr.native_step(params, grads, states, steps, ds.step, ds.next_lr, ds.applied, ds.groups,
                                      ds.program, ds.plateau, ds.group_values, history, scale, inf, clipping,
                                      entry_info, bucket_info, optimizer.kind, len(optimizer.param_groups), backend,
                                      generation)
