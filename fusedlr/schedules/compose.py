"""Common compositions of schedules (warmup prefixes, WSD, per-group
multipliers), built from the composite nodes of base.py."""
from __future__ import annotations

from typing import Sequence

from . import _checks as check
from .base import PerGroup, Schedule, Sequential
from .families import Anneal, Constant, Cosine


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
