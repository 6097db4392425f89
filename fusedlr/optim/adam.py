"""fusedlr.Adam: torch.optim.Adam with the lr schedule evaluated in the kernel."""
from __future__ import annotations

import torch

from ..schedules import _checks as check
from . import block_states, specs
from .base import FusedOptimizer
from .sgd import _number
from .torch_flags import check_torch_flags


class Adam(FusedOptimizer):
    """Adam (AMSGrad optional) with torch.optim.Adam's arguments, defaults and
    update rule, weight decay as an L2 term on the grad; per param with its
    own update count k::

        g  += weight_decay * p                     (when weight_decay != 0)
        m   = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        v^  = max(v^, v) if amsgrad else v
        p  -= lr_t / (1 - beta1^k) * m / (sqrt(v^) / sqrt(1 - beta2^k) + eps)

    ``lr_t = schedule(step)`` scales each group's ``lr``, evaluated inside the
    kernel from an int64 step counter on the params' device. State (exp_avg,
    exp_avg_sq, max_exp_avg_sq) has the param's dtype, maths runs in fp32
    (fp64 for fp64 params). ``beta1_schedule`` / ``weight_decay_schedule``
    (None: constant) move ``betas[0]`` / ``weight_decay`` from the same step
    counter (the bias correction uses the current beta1, as torch does when a
    scheduler cycles it). See :class:`fusedlr.SGD` for ``schedule``,
    ``max_grad_norm``, ``master_weights``, ``state_dtype``,
    ``stochastic_rounding``, ``backend`` and the accepted torch flags;
    ``decoupled_weight_decay=True`` is :class:`fusedlr.AdamW`.
    """

    spec = specs.ADAM

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 schedule=None, beta1_schedule=None, weight_decay_schedule=None, backend: str | None = None,
                 max_grad_norm: float | None = None, norm_type: float = 2.0, master_weights: bool | str = False,
                 state_dtype: torch.dtype | None = None, stochastic_rounding: bool = False, foreach=None,
                 capturable: bool = False, differentiable: bool = False, fused=None,
                 decoupled_weight_decay: bool | None = None):
        check_torch_flags(differentiable)
        decoupled = self.spec is specs.ADAMW
        if decoupled_weight_decay is not None and bool(decoupled_weight_decay) != decoupled:
            raise ValueError(f"decoupled_weight_decay={decoupled_weight_decay!r}: that is fusedlr."
                             f"{'Adam' if decoupled else 'AdamW'} (same arguments); fusedlr.{self.spec.class_name}'s "
                             f"weight decay is {'decoupled' if decoupled else 'an L2 term on the grad'}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, schedule=schedule, beta1_schedule=beta1_schedule,
                        weight_decay_schedule=weight_decay_schedule)
        self.check_group(defaults)
        super().__init__(params, defaults, backend, max_grad_norm, norm_type, master_weights, state_dtype,
                         stochastic_rounding)

    def check_group(self, group: dict) -> None:
        group["lr"] = check.nonnegative("lr", _number(group["lr"]))
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = (check.in_range("betas[0]", _number(betas[0]), 0, 1, high_open=True),
                          check.in_range("betas[1]", _number(betas[1]), 0, 1, high_open=True))
        group["eps"] = check.nonnegative("eps", group["eps"])
        group["weight_decay"] = check.nonnegative("weight_decay", group["weight_decay"])
        if group["amsgrad"] and getattr(self, "state_dtype", None) == block_states.INT8:
            raise ValueError("amsgrad=True is not supported with state_dtype='int8' (8-bit exp_avg and exp_avg_sq "
                             "only); use state_dtype=None or torch.bfloat16")

    def complete_state(self, param: torch.Tensor, group: dict, state: dict) -> None:
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        for name in names:
            if state.get(name) is None:
                state[name] = self.new_state_tensor(param)
