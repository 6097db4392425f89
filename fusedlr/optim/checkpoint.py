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
from . import block_states
from .buckets import describe
from .scheduler_guard import follows_schedule
from .specs import SPECS
from .split_master import REMAINDER


def export(optimizer, state_dict: dict) -> dict:
    """torch's state_dict, laid out so that every checkpoint path keeps it (DCP's
    ``get_optimizer_state_dict``, ZeRO's consolidation, torch.save), as those
    keep ``state`` and ``param_groups`` only: each group's schedules become
    references into ``param_groups[0]["fusedlr"]["schedules"]`` (with the
    optimizer kind), and each param's state also holds the schedule step
    counter (``schedule_step``) and, with a Plateau, the plateau buffer
    (``schedule_plateau``)."""
    keys = optimizer.schedule_keys
    groups = state_dict["param_groups"]  # torch's copies: the optimizer's own groups are untouched
    refs, nodes = serialize.encode([group.get(key) for group in groups for key in keys])
    refs = iter(refs)
    for group in groups:
        for key in keys:
            group[key] = next(refs)
    groups[0]["fusedlr"] = {"optimizer": optimizer.kind, "schedules": nodes}
    ds = optimizer._primary()
    extra = {"schedule_step": ds.step}
    if ds.plateau_schedule is not None:
        extra["schedule_plateau"] = ds.plateau
    # new dicts: torch's "state" holds the optimizer's own state dicts
    state_dict["state"] = {index: {**st, **{k: v.clone() for k, v in extra.items()}}
                           for index, st in state_dict["state"].items()}
    return state_dict


@dataclass
class Checked:
    """A state_dict that passed ``check``, ready for torch's loader."""
    torch_state_dict: dict  # param_groups merged with the optimizer's own and schedules decoded
    step_count: int
    plateau: torch.Tensor | None


#: every optimizer's state keys, to recognise a state_dict from another optimizer
ALL_STATE_KEYS = {name for spec in SPECS.values() for name in spec.state_names if name}


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
    # param_groups[0]["fusedlr"]; at the top level in checkpoints from before DCP and ZeRO were supported
    extra = (state_dict.get("fusedlr") or saved_groups[0].get("fusedlr") or {}) if saved_groups else {}
    if not isinstance(extra, dict):
        where = "state_dict['fusedlr']" if "fusedlr" in state_dict else "state_dict['param_groups'][0]['fusedlr']"
        raise TypeError(f"{where} must be a dict, got {type(extra).__name__}")
    name = optimizer.spec.class_name
    kind = extra.get("optimizer", optimizer.kind)
    if kind != optimizer.kind:
        saved_name = SPECS[kind].class_name if kind in SPECS else kind
        raise ValueError(f"this state_dict is from fusedlr.{saved_name}; it cannot be loaded into fusedlr.{name}")
    saved = _check_states(optimizer, state_dict["state"], saved_groups, name)
    merged = _merged_groups(optimizer, saved_groups, serialize.Decoder(extra.get("schedules", [])))
    if "step_count" in extra:
        count = step_count_value(extra["step_count"], "state_dict['fusedlr']['step_count']")
    elif saved.schedule_steps:
        count = max(saved.schedule_steps)
    else:  # torch's: the most updates any param received
        count = max(saved.steps, default=0)
    plateau = extra.get("plateau", saved.plateau)
    if plateau is not None:
        check_plateau(plateau, len(groups), "the saved plateau buffer (schedule_plateau)")
    torch_state_dict = dict(state_dict, param_groups=[dict(group, params=saved["params"])
                                                      for group, saved in zip(merged, saved_groups)])
    return Checked(torch_state_dict, count, plateau)


def check_plateau(plateau, num_groups: int, what: str) -> None:
    expected = _native.format_constants().PLATEAU_HEADER + 2 * num_groups
    if not isinstance(plateau, torch.Tensor) or not plateau.is_floating_point() or plateau.numel() != expected:
        raise ValueError(f"{what} must be a float tensor of {expected} values for {num_groups} param groups, got "
                         f"{describe(plateau) if isinstance(plateau, torch.Tensor) else repr(plateau)}")


@dataclass
class SavedStates:
    """What ``_check_states`` read from the saved per-param states."""
    steps: list  # each param's update count
    schedule_steps: list  # the optimizer's schedule step, as each param's state recorded it
    plateau: torch.Tensor | None  # the plateau buffer, as the first param's state recorded it


def _check_states(optimizer, states, saved_groups, name: str) -> SavedStates:
    """Check each saved param state against its param."""
    if not isinstance(states, dict):
        raise TypeError(f"state_dict['state'] must be a dict, got {type(states).__name__}")
    params = {}
    for g, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        for i, (saved_id, p) in enumerate(zip(saved["params"], group["params"])):
            params[saved_id] = (p, f"param_groups[{g}]['params'][{i}]")
    foreign = ALL_STATE_KEYS - set(optimizer.state_names)
    saved = SavedStates([], [], None)
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
                saved.steps.append(step_count_value(value, f"{where}: saved state['step']"))
            elif key == "schedule_step":
                saved.schedule_steps.append(step_count_value(value, f"{where}: saved state['schedule_step']"))
            elif key == "schedule_plateau":
                check_plateau(value, len(saved_groups), f"{where}: saved state['schedule_plateau']")
                saved.plateau = value if saved.plateau is None else saved.plateau
            elif key == block_states.SCALES:
                expected = (len(block_states.MOMENTS), block_states.num_blocks(p.numel()))
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected \
                        or value.dtype != torch.float32:
                    raise ValueError(f"{where}: saved state[{key!r}] must be a float32 tensor of shape {expected} "
                                     f"(the 8-bit moments' absmax per block), got "
                                     f"{describe(value) if isinstance(value, torch.Tensor) else type(value).__name__}")
            elif isinstance(value, torch.Tensor):
                if value.shape != p.shape:
                    raise ValueError(f"{where}: saved state[{key!r}] has shape {tuple(value.shape)} but the param has "
                                     f"shape {tuple(p.shape)}")
                if key == REMAINDER:
                    if value.dtype != torch.int16:
                        raise TypeError(f"{where}: saved state[{key!r}] (the low halves of fp32 masters) must be an "
                                        f"int16 tensor, got {value.dtype}")
                elif value.dtype == block_states.CODE_DTYPE and key in dict(block_states.MOMENTS):
                    if not isinstance(st.get(block_states.SCALES), torch.Tensor):
                        raise ValueError(f"{where}: saved state[{key!r}] holds 8-bit codes but the state has no "
                                         f"{block_states.SCALES!r} to decode them with")
                elif not value.is_floating_point():
                    raise TypeError(f"{where}: saved state[{key!r}] must be a floating-point tensor, got {value.dtype}")
    return saved


def _merged_groups(optimizer, saved_groups, decoder: serialize.Decoder) -> list[dict]:
    """The param groups after the load (each saved group over the optimizer's
    own: a torch.optim group keeps the fusedlr schedules; with a torch scheduler
    attached, its initial_lr is the base lr), checked."""
    merged = []
    for g, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        new = {k: v for k, v in saved.items() if k not in ("params", "fusedlr")}
        if "lr_scale" in new and "schedule" in saved:  # fusedlr's layer-decay groups before layer_scale: folded in lr
            new.setdefault("layer_scale", new.pop("lr_scale"))
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

