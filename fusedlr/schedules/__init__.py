"""Learning-rate schedules evaluated in closed form from the step count.

Every schedule compiles to a small packed program (``Schedule.pack()``) that
the native CPU and CUDA evaluators run; ``values(..., backend="reference")``
evaluates the same schedule with plain torch ops as an independent oracle.
"""
from .base import Chain, PerGroup, Schedule, Sequential
from .compose import group_multipliers, warmup, warmup_stable_decay, with_warmup
from .families import (Anneal, Constant, Cosine, CosineRestarts, Cyclic, Exponential, InverseSqrt, InverseTime,
                       Linear, MultiStep, OneCycle, Piecewise, Polynomial, RangeTest, Step,
                       cosine_decay_with_min, cyclic_momentum, noam, one_cycle_momentum)
from .hf import get_scheduler
from .plateau import Plateau
from .plot import plot_schedules
from .torch_convert import from_torch, torch_base_lrs

__all__ = [
    "Schedule", "Chain", "PerGroup", "Sequential", "group_multipliers", "warmup", "warmup_stable_decay",
    "with_warmup", "Anneal", "Constant", "Cosine", "CosineRestarts", "Cyclic", "Exponential", "InverseSqrt",
    "InverseTime", "Linear", "MultiStep", "OneCycle", "Piecewise", "Plateau", "Polynomial", "RangeTest", "Step",
    "cosine_decay_with_min", "cyclic_momentum", "noam", "one_cycle_momentum", "get_scheduler", "plot_schedules", "from_torch", "torch_base_lrs",
]
