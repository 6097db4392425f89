"""Pure-PyTorch evaluation of a schedule tree: the oracle for the native
evaluator and the fallback where no native code runs.

Written from the formulas in each family's docstring, not from the C++. Works
on float64 step tensors on any device, with tensor ops only (no ``.item()``):
``t`` has shape (S, 1) and ``base`` shape (1, G) or (S, G).
"""
from __future__ import annotations

import math

import torch

from dataclasses import dataclass

from . import compose, families
from .base import Schedule
from .plateau import Plateau


@dataclass
class PlateauView:
    """An optimizer's plateau reductions as seen by the columns of an evaluation:
    ``reductions``/``min_lrs`` (float64 (G,) tensors) and the param group of each column."""
    reductions: torch.Tensor
    min_lrs: torch.Tensor
    groups: list

    def column(self, c: int) -> "PlateauView":
        return PlateauView(self.reductions, self.min_lrs, self.groups[c:c + 1])


def evaluate(schedule: Schedule, t: torch.Tensor, base: torch.Tensor, plateau: PlateauView | None = None
             ) -> torch.Tensor:
    """lr for every step in ``t`` and group in ``base`` (broadcast to (S, G)).
    ``plateau``: the reductions Plateau nodes apply (None: none yet)."""
    if isinstance(schedule, (compose.Sequential, compose.Chain, compose.PerGroup, Plateau)):
        return _WITH_PLATEAU[type(schedule)](schedule, t, base, plateau)
    try:
        rule = _RULES[type(schedule)]
    except KeyError:
        for cls, fn in _RULES.items():  # subclasses (Linear, MultiStep) share a rule
            if isinstance(schedule, cls):
                rule = fn
                break
        else:
            raise TypeError(f"no reference rule for {type(schedule).__name__}") from None
    return rule(schedule, t, base)


def _floor_div(t, d):
    """floor(t / d), exact at huge t (fmod is exact; t / d may round up)."""
    return torch.round((t - torch.fmod(t, d)) / d)


def _constant(s: families.Constant, t, b):
    limit = math.inf if s.total_iters is None else s.total_iters
    return torch.where(t < limit, b * s.factor, b)


def _anneal(s: families.Anneal, t, b):
    p = torch.clamp(t / s.total_iters, max=1.0)
    a, e = s.start_factor, s.end_factor
    if s.shape == "exponential":
        f = a * torch.pow(torch.as_tensor(e / a, dtype=t.dtype, device=t.device), p)
    else:
        weight = {
            "linear": lambda: p,
            "cosine": lambda: (1 - torch.cos(math.pi * p)) / 2,
            "sqrt": lambda: torch.sqrt(p),
            "1-sqrt": lambda: 1 - torch.sqrt(1 - p),
        }[s.shape]()
        f = a * (1 - weight) + e * weight  # exact at both ends
    return b * f


def _step(s: families.Step, t, b):
    return b * torch.pow(torch.as_tensor(s.gamma, dtype=t.dtype, device=t.device), _floor_div(t, s.step_size))


def _piecewise(s: families.Piecewise, t, b):
    factor = torch.full_like(t, s.factors[0])
    for boundary, f in zip(s.boundaries, s.factors[1:]):
        factor = torch.where(t >= boundary, torch.full_like(t, f), factor)
    return b * factor


def _exponential(s: families.Exponential, t, b):
    elapsed = torch.clamp(t - s.transition_begin, min=0.0)
    p = _floor_div(elapsed, s.transition_steps) if s.staircase else elapsed / s.transition_steps
    f = torch.pow(torch.as_tensor(s.gamma, dtype=t.dtype, device=t.device), p)
    if s.end_factor is not None:
        f = torch.clamp(f, min=s.end_factor) if s.gamma < 1 else torch.clamp(f, max=s.end_factor)
    return b * f


def _polynomial(s: families.Polynomial, t, b):
    if s.cycle:
        horizon = s.total_iters * torch.clamp(torch.ceil(t / s.total_iters), min=1.0)
        remaining = 1 - t / horizon
    else:
        remaining = 1 - torch.clamp(t, max=s.total_iters) / s.total_iters
    return (b - s.end_lr) * remaining ** s.power + s.end_lr


def _cosine(s: families.Cosine, t, b):
    if s.periodic:  # one period is T_max / num_cycles steps
        p = torch.fmod(t, s.T_max / s.num_cycles) / s.T_max
    else:
        p = torch.clamp(t / s.T_max, max=1.0)
    c = (1 + torch.cos(2 * math.pi * s.num_cycles * p)) / 2
    low = s.eta_min + s.alpha * b
    return low + (b - low) * c ** s.exponent


