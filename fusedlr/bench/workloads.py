"""Parameter-shape workloads: presets that look like real models, shapes taken
from a user's torch.nn.Module, or a JSON list of shapes."""
from __future__ import annotations

import importlib
import json
import math

import torch


def _gpt2_small() -> list[tuple]:
    """GPT-2 small (124M params, 148 tensors): embeddings, 12 blocks, final norm."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    block = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [(vocab, d), (ctx, d)] + block * layers + [(d,), (d,)]


def _llama7b_layer() -> list[tuple]:
    """One Llama-7B decoder layer (202M params): attention, SwiGLU MLP, two RMSNorms."""
    d, hidden = 4096, 11008
    return [(d, d)] * 4 + [(hidden, d), (hidden, d), (d, hidden), (d,), (d,)]


def _tiny(count: int) -> list[tuple]:
    """``count`` small tensors of 64..4096 elements (biases, norms, small heads)."""
    return [(64 * (1 + (i * 7) % 64),) for i in range(count)]


PRESETS = {
    "large": lambda: [(64 * 2 ** 20,)],
    "gpt2-small": _gpt2_small,
    "llama7b-layer": _llama7b_layer,
    "tiny-1000": lambda: _tiny(1000),
    "tiny-10000": lambda: _tiny(10_000),
    # host time alone: a step's cost per tensor, the update itself next to nothing
    "host-10000": lambda: [(4,)] * 10_000,
}
#: smaller stand-ins for --quick (smoke tests): same character, a fraction of the bytes
QUICK_PRESETS = {
    "large": lambda: [(2 ** 20,)],
    "gpt2-small": lambda: [(s[0] // 16,) + s[1:] for s in _gpt2_small()],
    "llama7b-layer": lambda: [tuple(max(1, x // 16) for x in s) for s in _llama7b_layer()],
    "tiny-1000": lambda: _tiny(1000),
    "tiny-10000": lambda: _tiny(2000),
    "host-10000": lambda: [(4,)] * 2000,
}


def preset(name: str, quick: bool = False) -> list[tuple]:
    table = QUICK_PRESETS if quick else PRESETS
    if name not in table:
        raise ValueError(f"preset must be one of {sorted(table)}, got {name!r}")
    return table[name]()


def shapes_of(module: torch.nn.Module) -> list[tuple]:
    """The shapes of a module's trainable parameters."""
    return [tuple(p.shape) for p in module.parameters() if p.requires_grad]


def shapes_from_json(path: str) -> list[tuple]:
    """A JSON file holding a list of shapes, e.g. ``[[768, 3072], [3072], []]``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list) or not all(isinstance(s, list) and all(isinstance(x, int) and x >= 0 for x in s)
                                             for s in data):
        raise ValueError(f"{path}: expected a JSON list of shapes (lists of non-negative ints)")
    return [tuple(s) for s in data]


def shapes_from_module_spec(spec: str) -> list[tuple]:
    """``package.module:factory``: a callable returning a torch.nn.Module (its class will do)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--module must look like 'package.module:factory', got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return shapes_of(model)


def numel(shapes: list[tuple]) -> int:
    return sum(math.prod(s) for s in shapes)


def make_params(shapes: list[tuple], dtype: torch.dtype, device: torch.device, seed: int = 0):
    """Fresh params with fixed random grads (the same values for every contender)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype))
        p.grad = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype) * 1e-2
        params.append(p)
    return params
