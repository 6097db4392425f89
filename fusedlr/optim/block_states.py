"""state_dtype="int8": Adam(W)'s moments in 8 bits per element, block-wise,
as bitsandbytes' and torchao's 8-bit optimizers keep them. Each block of
``BLOCK`` elements keeps its largest magnitude (fp32, ``state["state_scales"]``:
row 0 for exp_avg, row 1 for exp_avg_sq) and each element one byte: the fp8
e4m3 number nearest to ``256 * value / absmax`` (round to nearest even). A
floating code keeps 3 significant bits down to 2**-14 of the block's largest
value (subnormals to 2**-17), where a linear int8 code would round anything
below 1/254 of it to zero. exp_avg_sq is kept as its square root, which halves
the range it needs (an element's root underflows only where its exp_avg does
too, so no update divides a kept moment by eps alone). Maths in fp32; a
value is decoded as ``code * absmax / 256``.

Plain tensor ops, which the reference backend runs on any device; under
torch.compile as opaque custom ops (Inductor's CPU code for these gathers and
bit casts was wrong: wrong codes, or indices out of bounds), so a compiled step
computes the eager step's bits."""
# (no `from __future__ import annotations`: older torch.library reads the op
# schemas from real annotation objects)
import torch

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
    subnormal = torch.round(a * 512).to(torch.int32)  # below 2**-6: mantissa * 2**-9, 8 being the first normal
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
def _encode(values: torch.Tensor, root: bool) -> tuple[torch.Tensor, torch.Tensor]:
    flat = values.reshape(-1).float()
    flat = flat.sqrt() if root else flat
    block = _block_of(flat.numel(), flat.device)
    scales = torch.zeros(num_blocks(flat.numel()), dtype=torch.float32, device=flat.device)
    scales = scales.scatter_reduce(0, block, flat.abs(), "amax")
    per = scales[block]
    relative = torch.where(per == 0, torch.zeros_like(flat), flat / per)  # |relative| <= 1
    return _codes_of(relative * 256).view(values.shape), scales


@_encode.register_fake
def _(values, root):
    return (torch.empty(values.shape, dtype=CODE_DTYPE, device=values.device),
            torch.empty(num_blocks(values.numel()), dtype=torch.float32, device=values.device))


def decode(codes: torch.Tensor, scales: torch.Tensor, root: bool) -> torch.Tensor:
    """The fp32 values of ``codes`` (any shape) with their blocks' absmax ``scales``
    (the squares, for a state kept as its root)."""
    return _decode(codes, scales, root)


def encode(values: torch.Tensor, root: bool) -> tuple:
    """(codes of ``values``' shape, absmax per block) of fp32 ``values`` (the
    roots of them for a state kept as its root). A block of zeros keeps zeros; a
    nan in a block makes its absmax, and so every value of the block, nan."""
    return _encode(values, root)


def decoded_states(states: tuple, scales: torch.Tensor) -> tuple:
    """The fp32 values of the coded moments in ``states`` (slot order)."""
    return tuple(decode(codes, scales[i], root) for i, (codes, (_, root)) in enumerate(zip(states, MOMENTS))) + \
        tuple(states[len(MOMENTS):])


def store(states: tuple, scales: torch.Tensor, values: tuple, skip: torch.Tensor | None) -> None:
    """Encode the moments' new fp32 ``values`` into their codes and absmax
    values, unless GradScaler skipped the step."""
    for i, (codes, value, (_, root)) in enumerate(zip(states, values, MOMENTS)):
        new_codes, new_scales = encode(value, root)
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
