"""Stochastic rounding of bf16 states, in tensor ops: the reference backend's
copy of csrc/fusedlr/scalar_io.h (``state_rounding``,
``float_to_bf16_stochastic``), bit for bit. uint32 values live in int64
tensors; products wrap modulo 2**64 and are masked back to 32 bits."""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 hash of uint32 values (held in int64)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def seeds(tensor: int, update: torch.Tensor) -> list[torch.Tensor]:
    """The seeds of the three state slots of the bucket's tensor ``tensor`` at its
    update count ``update`` (an int64 device tensor: no host read)."""
    update = update.reshape(()).to(torch.int64)
    base = mix32(torch.bitwise_xor(mix32(update & _M32 ^ mix32((update >> 32) & _M32)), tensor))
    return [mix32((base + _GOLDEN * (slot + 1)) & _M32) | 1 for slot in range(3)]


def to_bf16(value: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``value`` (float32) rounded to bf16 stochastically with the random bits
    of each element index under ``seed``; NaN stays a quiet NaN."""
    bits = value.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & _M32
    element = torch.arange(value.numel(), device=value.device, dtype=torch.int64).reshape(value.shape)
    random = mix32(seed ^ mix32(element & _M32 ^ ((element >> 32) & _M32)))
    rounded = (bits + (random & 0xFFFF)) >> 16
    rounded = torch.where((bits & 0x7FFFFFFF) > 0x7F800000, (bits >> 16) | 0x40, rounded)
    return torch.where(rounded >= 0x8000, rounded - 0x10000, rounded).to(torch.int16).view(torch.bfloat16)
