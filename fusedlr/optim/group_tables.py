"""Host-side description of the param groups that native kernels read: one
float64 row per group (schedule_layout in ``csrc/fusedlr/step_layout.h``)
and the groups' packed schedules, concatenated."""
from __future__ import annotations

import torch

from .. import _native
from ..schedules import Schedule
from ..schedules.reference import PlateauView, evaluate
from . import plateau_buffer


def hyper_key(group: dict, kind: str) -> tuple:
    """What the device tables and the state layout depend on; compared between
    steps to spot edits (which are then validated).
    Schedules compare by identity: they are treated as immutable."""
    schedules = tuple(group.get(name) for name in HYPER_SCHEDULES[kind].values())
    if kind == "sgd":
        return (group["lr"], group["weight_decay"], group["momentum"], group["dampening"], group["nesterov"],
                group["maximize"], group["schedule"], *schedules)
    return (group["lr"], group["weight_decay"], *group["betas"], group["eps"], group["amsgrad"],
            group["maximize"], group["schedule"], *schedules)


#: per optimizer kind: {group table field its schedule drives: group key of that schedule}
HYPER_SCHEDULES = {
    "sgd": {"weight_decay": "weight_decay_schedule", "momentum": "momentum_schedule"},
    "adamw": {"weight_decay": "weight_decay_schedule", "momentum": "beta1_schedule"},
}


def pack_groups(param_groups: list[dict], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
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
        for field, key in HYPER_SCHEDULES[kind].items():
            rows[g, fields[f"{field}_program"]] = program_offset(group.get(key))
        rows[g, fields["base_lr"]] = group["lr"]
        rows[g, fields["weight_decay"]] = group["weight_decay"]
        if kind == "sgd":
            rows[g, fields["momentum"]] = group["momentum"]
            rows[g, fields["dampening"]] = group["dampening"]
        else:
            rows[g, fields["momentum"]], rows[g, fields["dampening"]] = group["betas"]
            rows[g, fields["eps"]] = group["eps"]
    return rows, torch.cat(programs)


def group_lrs_at(param_groups: list[dict], step: torch.Tensor, base_all: torch.Tensor,
                 key: str = "schedule", plateau: torch.Tensor | None = None) -> torch.Tensor:
    """Value of every group's hyperparameter at ``step`` (an int64 tensor on any
    device) given the groups' base values ``base_all`` (float64 (G,) on the same
    device), as a float64 tensor (G,) there, computed with tensor ops only (no
    host sync). ``key``: the group key of the schedule (the lr's by default);
    a group without one keeps its base value. ``plateau``: the optimizer's
    plateau buffer (see plateau_buffer), whose reductions Plateau nodes apply."""
    t = step.to(torch.float64).reshape(1, 1)
    count = len(param_groups)
    view = None if plateau is None else PlateauView(plateau_buffer.reductions(plateau, count),
                                                    plateau_buffer.min_lrs(plateau, count), list(range(count)))
    values = []
    for g, group in enumerate(param_groups):
        schedule: Schedule | None = group.get(key)
        if schedule is None:
            values.append(base_all[g:g + 1])
        elif schedule.num_groups is None:
            values.append(evaluate(schedule, t, base_all[g:g + 1].reshape(1, 1),
                                   view.column(g) if view else None).reshape(1))
        else:
            values.append(evaluate(schedule, t, base_all.reshape(1, -1), view).reshape(-1)[g:g + 1])
    return torch.cat(values)
