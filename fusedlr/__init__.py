"""fusedlr: fused optimizers whose learning-rate schedule runs on the device."""
from . import schedules
from ._native import available_backends, build_info
from .optim import SGD, Adam, AdamW, SchedulerView
from .optim.history import log_history, plot_history
from .lr_finder import lr_find
from .param_groups import fold_lr_scale, layer_decay_param_groups

__all__ = ["SGD", "Adam", "AdamW", "SchedulerView", "schedules", "available_backends", "build_info",
           "layer_decay_param_groups", "fold_lr_scale", "lr_find", "log_history",
           "plot_history"]
__version__ = "0.1.0"
