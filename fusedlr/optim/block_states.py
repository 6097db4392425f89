"""state_dtype="int8": Adam(W)'s moments in 8 bits per element, block-wise,
as bitsandbytes' and torchao's 8-bit optimizers keep them. Each block of
``BLOCK`` elements keeps its largest magnitude (fp32, ``state["state_scales"]``:
row 0 for exp_avg, row 1 for exp_avg_sq) and each element one byte: the fp8
e4m3 number nearest to ``256 * value / absmax`` (round to nearest even). A
floating code keeps 3 significant bits down to 2**-14 of the block's largest
value (subnormals to 2**-17), where a linear int8 code would round anything
below 1/254 of it to zero. exp_avg_sq is kept as its square root, which halves
the range it needs, and a root above zero never rounds to zero: it keeps at
least the smallest code (2**-17 of its block's largest root). Otherwise a
small element's root could stay zero for good, each step's growth rounding
away again, while its exp_avg, whose block's largest value shrinks faster
(beta1 < beta2), is kept again and divided by eps alone. The update rounds
the codes stochastically (up with the probability of the distance from the
code below; the random bits of the bf16 states' stochastic rounding, slot 0
and 1), so moments that move by less than a code per step (exp_avg_sq with
beta2 = 0.999) still follow on average instead of freezing; a checkpoint's
fp32 moments are encoded to nearest. Maths in fp32; a value is decoded as
``code * absmax / 256``.

Plain tensor ops, which the reference backend runs on any device; under
torch.compile as opaque custom ops (Inductor's CPU code for these gathers and
bit casts was wrong: wrong codes, or indices out of bounds), so a compiled step
computes the eager step's bits."""
# (no `from __future__ import annotations`: older torch.library reads the op
# schemas from real annotation objects)
from typing import Optional

import torch

from . import stochastic_rounding

#: state_dtype's value for block-wise 8-bit moments
INT8 = "int8"
#: elements per block sharing one absmax
BLOCK = 256
#: the state key of the per-block absmax values, (2, blocks) float32
SCALES = "state_scales"
#: the dtype of the stored codes (bytes: torch's load_state_dict casts floating state to the param's dtype)
CODE_DTYPE = torch.uint8
#: the codes of the states kept, in slot order, and whether each is kept as its square root
MOMENTS = (("exp_avg", False), ("exp_avg_sq", True))


def num_blocks(numel: int) -> int:
    return (numel + BLOCK - 1) // BLOCK


def new_scales(param: torch.Tensor) -> torch.Tensor:
    """Zero absmax values for ``param``'s moments (all-zero blocks)."""
    return torch.zeros(len(MOMENTS), num_blocks(param.numel()), dtype=torch.float32, device=param.device)


def _block_of(numel: int, device: torch.device) -> torch.Tensor:
    """The block index of each of ``numel`` elements."""
    return torch.arange(numel, device=device) // BLOCK


def _code_values(codes: torch.Tensor) -> torch.Tensor:
    """The fp32 value of each e4m3 byte (exact): sign, 4 exponent bits biased by
    7, 3 mantissa bits; exponent 0 is subnormal (mantissa * 2**-9); 0x7f, 0xff nan."""
    c = codes.to(torch.int32)
    exponent, mantissa = (c >> 3) & 15, c & 7
    normal = (((exponent + 120) << 23) | (mantissa << 20)).view(torch.float32)
    magnitude = torch.where(exponent == 0, mantissa.to(torch.float32) * 2.0 ** -9, normal)
    magnitude = torch.where((exponent == 15) & (mantissa == 7), torch.full_like(magnitude, float("nan")), magnitude)
    return torch.where(c >= 128, -magnitude, magnitude)


def _codes_of(x: torch.Tensor) -> torch.Tensor:
    """The e4m3 byte nearest to each fp32 ``x`` (|x| <= 256; ties to even):
    integer arithmetic on the fp32 bits (torch's float8 conversion is not the
    same under torch.compile on every device), as the kernels do."""
    a = x.abs()
    bits = a.view(torch.int32)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) - (120 << 3)  # a carry moves into the exponent
    # below 2**-6: mantissa * 2**-9, 8 being the first normal (a nan converts nothing)
    subnormal = torch.round(torch.where(a < 2.0 ** -6, a, torch.zeros_like(a)) * 512).to(torch.int32)
    code = torch.where(a < 2.0 ** -6, subnormal, normal)
    code = torch.where(torch.isnan(x), torch.full_like(code, 0x7F), code)
    return (code | torch.signbit(x).to(torch.int32) << 7).to(CODE_DTYPE)


@torch.library.custom_op("fusedlr::decode_blocks", mutates_args=())
def _decode(codes: torch.Tensor, scales: torch.Tensor, root: bool) -> torch.Tensor:
    flat = codes.reshape(-1)
    values = (_code_values(flat) * scales[_block_of(flat.numel(), flat.device)]) * (1.0 / 256)
    values = values * values if root else values
    return values.view(codes.shape)


@_decode.register_fake
def _(codes, scales, root):
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


