"""Lightning's LearningRateMonitor for fusedlr optimizers (needs Lightning:
``pytorch_lightning`` or ``lightning.pytorch``). Lightning's own monitor reads
``group["lr"]``, which for a fusedlr optimizer is the base lr its schedule
scales; this one logs the lr the optimizer applies."""
from __future__ import annotations

import importlib
import sys

from .optim.base import FusedOptimizer


def _lightning():
    """The Lightning package in use: the one already imported, else whichever is installed."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if name in sys.modules:
            return sys.modules[name]
    for name in ("pytorch_lightning", "lightning.pytorch"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("fusedlr.lightning needs Lightning: pip install pytorch-lightning (or lightning)")


class _AppliedLrs:
    """An optimizer's groups as Lightning's monitor reads them, with each group's
    lr replaced by the one the next step applies."""

    def __init__(self, optimizer: FusedOptimizer):
        lrs = optimizer.current_lr.tolist()  # one device read per logged step
        self.param_groups = [dict(group, lr=lr) for group, lr in zip(optimizer.param_groups, lrs)]
        self.defaults = optimizer.defaults


class LearningRateMonitor(_lightning().callbacks.LearningRateMonitor):
    """``lightning``'s ``LearningRateMonitor`` (same names, intervals and
    options) that logs, for a fusedlr optimizer, the lr each group's next step
    applies (``opt.current_lr``) instead of ``group["lr"]``, fusedlr's base lr;
    other optimizers as Lightning's monitor does."""

    def _get_optimizer_stats(self, optimizer, names):
        if isinstance(optimizer, FusedOptimizer):
            optimizer = _AppliedLrs(optimizer)
        return super()._get_optimizer_stats(optimizer, names)
