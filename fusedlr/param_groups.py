"""Helpers that build param groups with per-group learning rates: layer-wise
lr decay (by parameter names, or by a timm model's ``group_matcher``), and
timm's own groups with their ``lr_scale`` folded into the lr."""
from __future__ import annotations

import fnmatch
import math
import re
from typing import Callable, Iterable

import torch

from .schedules import _checks as check

_LAYER_INDEX = re.compile(r"\.(\d+)\.")
#: the last ordinal of a timm group_matcher rule that joins the group before it (timm's MATCH_PREV_GROUP)
_JOINS_PREVIOUS = 99999.0


def default_layer_of(name: str, num_layers: int) -> int:
    """Layer id in [0, num_layers] from a parameter name: embeddings are 0, the
    k-th numbered block (``blocks.k.``, ``layers.k.``, ``h.k.``) is k + 1, the
    rest (final norm, head) is num_layers."""
    if "embed" in name or name.startswith(("cls_token", "pos_", "wte", "wpe")):
        return 0
    match = _LAYER_INDEX.search(f".{name}")
    if match:
        return min(int(match.group(1)) + 1, num_layers)
    return num_layers


def layers_from_group_matcher(names: list[str], group_matcher) -> dict[str, int]:
    """{name: layer id} the way timm groups a model for layer decay: each name
    gets an ordinal from the first ``group_matcher`` rule it matches (the
    rule's position, then the numbers its regex captures, then the rule's
    suffix; unmatched names, e.g. the head, last); distinct ordinals in sorted
    order are consecutive layers, except that an ordinal ending in 99999 joins
    the layer before it (timm's ViT puts its final norm with the last block so).
    ``group_matcher``: a timm model's ``model.group_matcher(coarse=False)`` — a
    dict of rule name to regex or list of (regex, suffix) — or a callable from
    name to an ordinal (a number or tuple of numbers)."""
    if isinstance(group_matcher, dict):
        rules = []
        for position, spec in enumerate(group_matcher.values()):
            if spec is None:
                continue
            for pattern, suffix in (spec if isinstance(spec, (list, tuple)) else [(spec, None)]):
                rules.append((re.compile(pattern), float(position), tuple(map(float, suffix or ()))))

        def ordinal(name: str) -> tuple:
            for regex, position, suffix in rules:
                match = regex.match(name)
                if match:
                    return (position, *(float(g) for g in match.groups() if g is not None), *suffix)
            return (math.inf,)
    elif callable(group_matcher):
        def ordinal(name: str) -> tuple:
            value = group_matcher(name)
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    else:
        raise TypeError(f"group_matcher must be a dict (timm's model.group_matcher()) or a callable, "
                        f"got {type(group_matcher).__name__}")
    ordinals = {name: ordinal(name) for name in names}
    layer_of_ordinal, layer = {}, -1
    for key in sorted(set(ordinals.values())):
        if layer < 0 or key[-1] != _JOINS_PREVIOUS:
            layer += 1
        layer_of_ordinal[key] = layer
    return {name: layer_of_ordinal[key] for name, key in ordinals.items()}


def layer_decay_param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float,
                             layer_decay: float, num_layers: int | None = None,
                             layer_of: Callable[[str, int], int] | None = None, *, group_matcher=None,
                             weight_decay: float | None = None, no_weight_decay: Iterable[str] = (),
                             min_scale: float = 0.0) -> list[dict]:
    """Param groups for layer-wise lr decay: a parameter in layer ``i`` of
    ``0..L`` gets ``lr * max(min_scale, layer_decay ** (L - i))``.

    Layers come from ``group_matcher`` when given (timm's convention, see
    ``layers_from_group_matcher``; ``L`` is then the last layer found, as in
    timm's ``param_groups_layer_decay``), else from ``layer_of(name,
    num_layers)`` (default ``default_layer_of``, the BEiT naming rule) with
    ``L = num_layers``. With ``weight_decay``, each layer is split as timm
    does: 1-D params (biases, norms) and names matching a ``no_weight_decay``
    pattern (fnmatch, e.g. ``model.no_weight_decay()``) get weight decay 0,
    the others ``weight_decay``. The scale is folded into each group's lr and
    recorded as ``layer_scale`` (not timm's ``lr_scale``, which timm's
    schedulers multiply in again, and fusedlr refuses). Parameters with
    ``requires_grad=False`` are left out."""
    lr = check.positive("lr", lr)
    layer_decay = check.in_range("layer_decay", layer_decay, 0, 1, low_open=True)
    min_scale = check.in_range("min_scale", min_scale, 0, 1)
    if weight_decay is not None:
        weight_decay = check.nonnegative("weight_decay", weight_decay)
    no_weight_decay = tuple(no_weight_decay)
    named = _named(named_parameters)  # frozen ones too: they count in the layer numbering, as in timm
    if group_matcher is not None:
        layers = layers_from_group_matcher([name for name, _ in named], group_matcher)
        last = max(layers.values(), default=0)
    else:
        if num_layers is None:
            raise TypeError("layer_decay_param_groups needs num_layers (or a group_matcher to find the layers)")
        last = check.integer("num_layers", num_layers, 1)
        layer_of = layer_of or default_layer_of
        layers = {name: layer_of(name, last) for name, param in named if param.requires_grad}
        for name, layer in layers.items():
            if not 0 <= layer <= last:
                raise ValueError(f"layer_of({name!r}) returned {layer}; it must be in [0, {last}]")
    by_group: dict[tuple, list] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        decays = weight_decay is not None and param.ndim > 1 and \
            not any(fnmatch.fnmatch(name, pattern) for pattern in no_weight_decay)
        by_group.setdefault((layers[name], decays), []).append(param)
    groups = []
    for layer, decays in sorted(by_group):
        scale = max(min_scale, layer_decay ** (last - layer))
        group = {"params": by_group[layer, decays], "lr": lr * scale, "layer_scale": scale, "layer_id": layer}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay if decays else 0.0
        groups.append(group)
    return groups


def _named(named_parameters) -> list[tuple[str, torch.nn.Parameter]]:
    named = list(named_parameters)
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError("named_parameters must yield (name, param) pairs, e.g. model.named_parameters(); "
                            f"got {type(item).__name__}")
    return named


def fold_lr_scale(param_groups: Iterable[dict], lr: float) -> list[dict]:
    """timm's param groups (e.g. ``timm.optim.param_groups_layer_decay``, whose
    groups carry ``lr_scale`` that timm's schedulers multiply into the lr they
    write) as fusedlr groups: each group's lr (its own, else ``lr``) times its
    ``lr_scale``, which is dropped (kept as ``layer_scale``). A fusedlr
    schedule then scales every group's lr as timm's scheduler would."""
    lr = check.positive("lr", lr)
    folded = []
    for g, group in enumerate(param_groups):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"param_groups[{g}] must be a dict with 'params', got {type(group).__name__}")
        group = dict(group)
        scale = check.nonnegative(f"param_groups[{g}]['lr_scale']", group.pop("lr_scale", 1.0))
        group["lr"] = group.get("lr", lr) * scale
        group["layer_scale"] = scale
        folded.append(group)
    return folded
