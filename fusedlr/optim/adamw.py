"""fusedlr.AdamW: torch.optim.AdamW with the lr schedule evaluated in the kernel."""
from __future__ import annotations

from . import specs
from .adam import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay (AMSGrad optional), with torch.optim.AdamW's
    arguments, defaults (``weight_decay=1e-2``) and update rule, per param with
    its own update count k::

        p  *= 1 - lr_t * weight_decay
        m   = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        v^  = max(v^, v) if amsgrad else v
        p  -= lr_t / (1 - beta1^k) * m / (sqrt(v^) / sqrt(1 - beta2^k) + eps)

    Every other argument as :class:`fusedlr.Adam` (as torch.optim.AdamW
    subclasses torch.optim.Adam).
    """

    spec = specs.ADAMW

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **options)