def _cosine_restarts(s: families.CosineRestarts, t, b):
    if s.T_mult == 1:
        cycle = _floor_div(t, s.T_0)
        start = t - torch.fmod(t, s.T_0)
    else:
        # Cycle i starts at T_0 (m^i - 1) / (m - 1): invert, then step one
        # cycle back or forward where log() rounded across a boundary.
        m = s.T_mult

        def start_of(i):
            return s.T_0 * (m ** i - 1) / (m - 1)

        cycle = torch.floor(torch.log(1 + t * (m - 1) / s.T_0) / math.log(m))
        cycle = torch.where(start_of(cycle) > t, cycle - 1, cycle)
        cycle = torch.where(start_of(cycle + 1) <= t, cycle + 1, cycle)
        start = start_of(cycle)
    period = s.T_0 * s.T_mult ** cycle
    t_cur = t - start
    low = s.eta_min + s.alpha * b
    value = low + (b - low) * s.cycle_decay ** cycle * (1 + torch.cos(math.pi * t_cur / period)) / 2
    if s.cycle_limit:
        value = torch.where(cycle >= s.cycle_limit, low + 0 * value, value)
    return value


def _inverse_sqrt(s: families.InverseSqrt, t, b):
    return b / torch.sqrt((t + s.timescale) / s.timescale)


def _inverse_time(s: families.InverseTime, t, b):
    p = _floor_div(t, s.decay_steps) if s.staircase else t / s.decay_steps
    return b / (1 + s.decay_rate * p)


def _one_cycle(s: families.OneCycle, t, b):
    value = torch.zeros_like(t)
    start = 0.0
    chosen = torch.zeros_like(t, dtype=torch.bool)
    last = len(s.phase_ends) - 1
    for k, end in enumerate(s.phase_ends):
        here = ~chosen & ((t <= end) | (k == last))
        pct = torch.clamp((t - start) / (end - start), max=1.0)
        lo, hi = s.phase_lrs[k], s.phase_lrs[k + 1]
        if s.anneal_strategy == "cos":
            phase = hi + (lo - hi) / 2 * (torch.cos(math.pi * pct) + 1)
        else:
            phase = lo + (hi - lo) * pct
        value = torch.where(here, phase, value)
        chosen = chosen | here
        start = end
    return value + 0 * b


def _cyclic(s: families.Cyclic, t, b):
    if s.start is not None:
        b = torch.full_like(b, s.start)
    cycle = _floor_div(t, s.total_size) + 1
    x = torch.fmod(t, s.total_size) / s.total_size
    rising = x <= s.step_ratio
    scale_factor = torch.where(rising, x / s.step_ratio, (x - 1) / (s.step_ratio - 1))
    if s.mode == "triangular":
        amplitude = torch.ones_like(t)
    elif s.mode == "triangular2":
        amplitude = 1 / 2.0 ** (cycle - 1)
    else:
        amplitude = torch.pow(torch.as_tensor(s.gamma, dtype=t.dtype, device=t.device), t)
    return b + (s.max_lr - b) * scale_factor * amplitude


def _range_test(s: families.RangeTest, t, b):
    r = torch.clamp(t / s.num_iter, max=1.0)
    if s.mode == "linear":
        return b + r * (s.end_lr - b)
    safe = torch.where(b > 0, b, torch.ones_like(b))
    return torch.where(b > 0, safe * (s.end_lr / safe) ** r, torch.zeros_like(b * r))


def _sequential(s: compose.Sequential, t, b, plateau):
    value = evaluate(s.schedules[0], t, b, plateau)
    for milestone, child in zip(s.milestones, s.schedules[1:]):
        local = torch.clamp(t - milestone, min=0.0)
        value = torch.where(t >= milestone, evaluate(child, local, b, plateau), value)
    return value


def _chain(s: compose.Chain, t, b, plateau):
    for child in s.schedules:
        b = evaluate(child, t, b, plateau)
    return b


def _per_group(s: compose.PerGroup, t, b, plateau):
    b = b.expand(t.shape[0], len(s.schedules))
    columns = [evaluate(child, t, b[:, g:g + 1], plateau.column(g) if plateau else None)
               for g, child in enumerate(s.schedules)]
    return torch.cat([c.expand(t.shape[0], 1) for c in columns], dim=1)


def _plateau(s: Plateau, t, b, plateau):
    """b until the group's first reduction, then max(b factor**k, min_lr)."""
    if plateau is None:
        return b.expand(t.shape[0], b.shape[1])
    k = plateau.reductions[plateau.groups].reshape(1, -1)
    floor = plateau.min_lrs[plateau.groups].reshape(1, -1)
    return torch.where(k == 0, b, torch.maximum(b * s.factor ** k, floor)).expand(t.shape[0], -1)


_RULES = {
    families.Constant: _constant,
    families.Anneal: _anneal,
    families.Step: _step,
    families.Piecewise: _piecewise,
    families.Exponential: _exponential,
    families.Polynomial: _polynomial,
    families.Cosine: _cosine,
    families.CosineRestarts: _cosine_restarts,
    families.InverseSqrt: _inverse_sqrt,
    families.InverseTime: _inverse_time,
    families.OneCycle: _one_cycle,
    families.Cyclic: _cyclic,
    families.RangeTest: _range_test,
}

_WITH_PLATEAU = {
    compose.Sequential: _sequential,
    compose.Chain: _chain,
    compose.PerGroup: _per_group,
    Plateau: _plateau,
}
