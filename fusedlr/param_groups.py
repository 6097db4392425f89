"""Helpers that build param groups with per-group learning rates."""
from __future__ import annotations

import re
from typing import Callable, Iterable

import torch

from .schedules import _checks as check

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


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


def layer_decay_param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float,
                             layer_decay: float, num_layers: int,
                             layer_of: Callable[[str, int], int] | None = None) -> list[dict]:
    """Param groups for layer-wise lr decay (timm ``param_groups_layer_decay``):
    a parameter in layer ``i`` of ``0..num_layers`` gets
    ``lr * layer_decay ** (num_layers - i)``; its group also records that
    factor as ``layer_scale`` (not timm's ``lr_scale``, which timm's schedulers
    multiply in again, and fusedlr refuses). Parameters with ``requires_grad=False`` are left out."""
    lr = check.positive("lr", lr)
    layer_decay = check.in_range("layer_decay", layer_decay, 0, 1, low_open=True)
    num_layers = check.integer("num_layers", num_layers, 1)
    layer_of = layer_of or default_layer_of
    by_layer: dict[int, list] = {}
    for item in named_parameters:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError("named_parameters must yield (name, param) pairs, e.g. model.named_parameters(); "
                            f"got {type(item).__name__}")
        name, param = item
        if not param.requires_grad:
            continue
        layer = layer_of(name, num_layers)
        if not 0 <= layer <= num_layers:
            raise ValueError(f"layer_of({name!r}) returned {layer}; it must be in [0, {num_layers}]")
        by_layer.setdefault(layer, []).append(param)
    groups = []
    for layer in sorted(by_layer):
        scale = layer_decay ** (num_layers - layer)
        groups.append({"params": by_layer[layer], "lr": lr * scale, "layer_scale": scale, "layer_id": layer})
    return groups
