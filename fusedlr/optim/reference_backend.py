"""One optimizer step in plain PyTorch: the oracle for the native kernels and
the fallback on devices without one. Written from torch.optim's update rules;
tensor ops only, so it never reads a device value on the host. A step that
GradScaler found inf/nan in is computed and then discarded with torch.where."""
from __future__ import annotations

import torch

from .buckets import Bucket, Entry
from .device_state import DeviceState
from .. import _native
from . import history, stochastic_rounding
from .group_tables import HYPER_SCHEDULES, group_lrs_at

_MAX_COUNT = 2 ** 63 - 1


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _commit(target: torch.Tensor, value: torch.Tensor, skip: torch.Tensor | None) -> None:
    target.copy_(value if skip is None else torch.where(skip, target, value.to(target.dtype)))


def _grad(e: Entry, math: torch.dtype, factor: torch.Tensor | None, maximize: bool) -> torch.Tensor:
    g = e.grad.to(math)
    if factor is not None:
        g = g * factor.to(math)
    return -g if maximize else g


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


def _sgd(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store) -> None:
    math = _math_dtype(bucket.dtype)
    g = _grad(e, math, factor, bucket.maximize)
    p = e.work.to(math)
    weight_decay, momentum = now["weight_decay"].to(math), now["momentum"].to(math)
    if group["weight_decay"] != 0 or group.get("weight_decay_schedule") is not None:
        g = g + weight_decay * p
    buf_state = e.states[0]
    if buf_state is not None:  # momentum != 0, or scheduled
        buf = buf_state.to(math) * momentum + (1 - group["dampening"]) * g
        buf = torch.where(e.step <= 0, g, buf)  # the first update starts the buffer at d_p
        moving = g + momentum * buf if bucket.nesterov else buf
        # as torch, a step whose (scheduled) momentum is 0 neither uses nor updates the buffer
        active = momentum != 0
        store(buf_state, torch.where(active, buf, buf_state.to(math)), 0)
        g = torch.where(active, moving, g)
    _commit(e.work, p + (-now["lr"]).to(math) * g, skip)


def _adamw(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store) -> None:
    math = _math_dtype(bucket.dtype)
    lr, beta1, beta2 = now["lr"], now["momentum"], group["betas"][1]
    exp_avg, exp_avg_sq, max_exp_avg_sq = e.states
    step = e.step.clamp_min(0).to(torch.float64) + 1  # a negative count reads as 0, as in the kernels
    bias1 = 1 - torch.pow(beta1, step)
    bias2_sqrt = torch.sqrt(1 - torch.pow(beta2, step))
    g = _grad(e, math, factor, bucket.maximize)
    p = e.work.to(math) * (1 - lr * now["weight_decay"]).to(math)
    m = torch.lerp(exp_avg.to(math), g, (1 - beta1).to(math))
    v = exp_avg_sq.to(math) * beta2 + (1 - beta2) * g * g
    store(exp_avg, m, 0)
    store(exp_avg_sq, v, 1)
    if bucket.amsgrad:
        v = torch.maximum(max_exp_avg_sq.to(math), v)
        store(max_exp_avg_sq, v, 2)
    denom = v.sqrt() / bias2_sqrt.to(math) + group["eps"]
    _commit(e.work, p + (-(lr / bias1)).to(math) * m / denom, skip)


def _state_store(bucket: Bucket, e: Entry, t: int, skip):
    """store(state, value, slot): commits a state slot's new value, rounded to
    nearest, or stochastically for bf16 states beside fp32 params (with the
    kernels' random bits: tensor t of the bucket at its update count)."""
    if not (bucket.stochastic_rounding and bucket.state_dtype == torch.bfloat16 and bucket.dtype != torch.bfloat16):
        return lambda state, value, slot: _commit(state, value, skip)
    seeds = stochastic_rounding.seeds(t, e.step)
    return lambda state, value, slot: _commit(state, stochastic_rounding.to_bf16(value, seeds[slot]), skip)


def _scheduled_values(ds: DeviceState, kind: str, param_groups: list[dict]) -> dict:
    """{"lr", "weight_decay", "momentum"}: float64 (G,) device tensors at ds.step."""
    columns = _native.format_constants().GROUP_FIELDS
    now = {"lr": ds.lrs_at(param_groups, ds.step)}
    for field, key in HYPER_SCHEDULES[kind].items():
        now[field] = group_lrs_at(param_groups, ds.step, ds.groups[:, columns[field]], key)
    return now


def _count_step(counter: torch.Tensor, applied) -> None:
    """counter += applied, held at the int64 maximum instead of wrapping."""
    counter.add_(applied * (counter < _MAX_COUNT))


def run(ds: DeviceState, buckets: list[Bucket], kind: str, param_groups: list[dict],
        grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None,
        clipping: torch.Tensor | None = None) -> None:
    now = _scheduled_values(ds, kind, param_groups)
    factor = _grad_factor(grad_scale, clipping)
    skip = None if found_inf is None else (found_inf.reshape(()) != 0)
    not_skipped = 1 if skip is None else (~skip).to(torch.int64)
    update = _sgd if kind == "sgd" else _adamw
    for bucket in buckets:
        for t, e in enumerate(bucket.entries):
            update(e, param_groups[e.group], {k: v[e.group] for k, v in now.items()}, bucket, factor, skip,
                   _state_store(bucket, e, t, skip))
            if e.copy_out is not None:  # master weights: the param becomes the master's rounding
                _commit(e.copy_out, e.work, skip)
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
