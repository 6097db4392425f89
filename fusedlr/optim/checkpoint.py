"""Optimizer checkpoints. ``export`` turns a state_dict's schedules into plain
data, so checkpoints load with ``torch.load(weights_only=True)``; ``check``
validates a state_dict in full (optimizer kind, param and state shapes, step
counts, the plateau buffer, the schedules) before ``load_state_dict`` changes
anything."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import _native
from ..schedules import Schedule, serialize
from .buckets import describe
from .scheduler_guard import follows_schedule


def export(optimizer, state_dict: dict) -> dict:
    """torch's state_dict with each group's schedules replaced by references
    into ``state_dict["fusedlr"]["schedules"]``, plus the step counter and the
    plateau buffer."""
    keys = optimizer.schedule_keys
    groups = state_dict["param_groups"]  # torch's copies: the optimizer's own groups are untouched
    refs, nodes = serialize.encode([group.get(key) for group in groups for key in keys])
    refs = iter(refs)
    for group in groups:
        for key in keys:
            group[key] = next(refs)
    ds = optimizer._primary()
    state_dict["fusedlr"] = {"optimizer": optimizer.kind, "step_count": ds.step.clone(),
                             "plateau": ds.plateau.clone(), "schedules": nodes}
    return state_dict


@dataclass
class Checked:
    """A state_dict that passed ``check``, ready for torch's loader."""
    torch_state_dict: dict  # param_groups merged with the optimizer's own and schedules decoded
    step_count: int
    plateau: torch.Tensor | None


#: state keys per optimizer kind, to recognise a state_dict from another optimizer
STATE_KEYS = {"sgd": {"momentum_buffer"}, "adamw": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}}
OPTIMIZER_NAMES = {"sgd": "SGD", "adamw": "AdamW"}


def check(optimizer, state_dict) -> Checked:
    """Raise ValueError/TypeError naming what does not fit; change nothing."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups' (from optimizer.state_dict())")
    saved_groups, groups = state_dict["param_groups"], optimizer.param_groups
    if len(saved_groups) != len(groups):
        raise ValueError(f"the state_dict has {len(saved_groups)} param groups, the optimizer {len(groups)}")
    for g, (saved, group) in enumerate(zip(saved_groups, groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"param_groups[{g}]: the state_dict lists {len(saved['params'])} params, the optimizer "
                             f"{len(group['params'])}")
    extra = state_dict.get("fusedlr") or {}
    if not isinstance(extra, dict):
        raise TypeError(f"state_dict['fusedlr'] must be a dict, got {type(extra).__name__}")
    name = OPTIMIZER_NAMES[optimizer.kind]
    kind = extra.get("optimizer", optimizer.kind)
    if kind != optimizer.kind:
        raise ValueError(f"this state_dict is from fusedlr.{OPTIMIZER_NAMES.get(kind, kind)}; it cannot be loaded "
                         f"into fusedlr.{name}")
    steps = _check_states(optimizer, state_dict["state"], saved_groups, name)
    merged = _merged_groups(optimizer, saved_groups, serialize.Decoder(extra.get("schedules", [])))
    if "step_count" in extra:
        count = step_count_value(extra["step_count"], "state_dict['fusedlr']['step_count']")
    else:  # torch's, or fusedlr's before it kept one: the most updates any param received
        count = max(steps, default=0)
    plateau = extra.get("plateau")
    if plateau is not None:
        expected = _native.format_constants().PLATEAU_HEADER + 2 * len(groups)
        if not isinstance(plateau, torch.Tensor) or not plateau.is_floating_point() or plateau.numel() != expected:
            raise ValueError(f"state_dict['fusedlr']['plateau'] must be a float tensor of {expected} values for "
                             f"{len(groups)} param groups, got "
                             f"{describe(plateau) if isinstance(plateau, torch.Tensor) else repr(plateau)}")
    torch_state_dict = dict(state_dict, param_groups=[dict(group, params=saved["params"])
                                                      for group, saved in zip(merged, saved_groups)])
    return Checked(torch_state_dict, count, plateau)


def _check_states(optimizer, states, saved_groups, name: str) -> list[int]:
    """Check each saved param state against its param; the saved step counts."""
    if not isinstance(states, dict):
        raise TypeError(f"state_dict['state'] must be a dict, got {type(states).__name__}")
    params = {}
    for g, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        for i, (saved_id, p) in enumerate(zip(saved["params"], group["params"])):
            params[saved_id] = (p, f"param_groups[{g}]['params'][{i}]")
    foreign = set().union(*STATE_KEYS.values()) - STATE_KEYS[optimizer.kind]
    steps = []
    for saved_id, st in states.items():
        if saved_id not in params:
            raise ValueError(f"state_dict['state'] has an entry for param {saved_id!r}, which no param group lists")
        p, where = params[saved_id]
        if not isinstance(st, dict):
            raise TypeError(f"{where}: its saved state must be a dict, got {type(st).__name__}")
        for key, value in st.items():
            if key in foreign:
                raise ValueError(f"{where}: the saved state holds {key!r}, which fusedlr.{name} does not keep: this "
                                 "state_dict is from another optimizer")
            if key == "step":
                steps.append(step_count_value(value, f"{where}: saved state['step']"))
            elif isinstance(value, torch.Tensor):
                if value.shape != p.shape:
                    raise ValueError(f"{where}: saved state[{key!r}] has shape {tuple(value.shape)} but the param has "
                                     f"shape {tuple(p.shape)}")
                if not value.is_floating_point():
                    raise TypeError(f"{where}: saved state[{key!r}] must be a floating-point tensor, got {value.dtype}")
    return steps


def _merged_groups(optimizer, saved_groups, decoder: serialize.Decoder) -> list[dict]:
    """The param groups after the load (each saved group over the optimizer's
    own: a torch.optim group keeps the fusedlr schedules; with a torch scheduler
    attached, its initial_lr is the base lr), checked."""
    merged = []
    for g, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        new = {k: v for k, v in saved.items() if k != "params"}
        for key in optimizer.schedule_keys:
            if key in new:
                new[key] = _schedule(new[key], decoder, f"param_groups[{g}][{key!r}]")
        from_torch = "schedule" not in saved
        for key, value in group.items():
            if key != "params":
                new.setdefault(key, value)
        if from_torch and "initial_lr" in new:
            new["lr"] = new["initial_lr"]
            if follows_schedule(new):  # the torch scheduler's part is now the fusedlr schedule's
                del new["initial_lr"]
        optimizer.check_group_fully(new, f"param_groups[{g}]")
        merged.append(new)
    optimizer.check_schedules(merged)
    return merged


def _schedule(value, decoder: serialize.Decoder, where: str) -> Schedule | None:
    if value is None or isinstance(value, Schedule):  # a checkpoint from before schedules were stored as data
        return value
    try:
        return decoder.schedule(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def step_count_value(value, where: str) -> int:
    """A saved step count: a non-negative integer (an int, or a one-element
    tensor holding one, e.g. torch's float32 step)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{where} must be one integer, got {describe(value)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be an integer >= 0, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{where} must be an integer >= 0, got {value}")
    if not 0 <= value < 2 ** 63:
        raise ValueError(f"{where} must be an integer in [0, 2**63), got {int(value)}")
    return int(value)

