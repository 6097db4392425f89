"""master_weights="remainder": a bf16 param's fp32 master held as the param
(the master's high half, rounded half away from zero) and an int16 state of
the master's low halves — exact fp32 updates with 2 extra bytes per param
instead of a 4-byte copy. Tensor ops (no host read), the reference backend's
form of the kernels' SplitMaster (csrc/fusedlr/scalar_io.h)."""
from __future__ import annotations

import torch

#: the state key of the low halves
REMAINDER = "master_remainder"


def join(param: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The fp32 masters of bf16 ``param`` and int16 ``low``: the high half is
    the param less the carry that rounded it up (the low half's top bit)."""
    low = low.to(torch.int32) & 0xFFFF
    high = (param.view(torch.int16).to(torch.int32) - (low >> 15)) & 0xFFFF
    return ((high << 16) | low).view(torch.float32)  # int32 shifts wrap: the sign bit lands in place


def split(master: torch.Tensor, param: torch.Tensor, low: torch.Tensor) -> None:
    """Write fp32 ``master`` into bf16 ``param`` (its high half, plus one where
    the low half is >= 0x8000) and int16 ``low``; inf and nan keep no low half."""
    bits = master.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    finite = (bits & 0x7F800000) != 0x7F800000
    low_bits = torch.where(finite, bits & 0xFFFF, 0)
    high = ((bits >> 16) + (low_bits >> 15)) & 0xFFFF
    param.copy_(_as_int16(high).view(torch.bfloat16))
    low.copy_(_as_int16(low_bits))


def _as_int16(bits: torch.Tensor) -> torch.Tensor:
    """Values in [0, 2**16) as the int16 with those bits."""
    return torch.where(bits >= 2 ** 15, bits - 2 ** 16, bits).to(torch.int16)
