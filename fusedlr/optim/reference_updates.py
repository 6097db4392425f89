"""Each optimizer's update of one tensor in plain PyTorch (torch.optim's
rules, tensor ops only): what the reference backend runs for an optimizer
spec. ``now`` holds the group's scheduled values at this step ("lr",
"weight_decay", "hyper1": SGD's momentum, Adam's beta1) as float64 tensors;
``factor`` what every raw grad is multiplied by (or None); ``skip`` GradScaler's
verdict (or None); ``store(state, value, slot)`` commits a state slot."""
from __future__ import annotations

import torch

from .buckets import Bucket, Entry


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def commit(target: torch.Tensor, value: torch.Tensor, skip: torch.Tensor | None) -> None:
    """target = value, unless GradScaler skipped the step."""
    target.copy_(value if skip is None else torch.where(skip, target, value.to(target.dtype)))


def _grad(e: Entry, math: torch.dtype, factor: torch.Tensor | None, maximize: bool) -> torch.Tensor:
    g = e.grad.to(math)
    if factor is not None:
        g = g * factor.to(math)
    return -g if maximize else g


def sgd(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store) -> None:
    math = math_dtype(bucket.dtype)
    g = _grad(e, math, factor, bucket.maximize)
    p = e.work.to(math)
    weight_decay, momentum = now["weight_decay"].to(math), now["hyper1"].to(math)
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
    commit(e.work, p + (-now["lr"]).to(math) * g, skip)


def _adam(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store, decoupled: bool) -> None:
    math = math_dtype(bucket.dtype)
    lr, beta1, beta2, weight_decay = now["lr"], now["hyper1"], group["betas"][1], now["weight_decay"]
    exp_avg, exp_avg_sq, max_exp_avg_sq = e.states
    step = e.step.clamp_min(0).to(torch.float64) + 1  # a negative count reads as 0, as in the kernels
    bias1 = 1 - torch.pow(beta1, step)
    bias2_sqrt = torch.sqrt(1 - torch.pow(beta2, step))
    g = _grad(e, math, factor, bucket.maximize)
    p = e.work.to(math)
    if decoupled:  # AdamW
        p = p * (1 - lr * weight_decay).to(math)
    else:  # Adam: an L2 term on the grad, where the decay is not 0
        g = torch.where(weight_decay != 0, _multiply_add(g, p, weight_decay.to(math)), g)
    m = torch.lerp(exp_avg.to(math), g, (1 - beta1).to(math))
    v = exp_avg_sq.to(math) * beta2 + (1 - beta2) * g * g
    store(exp_avg, m, 0)
    store(exp_avg_sq, v, 1)
    if bucket.amsgrad:
        v = torch.maximum(max_exp_avg_sq.to(math), v)
        store(max_exp_avg_sq, v, 2)
    denom = v.sqrt() / bias2_sqrt.to(math) + group["eps"]
    commit(e.work, p + (-(lr / bias1)).to(math) * m / denom, skip)


def _multiply_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a + b c rounded once (torch's add(b, alpha=c)), as the kernels' multiply_add:
    fp32 through float64, where the product is exact."""
    if a.dtype == torch.float64:
        return a + b * c
    return (a.double() + b.double() * c.double()).to(a.dtype)


def adamw(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store) -> None:
    _adam(e, group, now, bucket, factor, skip, store, decoupled=True)


def adam(e: Entry, group: dict, now: dict, bucket: Bucket, factor, skip, store) -> None:
    _adam(e, group, now, bucket, factor, skip, store, decoupled=False)
