"""The optimizer's plateau buffer on each device (layout: csrc/fusedlr/plateau.h):
the Plateau schedule's configuration, torch ReduceLROnPlateau's state, and
per group its min_lr and reduction count. Also the reference (pure torch)
version of a report, written from torch's ReduceLROnPlateau.step."""
from __future__ import annotations

import math

import torch

from .. import _native
from ..schedules.plateau import Plateau, plateaus_in


def find_plateau(param_groups: list[dict], other_schedule_keys) -> Plateau | None:
    """The one Plateau the groups' lr schedules use, if any (refused in the
    schedules of ``other_schedule_keys``)."""
    found = []
    for g, group in enumerate(param_groups):
        for key in other_schedule_keys:
            if plateaus_in(group.get(key)):
                raise ValueError(f"param_groups[{g}]: {key} holds a Plateau; reduce-on-plateau drives lrs only")
        for plateau in plateaus_in(group["schedule"]):
            if not any(p is plateau for p in found):
                found.append(plateau)
    if len(found) > 1:
        raise ValueError(f"the param groups' schedules hold {len(found)} different Plateau objects; an optimizer "
                         "reports one metric, so share one Plateau (per-group min_lr=[...] is supported)")
    return found[0] if found else None


def _layout():
    native = _native.format_constants()
    return native.PLATEAU_FIELDS, native.PLATEAU_HEADER


def _config(plateau: Plateau, num_groups: int) -> tuple[list[float], list[float]]:
    """(header configuration values, per-group min_lr)."""
    fields, header = _layout()
    config = [0.0] * header
    config[fields["max_mode"]] = float(plateau.mode == "max")
    config[fields["factor"]] = plateau.factor
    config[fields["patience"]] = plateau.patience
    config[fields["threshold"]] = plateau.threshold
    config[fields["abs_threshold"]] = float(plateau.threshold_mode == "abs")
    config[fields["cooldown"]] = plateau.cooldown
    config[fields["eps"]] = plateau.eps
    config[fields["num_groups"]] = num_groups
    return config, plateau.min_lrs(num_groups)


def refreshed(buffer: torch.Tensor | None, plateau: Plateau | None, num_groups: int,
              device: torch.device) -> torch.Tensor:
    """The buffer with ``plateau``'s configuration written in, its state kept
    (in place, at the same address, when the number of groups is unchanged)."""
    fields, header = _layout()
    config, min_lrs = _config(plateau or Plateau(), num_groups)
    if buffer is None or buffer.numel() != header + 2 * num_groups:
        fresh = torch.tensor(config + min_lrs + [0.0] * num_groups, dtype=torch.float64)
        fresh[fields["best"]] = math.inf if (plateau is None or plateau.mode == "min") else -math.inf
        fresh = fresh.to(device)
        if buffer is not None:  # groups were added: keep the metric state and the old groups' reductions
            state = slice(fields["best"], fields["cooldown_left"] + 1)
            fresh[state].copy_(buffer[state])
            old_groups = (buffer.numel() - header) // 2
            kept = min(old_groups, num_groups)
            fresh[header + num_groups:header + num_groups + kept].copy_(buffer[header + old_groups:][:kept])
        return fresh
    values = torch.tensor(config + min_lrs, dtype=torch.float64)  # the state slots in it are not written
    buffer[:fields["best"]].copy_(values[:fields["best"]])
    buffer[header:header + num_groups].copy_(values[header:])
    return buffer


def reductions(buffer: torch.Tensor, num_groups: int) -> torch.Tensor:
    _, header = _layout()
    return buffer[header + num_groups:header + 2 * num_groups]


def min_lrs(buffer: torch.Tensor, num_groups: int) -> torch.Tensor:
    _, header = _layout()
    return buffer[header:header + num_groups]


def reference_report(buffer: torch.Tensor, plateau: Plateau, metric: torch.Tensor, base_lrs: torch.Tensor) -> None:
    """torch's ReduceLROnPlateau.step(metric) on the buffer with tensor ops only."""
    fields, _ = _layout()
    num_groups = base_lrs.numel()
    best, bad, cooling = (buffer[fields[k]] for k in ("best", "bad_epochs", "cooldown_left"))
    if plateau.mode == "min":
        better = metric < best - plateau.threshold if plateau.threshold_mode == "abs" else \
            metric < best * (1.0 - plateau.threshold)
    else:
        better = metric > best + plateau.threshold if plateau.threshold_mode == "abs" else \
            metric > best * (plateau.threshold + 1.0)
    new_best = torch.where(better, metric, best)
    new_bad = torch.where(better, torch.zeros_like(bad), bad + 1)
    in_cooldown = cooling > 0
    new_cooling = torch.where(in_cooldown, cooling - 1, cooling)
    new_bad = torch.where(in_cooldown, torch.zeros_like(new_bad), new_bad)
    reduce = new_bad > plateau.patience
    counts, floor = reductions(buffer, num_groups), min_lrs(buffer, num_groups)
    old_lr = torch.where(counts == 0, base_lrs, torch.maximum(base_lrs * plateau.factor ** counts, floor))
    new_lr = torch.maximum(old_lr * plateau.factor, floor)
    counts.copy_(torch.where(reduce & (old_lr - new_lr > plateau.eps), counts + 1, counts))
    new_cooling = torch.where(reduce, torch.full_like(new_cooling, plateau.cooldown), new_cooling)
    new_bad = torch.where(reduce, torch.zeros_like(new_bad), new_bad)
    best.copy_(new_best)
    bad.copy_(new_bad)
    cooling.copy_(new_cooling)
