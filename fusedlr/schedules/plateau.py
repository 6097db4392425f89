"""Reduce-on-plateau as a schedule node whose reductions live on the device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import _checks as check
from .base import Schedule


class Plateau(Schedule):
    """torch ReduceLROnPlateau, evaluated on the device: ``opt.report(metric)``
    (a tensor on the params' device) runs torch's state machine (best metric,
    bad reports, cooldown) in device memory, without a host sync, and counts
    each group's reductions ``k``; the node then gives
    ``b`` while ``k = 0``, else ``max(b * factor**k, min_lr)``.

    ``b`` is the lr flowing into the node, so it composes: ``warmup(...)``
    then a plateau via ``Sequential``, or ``Chain([Cosine(...), Plateau()])``.
    A reduction is decided against the group's base lr (as torch reduces the
    group's lr), and skipped when it would change the lr by ``eps`` or less.
    One Plateau per optimizer (it may appear in several groups' schedules);
    before any report, and in ``values()``, it passes ``b`` through.
    ``min_lr``: one value, or one per param group.
    """

    kind = "PLATEAU"

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8):
        self.mode = check.choice("mode", mode, ("min", "max"))
        self.factor = check.in_range("factor", factor, 0, 1, high_open=True)
        self.patience = check.integer("patience", patience, 0)
        self.threshold = check.nonnegative("threshold", threshold)
        self.threshold_mode = check.choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check.integer("cooldown", cooldown, 0)
        if isinstance(min_lr, (list, tuple)):
            if not min_lr:
                raise ValueError("min_lr must hold at least one value")
            self.min_lr = tuple(check.nonnegative(f"min_lr[{i}]", v) for i, v in enumerate(min_lr))
        else:
            self.min_lr = check.nonnegative("min_lr", min_lr)
        self.eps = check.nonnegative("eps", eps)

    @property
    def num_groups(self) -> int | None:
        return len(self.min_lr) if isinstance(self.min_lr, (list, tuple)) and len(self.min_lr) > 1 else None

    def min_lrs(self, num_groups: int) -> list[float]:
        if isinstance(self.min_lr, (list, tuple)):  # (a list in schedules pickled before they were immutable)
            return list(self.min_lr) if len(self.min_lr) == num_groups else [self.min_lr[0]] * num_groups
        return [self.min_lr] * num_groups

    def fields(self) -> list[float]:
        return []  # the configuration and state live in the optimizer's plateau buffer

    def evaluate(self, t, b, plateau=None):
        """b until the group's first reduction, then max(b factor**k, min_lr)."""
        if plateau is None:
            return b.expand(t.shape[0], b.shape[1])
        k = plateau.reductions[plateau.groups].reshape(1, -1)
        floor = plateau.min_lrs[plateau.groups].reshape(1, -1)
        return torch.where(k == 0, b, torch.maximum(b * self.factor ** k, floor)).expand(t.shape[0], -1)


def plateaus_in(schedule: Schedule | None) -> list[Plateau]:
    """Every Plateau node of a schedule tree."""
    if schedule is None:
        return []
    found = [schedule] if isinstance(schedule, Plateau) else []
    for child in schedule.children():
        found += plateaus_in(child)
    return found


@dataclass
class PlateauView:
    """An optimizer's plateau reductions as seen by the columns of an evaluation:
    ``reductions``/``min_lrs`` (float64 (G,) tensors) and the param group of each column."""
    reductions: torch.Tensor
    min_lrs: torch.Tensor
    groups: list

    def column(self, c: int) -> "PlateauView":
        return PlateauView(self.reductions, self.min_lrs, self.groups[c:c + 1])
