"""Composite schedules: joining at milestones, chaining, per-group choice,
and the common compositions built from them (warmup prefixes, WSD)."""
from __future__ import annotations

from typing import Sequence

from . import _checks as check
from .base import MAX_TREE_DEPTH, Schedule, labelled
from .families import Anneal, Constant, Cosine


def _schedules(name: str, schedules) -> tuple[Schedule, ...]:
    schedules = tuple(schedules)
    if not schedules:
        raise ValueError(f"{name} must hold at least one schedule")
    for i, s in enumerate(schedules):
        if not isinstance(s, Schedule):
            raise TypeError(f"{name}[{i}] must be a fusedlr schedule, got {type(s).__name__}")
    depth = 1 + max(s.tree_depth() for s in schedules)
    if depth > MAX_TREE_DEPTH:
        raise ValueError(f"schedules nest {depth} composites deep; at most {MAX_TREE_DEPTH} are supported "
                         "(join the phases in one Sequential instead of nesting them)")
    return schedules


class _Composite(Schedule):
    schedules: tuple[Schedule, ...]

    def children(self):
        return tuple(self.schedules)

    def _extra_fields(self) -> list[float]:
        return []

    def _emit(self, program, kinds, parent=-1, index=0):
        offset = len(program)
        n = len(self.schedules)
        program.extend([float(kinds[self.kind]), float(parent), float(index), float(n)] + [0.0] * n
                       + self._extra_fields())
        for i, child in enumerate(self.schedules):
            program[offset + 4 + i] = float(child._emit(program, kinds, offset, i))
        return offset


class Sequential(_Composite):
    """torch SequentialLR: ``schedules[k]`` runs from ``milestones[k-1]`` with
    its own step counted from 0 there, for ``k = #{milestones <= t}``."""

    kind = "SEQUENTIAL"

    def __init__(self, schedules: Sequence[Schedule], milestones: Sequence[int]):
        self.schedules = _schedules("schedules", schedules)
        milestones = list(milestones)
        if len(milestones) != len(self.schedules) - 1:
            raise ValueError(
                f"milestones must have len(schedules) - 1 = {len(self.schedules) - 1} entries, got {len(milestones)}"
            )
        for i, m in enumerate(milestones):
            check.integer(f"milestones[{i}]", m, 0)
        self.milestones = tuple(int(m) for m in check.increasing("milestones", milestones)) if milestones else ()

    def _extra_fields(self):
        return [float(m) for m in self.milestones]


class Chain(_Composite):
    """torch ChainedScheduler: each schedule takes the previous one's lr as its
    base lr. For multiplicative schedules this is the product of their factors."""

    kind = "CHAIN"

    def __init__(self, schedules: Sequence[Schedule]):
        self.schedules = _schedules("schedules", schedules)


class PerGroup(_Composite):
    """One schedule per param group: ``schedules[g]`` drives group ``g``."""

    kind = "PER_GROUP"

    def __init__(self, schedules: Sequence[Schedule]):
        self.schedules = _schedules("schedules", schedules)
        for i, s in enumerate(self.schedules):
            if s.num_groups is not None:
                raise ValueError(f"schedules[{i}] is itself per-group; PerGroup entries must apply to one group")

    @property
    def num_groups(self):
        return len(self.schedules)

    def check_base_lrs(self, base_lrs, groups=None):
        for (g, b), s in zip(labelled(base_lrs, groups), self.schedules):
            s.check_base_lrs([b], [g])


def group_multipliers(factors: Sequence[float]) -> PerGroup:
    """Constant per-group scales of the base lr (timm ``lr_scale``)."""
    factors = list(factors)
    if not factors:
        raise ValueError("factors must not be empty")
    return PerGroup([Constant(check.nonnegative(f"factors[{i}]", f)) for i, f in enumerate(factors)])


WARMUPS = ("linear", "exponential", "constant", "cosine", "1-sqrt")