@torch.library.custom_op("fusedlr::encode_blocks", mutates_args=())
def _encode(values: torch.Tensor, root: bool, seed: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    flat = values.reshape(-1).float()
    flat = flat.sqrt() if root else flat
    block = _block_of(flat.numel(), flat.device)
    scales = torch.zeros(num_blocks(flat.numel()), dtype=torch.float32, device=flat.device)
    scales = scales.scatter_reduce(0, block, flat.abs(), "amax")
    per = scales[block]
    relative = torch.where(per == 0, torch.zeros_like(flat), flat / per) * 256  # |relative| <= 256
    codes = _codes_of(relative) if seed is None else \
        _codes_of_stochastic(relative, _element_random(seed.reshape(()), flat.numel()))
    if root:  # a root above zero keeps at least the smallest code (see the docstring)
        codes = torch.where((codes == 0) & (flat > 0), torch.ones_like(codes), codes)
    return codes.view(values.shape), scales


@_encode.register_fake
def _(values, root, seed):
    return (torch.empty(values.shape, dtype=CODE_DTYPE, device=values.device),
            torch.empty(num_blocks(values.numel()), dtype=torch.float32, device=values.device))


def _codes_of_stochastic(x: torch.Tensor, random: torch.Tensor) -> torch.Tensor:
    """The e4m3 byte of each fp32 ``x`` (|x| <= 256) rounded stochastically with
    ``random``'s 32 bits (uint32 in int64): up in magnitude with the probability
    of the distance from the code below, as the kernels' code_of_stochastic."""
    a = x.abs()
    bits = a.view(torch.int32).to(torch.int64)
    normal = ((bits + (random & 0xFFFFF)) >> 20) - (120 << 3)
    tiny = a < 2.0 ** -6
    below = torch.where(tiny, a, torch.zeros_like(a)) * 512 + (random >> 8).to(torch.float32) * 2.0 ** -24
    code = torch.where(tiny, below.to(torch.int64), normal)
    code = torch.where(torch.isnan(x), torch.full_like(code, 0x7F), code)
    return (code | torch.signbit(x).to(torch.int64) << 7).to(CODE_DTYPE)


def _element_random(seed: torch.Tensor, numel: int) -> torch.Tensor:
    """The random bits of each element index under ``seed`` (as the bf16 states' stochastic rounding)."""
    element = torch.arange(numel, device=seed.device, dtype=torch.int64)
    mix32 = stochastic_rounding.mix32
    return mix32(seed ^ mix32(element & 0xFFFFFFFF ^ ((element >> 32) & 0xFFFFFFFF)))


def decode(codes: torch.Tensor, scales: torch.Tensor, root: bool) -> torch.Tensor:
    """The fp32 values of ``codes`` (any shape) with their blocks' absmax ``scales``
    (the squares, for a state kept as its root)."""
    return _decode(codes, scales, root)


def encode(values: torch.Tensor, root: bool, seed: Optional[torch.Tensor] = None) -> tuple:
    """(codes of ``values``' shape, absmax per block) of fp32 ``values`` (the
    roots of them for a state kept as its root): to nearest, or with ``seed``
    (stochastic_rounding.seeds) stochastically; a root above zero keeps at least
    the smallest code. A block of zeros keeps zeros; a nan in a block
    makes its absmax, and so every value of the block, nan."""
    return _encode(values, root, seed)


def decoded_states(states: tuple, scales: torch.Tensor) -> tuple:
    """The fp32 values of the coded moments in ``states`` (slot order)."""
    return tuple(decode(codes, scales[i], root) for i, (codes, (_, root)) in enumerate(zip(states, MOMENTS))) + \
        tuple(states[len(MOMENTS):])


def store(states: tuple, scales: torch.Tensor, values: tuple, skip, seeds: list) -> None:
    """Encode the moments' new fp32 ``values`` into their codes (rounded
    stochastically with the state slots' ``seeds``) and absmax values, unless
    GradScaler skipped the step."""
    for i, (codes, value, (_, root)) in enumerate(zip(states, values, MOMENTS)):
        new_codes, new_scales = encode(value, root, seeds[i])
        if skip is not None:
            new_codes = torch.where(skip, codes, new_codes)
            new_scales = torch.where(skip, scales[i], new_scales)
        codes.copy_(new_codes)
        scales[i].copy_(new_scales)


def load_moment(target: torch.Tensor, name: str, loaded: dict, scales) -> bool:
    """A checkpoint's moment ``name`` into this optimizer's ``target`` when the
    two keep it in different forms (8-bit codes and absmax values, or fp32
    values): encoded into ``target`` and its row of ``scales`` (this optimizer's,
    when it keeps codes), or decoded. False when there is nothing to convert."""
    value, saved_scales = loaded.get(name), loaded.get(SCALES)
    slot = next((i for i, (moment, _) in enumerate(MOMENTS) if moment == name), None)
    if slot is None or not isinstance(value, torch.Tensor):
        return False
    root = MOMENTS[slot][1]
    if scales is not None and value.is_floating_point():  # fp32 values into codes
        codes, block_scales = encode(value.to(target.device, torch.float32), root)
        target.copy_(codes)
        scales[slot].copy_(block_scales)
        return True
    if scales is None and value.dtype == CODE_DTYPE and isinstance(saved_scales, torch.Tensor):  # codes into values
        target.copy_(decode(value.to(target.device), saved_scales[slot].to(target.device), root))
        return True
    return False
