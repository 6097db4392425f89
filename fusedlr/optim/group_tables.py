"""Host-side description of the param groups that native kernels read: one
float64 row per group (schedule_layout in ``csrc/fusedlr/step_layout.h``)
and the groups' packed schedules, concatenated."""
from __future__ import annotations

import torch

from .. import _native
from ..schedules import Schedule
from ..schedules.plateau import PlateauView
from . import plateau_buffer
from .specs import OptimizerSpec


def hyper_key(group: dict, spec: OptimizerSpec) -> tuple:
    """What the device tables and the state layout depend on; compared between
    steps to spot edits (which are then validated). Missing keys read as None
    (refilled from the defaults at the refresh). Schedules (immutable) and
    tensors (converted to numbers by the refresh's checks) compare by identity."""
    return tuple(_comparable(group.get(name)) for name in spec.compared_keys)


def _comparable(value):
    if isinstance(value, (tuple, list)):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, (torch.Tensor, Schedule)):
        return _Same(value)
    return value


class _Same:
    """Equal only to a holder of the very same object (kept alive, so its id is not reused)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and other.value is self.value

    __hash__ = None


def pack_groups(param_groups: list[dict], spec: OptimizerSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(group table (G, NUM_GROUP_FIELDS), concatenated schedule programs), CPU float64."""
    native = _native.format_constants()
    fields = native.GROUP_FIELDS
    rows = torch.zeros(len(param_groups), native.NUM_GROUP_FIELDS, dtype=torch.float64)
    programs: list[torch.Tensor] = []
    packed: list[tuple[Schedule, int]] = []  # groups sharing a schedule share its program

    def program_offset(schedule: Schedule | None) -> int:
        if schedule is None:
            return -1
        start = next((o for s, o in packed if s is schedule), None)
        if start is None:
            start = sum(len(p) for p in programs)
            packed.append((schedule, start))
            programs.append(schedule.pack())
        return start

    for g, group in enumerate(param_groups):
        rows[g, fields["program"]] = program_offset(group["schedule"])
        for key, column in spec.schedules.items():
            rows[g, fields[f"{column}_program"]] = program_offset(group.get(key))
        for column, value in spec.table_values(group).items():
            rows[g, fields[column]] = value
    return rows, torch.cat(programs)


def group_lrs_at(param_groups: list[dict], step: torch.Tensor, base_all: torch.Tensor,
                 key: str = "schedule", plateau: torch.Tensor | None = None) -> torch.Tensor:
    """Value of every group's hyperparameter at ``step`` (an int64 tensor on any
    device) given the groups' base values ``base_all`` (float64 (G,) on the same
    device), as a float64 tensor (G,) there, computed with tensor ops only (no
    host sync). ``key``: the group key of the schedule (the lr's by default);
    a group without one keeps its base value. ``plateau``: the optimizer's
    plateau buffer (see plateau_buffer), whose reductions Plateau nodes apply."""
    t = step.clamp_min(0).to(torch.float64).reshape(1, 1)  # a negative count reads as 0, as in the kernels
    count = len(param_groups)
    view = None if plateau is None else PlateauView(plateau_buffer.reductions(plateau, count),
                                                    plateau_buffer.min_lrs(plateau, count), list(range(count)))
    values = []
    for g, group in enumerate(param_groups):
        schedule: Schedule | None = group.get(key)
        if schedule is None:
            values.append(base_all[g:g + 1])
        elif schedule.num_groups is None:
            values.append(schedule.evaluate(t, base_all[g:g + 1].reshape(1, 1),
                                            view.column(g) if view else None).reshape(1))
        else:
            values.append(schedule.evaluate(t, base_all.reshape(1, -1), view).reshape(-1)[g:g + 1])
    return torch.cat(values)
