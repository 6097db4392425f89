"""One optimizer step in plain PyTorch: the oracle for the native kernels and
the fallback on devices without one. Written from torch.optim's update rules;
tensor ops only, so it never reads a device value on the host. A step that
GradScaler found inf/nan in is computed and then discarded with torch.where."""
from __future__ import annotations

import copy

import torch

from .buckets import Bucket, Entry
from .device_state import DeviceState
from .. import _native
from . import block_states, history, split_master, stochastic_rounding
from .group_tables import group_lrs_at
from .reference_updates import commit
from .specs import OptimizerSpec

_MAX_COUNT = 2 ** 63 - 1


def _grad_factor(grad_scale: torch.Tensor | None, clipping: torch.Tensor | None) -> torch.Tensor | None:
    """What every raw grad is multiplied by (float64, as the kernels' grad_factor):
    GradScaler's unscale (the float32 reciprocal of its scale) and the clip coefficient."""
    factor = None
    if grad_scale is not None:
        factor = grad_scale.double().reciprocal().float().double().reshape(())
    if clipping is not None:
        coefficient = clipping[_native.format_constants().CLIP_COEFFICIENT]
        factor = coefficient if factor is None else factor * coefficient
    return factor


def _state_store(bucket: Bucket, e: Entry, t: int, skip):
    """store(state, value, slot): commits a state slot's new value, rounded to
    nearest, or stochastically for bf16 states beside fp32 params (with the
    kernels' random bits: tensor t of the bucket at its update count)."""
    if not (bucket.stochastic_rounding and bucket.state_dtype == torch.bfloat16 and bucket.dtype != torch.bfloat16):
        return lambda state, value, slot: commit(state, value, skip)
    seeds = stochastic_rounding.seeds(t, e.step)
    return lambda state, value, slot: commit(state, stochastic_rounding.to_bf16(value, seeds[slot]), skip)


def _joined(e: Entry) -> Entry:
    """master_weights="remainder": the entry with its fp32 masters (joined from the
    param and the low halves) as the values the update writes."""
    joined = copy.copy(e)
    joined.work = split_master.join(e.copy_out, e.work)
    return joined


def _decoded(e: Entry) -> Entry:
    """state_dtype="int8": the entry with its moments' fp32 values (decoded from
    their codes) as the states the update reads and writes."""
    decoded = copy.copy(e)
    decoded.states = block_states.decoded_states(e.states, e.scales)
    return decoded


def _set(state: torch.Tensor, value: torch.Tensor, slot: int) -> None:
    state.copy_(value)


def _scheduled_values(ds: DeviceState, spec: OptimizerSpec, param_groups: list[dict]) -> dict:
    """{"lr", "weight_decay", "hyper1"}: float64 (G,) device tensors at ds.step."""
    columns = _native.format_constants().GROUP_FIELDS
    now = {"lr": ds.lrs_at(param_groups, ds.step)}
    for key, column in spec.schedules.items():
        now[column] = group_lrs_at(param_groups, ds.step, ds.groups[:, columns[column]], key)
    return now


def _count_step(counter: torch.Tensor, applied) -> None:
    """counter += applied, held at the int64 maximum instead of wrapping."""
    counter.add_(applied * (counter < _MAX_COUNT))


def run(ds: DeviceState, buckets: list[Bucket], spec: OptimizerSpec, param_groups: list[dict],
        grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None,
        clipping: torch.Tensor | None = None) -> None:
    now = _scheduled_values(ds, spec, param_groups)
    factor = _grad_factor(grad_scale, clipping)
    skip = None if found_inf is None else (found_inf.reshape(()) != 0)
    not_skipped = 1 if skip is None else (~skip).to(torch.int64)
    for bucket in buckets:
        coded = bucket.state_dtype == block_states.CODE_DTYPE
        for t, e in enumerate(bucket.entries):
            joined = bucket.dtype == torch.int16
            updated = _joined(e) if joined else _decoded(e) if coded else e
            spec.reference_update(updated, param_groups[e.group], {k: v[e.group] for k, v in now.items()}, bucket,
                                  factor, skip, _set if coded else _state_store(bucket, e, t, skip))
            if coded:  # the moments' new values into their codes and absmax values
                block_states.store(e.states, e.scales, updated.states, skip, stochastic_rounding.seeds(t, e.step))
            if joined:  # master_weights="remainder": the master back into the param and low halves
                split_master.split(updated.work, e.copy_out, e.work)
            elif e.copy_out is not None:  # master weights: the param becomes the master's rounding
                commit(e.copy_out, e.work, skip)
            _count_step(e.step, not_skipped)
            e.note_step_written()
        bucket.write_back()
    if ds.history is not None:
        applied = torch.ones((), dtype=torch.bool, device=ds.device) if skip is None else ~skip
        grad_norm = None if clipping is None else clipping[_native.format_constants().CLIP_GRAD_NORM]
        history.record(ds.history, ds.history_capacity, ds.step, now["lr"], applied, grad_norm)
    _count_step(ds.step, not_skipped)
    ds.note_own_write()
    if skip is None:
        ds.applied.fill_(True)
    else:
        ds.applied.copy_(~skip)
    ds.next_lr.copy_(ds.lrs_at(param_groups, ds.step))