def warmup(warmup_steps: int, kind: str = "linear", start_factor: float = 0.0) -> Schedule:
    """The warmup phase alone: from ``start_factor`` to 1 over ``warmup_steps``.

    linear: ``s + (1 - s) t / W`` (HF warmup with s = 0); exponential:
    ``s ** (1 - t / W)``; constant: ``s`` throughout (torch ConstantLR);
    cosine and 1-sqrt: HF WSD warmup shapes.
    """
    check.choice("warmup kind", kind, WARMUPS)
    warmup_steps = check.integer("warmup_steps", warmup_steps, 1)
    start_factor = check.in_range("start_factor", start_factor, 0, 1)
    if kind == "constant":
        return Constant(start_factor, warmup_steps)
    if kind == "exponential":
        if start_factor == 0:
            raise ValueError("exponential warmup needs start_factor in (0, 1]")
        return Anneal(start_factor, 1.0, warmup_steps, "exponential")
    return Anneal(start_factor, 1.0, warmup_steps, kind)


def with_warmup(schedule: Schedule, warmup_steps: int, kind: str = "linear", start_factor: float = 0.0) -> Schedule:
    """``warmup(...)`` for ``warmup_steps`` steps, then ``schedule`` from its step 0.

    ``warmup_steps=0`` returns ``schedule`` unchanged.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a fusedlr schedule, got {type(schedule).__name__}")
    if check.integer("warmup_steps", warmup_steps, 0) == 0:
        return schedule
    return Sequential([warmup(warmup_steps, kind, start_factor), schedule], [warmup_steps])


def warmup_stable_decay(num_warmup_steps: int, num_decay_steps: int, num_training_steps: int | None = None,
                        num_stable_steps: int | None = None, warmup_type: str = "linear",
                        decay_type: str = "cosine", min_lr_ratio: float = 0.0, num_cycles: float = 0.5) -> Schedule:
    """Warmup-stable-decay (HF get_wsd_schedule): warm up from ``min_lr_ratio``
    to 1, hold 1, decay to ``min_lr_ratio`` (linear, cosine or 1-sqrt), hold."""
    num_warmup_steps = check.integer("num_warmup_steps", num_warmup_steps, 0)
    num_decay_steps = check.integer("num_decay_steps", num_decay_steps, 1)
    warmup_type = check.choice("warmup_type", warmup_type, ("linear", "cosine", "1-sqrt"))
    decay_type = check.choice("decay_type", decay_type, ("linear", "cosine", "1-sqrt"))
    min_lr_ratio = check.in_range("min_lr_ratio", min_lr_ratio, 0, 1)
    if num_stable_steps is None:
        if num_training_steps is None:
            raise ValueError("give num_training_steps or num_stable_steps")
        num_training_steps = check.integer("num_training_steps", num_training_steps, 1)
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
        if num_stable_steps < 0:
            raise ValueError(
                f"num_warmup_steps + num_decay_steps ({num_warmup_steps} + {num_decay_steps}) must be "
                f"<= num_training_steps ({num_training_steps})"
            )
    num_stable_steps = check.integer("num_stable_steps", num_stable_steps, 0)
    if decay_type == "cosine":
        decay: Schedule = Cosine(num_decay_steps, alpha=min_lr_ratio, num_cycles=num_cycles)
    else:
        shape = "linear" if decay_type == "linear" else "sqrt"
        decay = Anneal(1.0, min_lr_ratio, num_decay_steps, shape)
    phases: list[Schedule] = []
    milestones: list[int] = []
    if num_warmup_steps:
        phases.append(Anneal(min_lr_ratio, 1.0, num_warmup_steps, warmup_type))
        milestones.append(num_warmup_steps)
    if num_stable_steps:
        phases.append(Constant(1.0))
        milestones.append(num_warmup_steps + num_stable_steps)
    phases.append(decay)
    return Sequential(phases, milestones) if milestones else decay
