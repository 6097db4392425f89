"""fusedlr.SGD: torch.optim.SGD with the lr schedule evaluated in the kernel."""
from __future__ import annotations

import torch

from ..schedules import _checks as check
from . import specs
from .base import FusedOptimizer
from .torch_flags import check_torch_flags


class SGD(FusedOptimizer):
    """Stochastic gradient descent (momentum, dampening, Nesterov, weight decay),
    with torch.optim.SGD's arguments, defaults and update rule::

        d_p = grad + weight_decay * p
        buf = momentum * buf + (1 - dampening) * d_p      (buf = d_p on a param's first update)
        d_p = d_p + momentum * buf if nesterov else buf
        p  -= lr_t * d_p

    ``lr_t = schedule(step)`` scales each group's ``lr`` (its base lr), evaluated
    inside the kernel from an int64 step counter on the params' device; no
    ``scheduler.step()``. ``schedule`` may also be set per param group.
    ``momentum_schedule`` / ``weight_decay_schedule`` (None: constant) move
    ``momentum`` / ``weight_decay`` the same way, from the same step counter
    (e.g. ``one_cycle_momentum(...)``, ``from_torch(one_cycle, "momentum")``;
    the lr schedule itself to keep weight decay proportional to the lr).
    ``max_grad_norm`` (None: off) clips the global ``norm_type`` norm of all
    grads of the step, as ``torch.nn.utils.clip_grad_norm_(params,
    max_grad_norm, norm_type)`` before the step would (after GradScaler's
    unscale), fused into it: the norm in one multi-tensor pass, the clip
    factor applied by the update as it reads each grad (the grads are left as
    they are), no host sync; ``opt.last_grad_norm`` holds the norm measured.
    ``master_weights=True``: fp16/bf16 params are updated through an fp32 copy
    in their state (``master_param``, with fp32 states), the param written as
    its rounding in the same pass; ``master_weights="remainder"``: bf16 params
    are the high halves of fp32 masters whose low 16 bits are kept in state
    (``master_remainder``, int16; the param rounded half away from zero), the
    same fp32 updates with 2 bytes per param instead of 4 (float16 params are
    refused). ``state_dtype=torch.bfloat16`` keeps the
    states in bf16 beside fp32 params or masters (maths in fp32), optionally
    rounded stochastically (``stochastic_rounding=True``: random bits hashed
    from the tensor, its update count and the element index, so runs are
    reproducible and capturable). Adam and AdamW also take
    ``state_dtype="int8"``: block-wise 8-bit moments (as bitsandbytes' and
    torchao's 8-bit optimizers), one byte per element (an fp8 e4m3 code of the
    value relative to its block's largest) and one fp32 absmax per block of 256
    (``state["state_scales"]``), exp_avg_sq kept as its square root; maths in
    fp32, float32 params or ``master_weights=True``, no amsgrad.
    ``backend``: None picks the native kernel of the params' device (else the
    pure-PyTorch reference); "reference", "cpu" or "cuda" force one.
    ``foreach``/``fused`` are accepted for compatibility and ignored (always fused);
    ``differentiable=True`` is refused.
    """

    spec = specs.SGD

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 schedule=None, momentum_schedule=None, weight_decay_schedule=None, backend: str | None = None,
                 max_grad_norm: float | None = None, norm_type: float = 2.0, master_weights: bool | str = False,
                 state_dtype: torch.dtype | None = None, stochastic_rounding: bool = False, foreach=None,
                 differentiable: bool = False, fused=None):
        check_torch_flags(differentiable)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, schedule=schedule,
                        momentum_schedule=momentum_schedule, weight_decay_schedule=weight_decay_schedule)
        self.check_group(defaults)
        super().__init__(params, defaults, backend, max_grad_norm, norm_type, master_weights, state_dtype,
                         stochastic_rounding)

    def check_group(self, group: dict) -> None:
        group["lr"] = check.nonnegative("lr", _number(group["lr"]))
        group["momentum"] = check.nonnegative("momentum", group["momentum"])
        group["dampening"] = check.in_range("dampening", group["dampening"], 0, 1)
        group["weight_decay"] = check.nonnegative("weight_decay", group["weight_decay"])
        if group["nesterov"] and (not _has_momentum(group) or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 (or a momentum_schedule) and dampening = 0, "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def complete_state(self, param: torch.Tensor, group: dict, state: dict) -> None:
        if _has_momentum(group) and state.get("momentum_buffer") is None:
            state["momentum_buffer"] = self.new_state_tensor(param)
            # SGD's step counts updates of the buffer: its first one sets buf = d_p, as torch
            # does when momentum is switched on mid-run (a zero buffer would give (1-dampening) d_p)
            if isinstance(state.get("step"), torch.Tensor):
                state["step"].zero_()

    def adopt_state(self, param, group, loaded, previous):
        state = super().adopt_state(param, group, loaded, previous)
        if "step" not in loaded and loaded.get("momentum_buffer") is not None:
            state["step"].fill_(1)  # torch's SGD keeps no step: a buffer means it has started
        return state


def _has_momentum(group: dict) -> bool:
    return group["momentum"] > 0 or group.get("momentum_schedule") is not None


def _number(value):
    """A group lr given as a 0-d tensor is read once here (not in step())."""
    return float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value
