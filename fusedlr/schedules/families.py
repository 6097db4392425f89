"""Leaf schedule families. Each class documents its closed form; ``b`` is the
param group's base lr and ``t`` the step (from 0) local to the schedule. Each
evaluates itself with torch ops (``evaluate``), written from that closed form,
independently of the C++ evaluator.

Parameter names follow torch.optim.lr_scheduler where torch has the family,
then optax / Keras / Hugging Face.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .. import _native
from . import _checks as check
from .base import Chain, Schedule, Sequential, floor_div, labelled

_INF = float("inf")


def _code(table_name: str, key: str) -> int:
    return getattr(_native.format_constants(), table_name)[key]


class Constant(Schedule):
    """``b * factor`` for ``t < total_iters``, then ``b`` (torch ConstantLR).

    ``Constant(factor)`` with no ``total_iters`` scales the lr forever.
    """

    kind = "CONSTANT"

    def __init__(self, factor: float = 1.0, total_iters: int | None = None):
        self.factor = check.nonnegative("factor", factor)
        self.total_iters = None if total_iters is None else check.integer("total_iters", total_iters, 0)

    def fields(self):
        return [self.factor, _INF if self.total_iters is None else self.total_iters]

    def evaluate(self, t, b, plateau=None):
        limit = math.inf if self.total_iters is None else self.total_iters
        return torch.where(t < limit, b * self.factor, b)


class Anneal(Schedule):
    """Moves the factor from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps along ``shape``, then holds ``end_factor``.

    With ``p = min(t / total_iters, 1)``:
    linear ``s + (e-s) p``; cosine ``s + (e-s)(1-cos(pi p))/2``;
    exponential ``s (e/s)^p``; sqrt ``s + (e-s) sqrt(p)``;
    1-sqrt ``s + (e-s)(1 - sqrt(1-p))``.
    """

    kind = "ANNEAL"
    SHAPES = ("linear", "cosine", "exponential", "sqrt", "1-sqrt")

    def __init__(self, start_factor: float, end_factor: float, total_iters: int, shape: str = "linear"):
        self.shape = check.choice("shape", shape, self.SHAPES)
        self.start_factor = check.nonnegative("start_factor", start_factor)
        self.end_factor = check.nonnegative("end_factor", end_factor)
        self.total_iters = check.integer("total_iters", total_iters, 1)
        if shape == "exponential" and (self.start_factor == 0 or self.end_factor == 0):
            raise ValueError("an exponential anneal needs start_factor > 0 and end_factor > 0")

    def check_stored_fields(self):
        check.choice("shape", self.shape, self.SHAPES)

    def fields(self):
        return [self.start_factor, self.end_factor, self.total_iters, _code("ANNEAL_SHAPES", self.shape)]

    def evaluate(self, t, b, plateau=None):
        p = torch.clamp(t / self.total_iters, max=1.0)
        a, e = self.start_factor, self.end_factor
        if self.shape == "exponential":
            f = a * torch.pow(torch.as_tensor(e / a, dtype=t.dtype, device=t.device), p)
        else:
            weight = {
                "linear": lambda: p,
                "cosine": lambda: (1 - torch.cos(math.pi * p)) / 2,
                "sqrt": lambda: torch.sqrt(p),
                "1-sqrt": lambda: 1 - torch.sqrt(1 - p),
            }[self.shape]()
            f = a * (1 - weight) + e * weight  # exact at both ends
        return b * f


class Linear(Anneal):
    """torch LinearLR: ``b * (s + (e - s) * min(t, total_iters) / total_iters)``."""

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5):
        check.in_range("start_factor", start_factor, 0, 1)
        check.in_range("end_factor", end_factor, 0, 1)
        super().__init__(start_factor, end_factor, total_iters, "linear")


class Step(Schedule):
    """torch StepLR: ``b * gamma ** (t // step_size)``."""

    kind = "STEP"

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = check.integer("step_size", step_size, 1)
        self.gamma = check.positive("gamma", gamma)

    def fields(self):
        return [self.step_size, self.gamma]

    def evaluate(self, t, b, plateau=None):
        return b * torch.pow(torch.as_tensor(self.gamma, dtype=t.dtype, device=t.device), floor_div(t, self.step_size))


class Piecewise(Schedule):
    """``b * factors[k]`` where ``k`` counts the ``boundaries`` that are ``<= t``
    (optax piecewise_constant_schedule; torch MultiStepLR)."""

    kind = "PIECEWISE"

    def __init__(self, boundaries: Sequence[int], factors: Sequence[float]):
        self.boundaries = tuple(check.increasing("boundaries", boundaries))
        factors = list(factors)
        if len(factors) != len(self.boundaries) + 1:
            raise ValueError(
                f"factors must have len(boundaries) + 1 = {len(self.boundaries) + 1} entries, got {len(factors)}"
            )
        self.factors = tuple(check.nonnegative(f"factors[{i}]", f) for i, f in enumerate(factors))

    @classmethod
    def from_scales(cls, boundaries_and_scales: Mapping[int, float]) -> "Piecewise":
        """optax style: each boundary multiplies the running factor by its scale."""
        if not boundaries_and_scales:
            raise ValueError("boundaries_and_scales must not be empty")
        items = sorted(boundaries_and_scales.items())
        factors = [1.0]
        for _, scale in items:
            factors.append(factors[-1] * check.nonnegative("scale", scale))
        return cls([b for b, _ in items], factors)

    def check_stored_fields(self):
        check.increasing("boundaries", self.boundaries)
        if len(self.factors) != len(self.boundaries) + 1:
            raise ValueError(f"factors must have len(boundaries) + 1 = {len(self.boundaries) + 1} entries, "
                             f"got {len(self.factors)}")
        for i, f in enumerate(self.factors):
            check.nonnegative(f"factors[{i}]", f)

    def fields(self):
        return [len(self.boundaries), *self.boundaries, *self.factors]

    def evaluate(self, t, b, plateau=None):
        factor = torch.full_like(t, self.factors[0])
        for boundary, f in zip(self.boundaries, self.factors[1:]):
            factor = torch.where(t >= boundary, torch.full_like(t, f), factor)
        return b * factor


class MultiStep(Piecewise):
    """torch MultiStepLR: ``b * gamma ** (number of milestones <= t)``.

    A milestone listed k times multiplies by ``gamma ** k``, as in torch.
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1):
        self.gamma = check.positive("gamma", gamma)
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError("milestones must be a sequence of ints") from None
        if not milestones:
            raise ValueError("milestones must not be empty")
        milestones = sorted(check.integer(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones))
        bounds = sorted(set(milestones))
        counts = [milestones.count(m) for m in bounds]
        factors = [1.0]
        for c in counts:
            factors.append(factors[-1] * self.gamma ** c)
        super().__init__(bounds, factors)
        self.milestones = tuple(milestones)


class Exponential(Schedule):
    """``b * gamma ** p`` with ``p = max(t - transition_begin, 0) / transition_steps``,
    floored when ``staircase``, clipped at ``end_factor`` when given
    (torch ExponentialLR; optax exponential_decay with factors relative to b)."""

    kind = "EXPONENTIAL"

    def __init__(self, gamma: float, transition_steps: int = 1, transition_begin: int = 0,
                 staircase: bool = False, end_factor: float | None = None):
        self.gamma = check.positive("gamma", gamma)
        self.transition_steps = check.integer("transition_steps", transition_steps, 1)
        self.transition_begin = check.integer("transition_begin", transition_begin, 0)
        self.staircase = bool(staircase)
        self.end_factor = None if end_factor is None else check.positive("end_factor", end_factor)
        if self.end_factor is not None:
            if self.gamma < 1 and self.end_factor > 1:
                raise ValueError("end_factor must be <= 1 for a decay (gamma < 1): it is a floor")
            if self.gamma > 1 and self.end_factor < 1:
                raise ValueError("end_factor must be >= 1 for a growth (gamma > 1): it is a ceiling")

    def fields(self):
        bounded = self.end_factor is not None
        return [self.gamma, self.transition_steps, self.transition_begin, float(self.staircase),
                float(bounded), self.end_factor if bounded else 0.0]

    def evaluate(self, t, b, plateau=None):
        elapsed = torch.clamp(t - self.transition_begin, min=0.0)
        p = floor_div(elapsed, self.transition_steps) if self.staircase else elapsed / self.transition_steps
        f = torch.pow(torch.as_tensor(self.gamma, dtype=t.dtype, device=t.device), p)
        if self.end_factor is not None:
            f = torch.clamp(f, min=self.end_factor) if self.gamma < 1 else torch.clamp(f, max=self.end_factor)
        return b * f


class Polynomial(Schedule):
    """``end_lr + (b - end_lr) * (1 - min(t, total_iters) / total_iters) ** power``
    (torch PolynomialLR with end_lr=0; HF polynomial; Keras PolynomialDecay).

    ``cycle=True`` (Keras) stretches the horizon to the next multiple of
    ``total_iters`` instead of holding ``end_lr``.
    """

    kind = "POLYNOMIAL"

    def __init__(self, total_iters: int = 5, power: float = 1.0, end_lr: float = 0.0, cycle: bool = False):
        self.total_iters = check.integer("total_iters", total_iters, 1)
        self.power = check.nonnegative("power", power)
        self.end_lr = check.nonnegative("end_lr", end_lr)
        self.cycle = bool(cycle)

    def check_base_lrs(self, base_lrs, groups=None):
        for i, b in labelled(base_lrs, groups):
            if self.end_lr > b:
                raise ValueError(f"end_lr ({self.end_lr}) must be <= the base lr of group {i} ({b})")

    def fields(self):
        return [self.total_iters, self.power, self.end_lr, float(self.cycle)]

    def evaluate(self, t, b, plateau=None):
        if self.cycle:
            horizon = self.total_iters * torch.clamp(torch.ceil(t / self.total_iters), min=1.0)
            remaining = 1 - t / horizon
        else:
            remaining = 1 - torch.clamp(t, max=self.total_iters) / self.total_iters
        return (b - self.end_lr) * remaining ** self.power + self.end_lr


class Cosine(Schedule):
    """Cosine annealing over ``T_max`` steps.

    ``lo + (b - lo) * c ** exponent`` with ``lo = eta_min + alpha * b``,
    ``c = (1 + cos(2 pi num_cycles p)) / 2``, ``p = t / T_max``; ``p`` is held
    at 1 after ``T_max`` unless ``periodic`` (torch CosineAnnealingLR keeps
    oscillating, so ``from_torch`` sets it). torch: eta_min; optax
    cosine_decay_schedule: alpha, exponent; HF: num_cycles, min_lr_rate=alpha.
    """

    kind = "COSINE"

    def __init__(self, T_max: float, eta_min: float = 0.0, *, alpha: float = 0.0, exponent: float = 1.0,
                 num_cycles: float = 0.5, periodic: bool = False):
        self.T_max = check.positive("T_max", T_max)
        self.eta_min = check.nonnegative("eta_min", eta_min)
        self.alpha = check.in_range("alpha", alpha, 0, 1)
        self.exponent = check.positive("exponent", exponent)
        self.num_cycles = check.positive("num_cycles", num_cycles)
        self.periodic = bool(periodic)

    def check_base_lrs(self, base_lrs, groups=None):
        for i, b in labelled(base_lrs, groups):
            floor = self.eta_min + self.alpha * b
            if floor > b:
                raise ValueError(f"eta_min + alpha * lr ({floor}) must be <= the base lr of group {i} ({b}); "
                                 "eta_min is absolute, alpha a fraction of lr")

    def fields(self):
        return [self.T_max, self.eta_min, self.alpha, self.exponent, self.num_cycles, float(self.periodic)]

    def evaluate(self, t, b, plateau=None):
        if self.periodic:  # one period is T_max / num_cycles steps
            p = torch.fmod(t, self.T_max / self.num_cycles) / self.T_max
        else:
            p = torch.clamp(t / self.T_max, max=1.0)
        c = (1 + torch.cos(2 * math.pi * self.num_cycles * p)) / 2
        low = self.eta_min + self.alpha * b
        return low + (b - low) * c ** self.exponent


class CosineRestarts(Schedule):
    """Cosine annealing with warm restarts (torch CosineAnnealingWarmRestarts,
    Keras CosineDecayRestarts, timm cycle_mul/cycle_limit).

    Cycle ``i`` starts at ``T_0 (T_mult^i - 1)/(T_mult - 1)`` and lasts
    ``T_0 T_mult^i`` steps (``T_mult`` may be non-integer). Within it,
    ``lo + (b - lo) * cycle_decay**i * (1 + cos(pi t_i / T_i)) / 2`` with
    ``lo = eta_min + alpha * b``. After ``cycle_limit`` cycles (0: never) the
    lr holds at ``lo``.
    """

    kind = "COSINE_RESTARTS"

    def __init__(self, T_0: float, T_mult: float = 1, eta_min: float = 0.0, *, alpha: float = 0.0,
                 cycle_decay: float = 1.0, cycle_limit: int = 0):
        self.T_0 = check.positive("T_0", T_0)
        self.T_mult = check.in_range("T_mult", T_mult, 1)
        self.eta_min = check.nonnegative("eta_min", eta_min)
        self.alpha = check.in_range("alpha", alpha, 0, 1)
        self.cycle_decay = check.in_range("cycle_decay", cycle_decay, 0, 1, low_open=True)
        self.cycle_limit = check.integer("cycle_limit", cycle_limit, 0)

    check_base_lrs = Cosine.check_base_lrs

    def fields(self):
        return [self.T_0, self.T_mult, self.eta_min, self.alpha, self.cycle_decay, self.cycle_limit]

    def evaluate(self, t, b, plateau=None):
        if self.T_mult == 1:
            cycle = floor_div(t, self.T_0)
            start = t - torch.fmod(t, self.T_0)
        else:
            # Cycle i starts at T_0 (m^i - 1) / (m - 1): invert, then step one
            # cycle back or forward where log() rounded across a boundary.
            m = self.T_mult

            def start_of(i):
                return self.T_0 * (m ** i - 1) / (m - 1)

            cycle = torch.floor(torch.log(1 + t * (m - 1) / self.T_0) / math.log(m))
            cycle = torch.where(start_of(cycle) > t, cycle - 1, cycle)
            cycle = torch.where(start_of(cycle + 1) <= t, cycle + 1, cycle)
            start = start_of(cycle)
        period = self.T_0 * self.T_mult ** cycle
        t_cur = t - start
        low = self.eta_min + self.alpha * b
        value = low + (b - low) * self.cycle_decay ** cycle * (1 + torch.cos(math.pi * t_cur / period)) / 2
        if self.cycle_limit:
            value = torch.where(cycle >= self.cycle_limit, low + 0 * value, value)
        return value


class InverseSqrt(Schedule):
    """``b * sqrt(timescale / (t + timescale))`` (HF inverse_sqrt after warmup)."""

    kind = "INVERSE_SQRT"

    def __init__(self, timescale: float = 10_000):
        self.timescale = check.positive("timescale", timescale)

    def fields(self):
        return [self.timescale]

    def evaluate(self, t, b, plateau=None):
        return b / torch.sqrt((t + self.timescale) / self.timescale)


class InverseTime(Schedule):
    """``b / (1 + decay_rate * p)``, ``p = t / decay_steps`` floored when
    ``staircase`` (Keras InverseTimeDecay)."""

    kind = "INVERSE_TIME"

    def __init__(self, decay_rate: float, decay_steps: int = 1, staircase: bool = False):
        self.decay_rate = check.nonnegative("decay_rate", decay_rate)
        self.decay_steps = check.integer("decay_steps", decay_steps, 1)
        self.staircase = bool(staircase)

    def fields(self):
        return [self.decay_rate, self.decay_steps, float(self.staircase)]

    def evaluate(self, t, b, plateau=None):
        p = floor_div(t, self.decay_steps) if self.staircase else t / self.decay_steps
        return b / (1 + self.decay_rate * p)


class OneCycle(Schedule):
    """torch OneCycleLR (lr part): from ``max_lr / div_factor`` up to ``max_lr``
    over ``pct_start`` of the run, then down to
    ``max_lr / (div_factor * final_div_factor)`` (through ``max_lr / div_factor``
    first when ``three_phase``). Absolute values: the group's base lr is not
    used. Holds the final lr after ``total_steps``.
    For different ``max_lr`` per group use ``PerGroup``.
    """

    kind = "ONE_CYCLE"

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False):
        if isinstance(max_lr, (list, tuple)):
            raise TypeError("max_lr must be a number; for one value per param group use PerGroup([OneCycle(...), ...])")
        self.max_lr = check.positive("max_lr", max_lr)
        self.total_steps = check.integer("total_steps", total_steps, 1)
        self.pct_start = check.in_range("pct_start", pct_start, 0, 1)
        self.anneal_strategy = check.choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.div_factor = check.positive("div_factor", div_factor)
        self.final_div_factor = check.positive("final_div_factor", final_div_factor)
        self.three_phase = bool(three_phase)
        # Phase ends exactly as torch computes them.
        T = self.total_steps
        if self.three_phase:
            self.phase_ends = (float(pct_start * T) - 1, float(2 * pct_start * T) - 2, float(T - 1))
        else:
            self.phase_ends = (float(pct_start * T) - 1, float(T - 1))
        previous = 0.0
        for end in self.phase_ends:
            if not end > previous:
                raise ValueError(
                    f"pct_start={pct_start} with total_steps={total_steps} leaves a phase of the cycle "
                    "with no steps; raise total_steps or move pct_start away from 0 and 1"
                )
            previous = end
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        self.phase_lrs = (initial, self.max_lr, initial, final) if self.three_phase else (initial, self.max_lr, final)

    def check_stored_fields(self):
        phases = 3 if self.three_phase else 2
        if len(self.phase_ends) != phases or len(self.phase_lrs) != phases + 1:
            raise ValueError(f"a {phases}-phase cycle needs {phases} phase_ends and {phases + 1} phase_lrs, "
                             f"got {len(self.phase_ends)} and {len(self.phase_lrs)}")
        check.increasing("phase_ends", self.phase_ends, minimum=-1)
        for i, lr in enumerate(self.phase_lrs):
            check.nonnegative(f"phase_lrs[{i}]", lr)

    def fields(self):
        ends = list(self.phase_ends) + [0.0] * (3 - len(self.phase_ends))
        lrs = list(self.phase_lrs) + [0.0] * (4 - len(self.phase_lrs))
        return [len(self.phase_ends), _code("ONE_CYCLE_ANNEAL", self.anneal_strategy), *ends, *lrs]

    def evaluate(self, t, b, plateau=None):
        value = torch.zeros_like(t)
        start = 0.0
        chosen = torch.zeros_like(t, dtype=torch.bool)
        last = len(self.phase_ends) - 1
        for k, end in enumerate(self.phase_ends):
            here = ~chosen & ((t <= end) | (k == last))
            pct = torch.clamp((t - start) / (end - start), max=1.0)
            lo, hi = self.phase_lrs[k], self.phase_lrs[k + 1]
            if self.anneal_strategy == "cos":
                phase = hi + (lo - hi) / 2 * (torch.cos(math.pi * pct) + 1)
            else:
                phase = lo + (hi - lo) * pct
            value = torch.where(here, phase, value)
            chosen = chosen | here
            start = end
        return value + 0 * b


class Cyclic(Schedule):
    """torch CyclicLR (lr part): between the group's base lr ``b`` and ``max_lr``,
    ``step_size_up`` steps up and ``step_size_down`` down; amplitude scaled by
    1 (triangular), ``1/2**(cycle-1)`` (triangular2) or ``gamma**t``
    (exp_range). For different ``max_lr`` per group use ``PerGroup``.
    ``start``: cycle from this value instead of ``b`` (then ``max_lr`` may lie
    below it; see ``cyclic_momentum``).
    """

    kind = "CYCLIC"
    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, max_lr: float, step_size_up: float = 2000, step_size_down: float | None = None,
                 mode: str = "triangular", gamma: float = 1.0, start: float | None = None):
        if isinstance(max_lr, (list, tuple)):
            raise TypeError("max_lr must be a number; for one value per param group use PerGroup([Cyclic(...), ...])")
        self.max_lr = check.nonnegative("max_lr", max_lr) if start is not None else check.positive("max_lr", max_lr)
        self.start = None if start is None else check.nonnegative("start", start)
        self.step_size_up = check.positive("step_size_up", step_size_up)
        self.step_size_down = self.step_size_up if step_size_down is None else check.positive("step_size_down", step_size_down)
        self.mode = check.choice("mode", mode, self.MODES)
        self.gamma = check.in_range("gamma", gamma, 0, 1, low_open=True)
        # As torch stores them, so the arithmetic matches exactly.
        self.total_size = self.step_size_up + self.step_size_down
        self.step_ratio = self.step_size_up / self.total_size
        if not (0 < self.step_ratio and self.total_size < _INF):  # e.g. step_size_up=1e-320 underflows
            raise ValueError(f"step_size_up ({self.step_size_up}) and step_size_down ({self.step_size_down}) "
                             "must give a cycle of finite length whose rising part is a nonzero fraction of it")

    def check_stored_fields(self):
        check.positive("total_size", self.total_size)
        check.in_range("step_ratio", self.step_ratio, 0, 1, low_open=True)

    def check_base_lrs(self, base_lrs, groups=None):
        for i, b in labelled(base_lrs, groups):
            if self.start is None and b > self.max_lr:
                raise ValueError(f"max_lr ({self.max_lr}) must be >= the base lr of group {i} ({b})")

    def fields(self):
        return [self.max_lr, self.total_size, self.step_ratio, _code("CYCLIC_MODES", self.mode), self.gamma,
                float(self.start is not None), self.start or 0.0]

    def evaluate(self, t, b, plateau=None):
        if self.start is not None:
            b = torch.full_like(b, self.start)
        cycle = floor_div(t, self.total_size) + 1
        x = torch.fmod(t, self.total_size) / self.total_size
        rising = x <= self.step_ratio
        scale_factor = torch.where(rising, x / self.step_ratio, (x - 1) / (self.step_ratio - 1))
        if self.mode == "triangular":
            amplitude = torch.ones_like(t)
        elif self.mode == "triangular2":
            amplitude = 1 / 2.0 ** (cycle - 1)
        else:
            amplitude = torch.pow(torch.as_tensor(self.gamma, dtype=t.dtype, device=t.device), t)
        return b + (self.max_lr - b) * scale_factor * amplitude


def one_cycle_momentum(total_steps: int, base_momentum: float = 0.85, max_momentum: float = 0.95,
                       pct_start: float = 0.3, anneal_strategy: str = "cos", three_phase: bool = False) -> OneCycle:
    """torch OneCycleLR's momentum (SGD momentum or Adam beta1) cycle: from
    ``max_momentum`` down to ``base_momentum`` while the lr rises, back up while
    it falls (and held at ``max_momentum`` in a third phase). Absolute values."""
    cycle = OneCycle(check.positive("max_momentum", max_momentum), total_steps, pct_start, anneal_strategy,
                     three_phase=three_phase)
    base = check.nonnegative("base_momentum", base_momentum)
    return cycle._evolve(phase_lrs=(max_momentum, base, max_momentum) + ((max_momentum,) if three_phase else ()))


def cyclic_momentum(base_momentum: float = 0.8, max_momentum: float = 0.9, step_size_up: float = 2000,
                    step_size_down: float | None = None, mode: str = "triangular", gamma: float = 1.0) -> Cyclic:
    """torch CyclicLR's momentum cycle: from ``max_momentum`` down to
    ``base_momentum`` while the lr rises and back, with the lr's amplitude
    scaling. Absolute values."""
    return Cyclic(check.nonnegative("base_momentum", base_momentum), step_size_up, step_size_down, mode, gamma,
                  start=check.nonnegative("max_momentum", max_momentum))


class RangeTest(Schedule):
    """LR range test ramp from the base lr to ``end_lr`` over ``num_iter`` steps,
    ``r = min(t / num_iter, 1)``: exponential ``b (end_lr / b) ** r`` or
    linear ``b + r (end_lr - b)`` (fastai / Lightning lr_find)."""

    kind = "RANGE_TEST"

    def __init__(self, end_lr: float = 10.0, num_iter: int = 100, mode: str = "exponential"):
        self.end_lr = check.positive("end_lr", end_lr)
        self.num_iter = check.integer("num_iter", num_iter, 1)
        self.mode = check.choice("mode", mode, ("exponential", "linear"))

    def check_base_lrs(self, base_lrs, groups=None):
        if self.mode == "exponential":
            for i, b in labelled(base_lrs, groups):
                if b <= 0:
                    raise ValueError(f"an exponential range test needs a base lr > 0 (group {i} has {b})")

    def fields(self):
        return [self.end_lr, self.num_iter, _code("RANGE_TEST_MODES", self.mode)]

    def evaluate(self, t, b, plateau=None):
        r = torch.clamp(t / self.num_iter, max=1.0)
        if self.mode == "linear":
            return b + r * (self.end_lr - b)
        safe = torch.where(b > 0, b, torch.ones_like(b))
        return torch.where(b > 0, safe * (self.end_lr / safe) ** r, torch.zeros_like(b * r))


def noam(d_model: int, warmup_steps: int) -> Schedule:
    """Noam (Transformer) schedule as a factor: ``d_model**-0.5 *
    min(s**-0.5, s * warmup_steps**-1.5)`` with ``s = t + 1``."""
    d_model = check.integer("d_model", d_model, 1)
    warmup_steps = check.integer("warmup_steps", warmup_steps, 1)
    scale = Constant(d_model ** -0.5 * warmup_steps ** -0.5)
    decay = InverseSqrt(timescale=warmup_steps)
    if warmup_steps == 1:
        return Chain([scale, decay])
    ramp = Anneal(1.0 / warmup_steps, 1.0, warmup_steps - 1, "linear")
    return Chain([scale, Sequential([ramp, decay], [warmup_steps - 1])])


def cosine_decay_with_min(T_max: float, min_lr: float | None = None, min_lr_rate: float | None = None, **kwargs) -> Cosine:
    """Cosine decay to an absolute ``min_lr`` or to ``min_lr_rate * b``."""
    if (min_lr is None) == (min_lr_rate is None):
        raise ValueError("give exactly one of min_lr and min_lr_rate")
    if min_lr is not None:
        return Cosine(T_max, eta_min=min_lr, **kwargs)
    return Cosine(T_max, alpha=min_lr_rate, **kwargs)

