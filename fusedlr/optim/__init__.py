"""Fused optimizers whose lr schedule runs inside the update kernel."""
from .adam import Adam
from .adamw import AdamW
from .scheduler_view import SchedulerView
from .sgd import SGD

__all__ = ["Adam", "AdamW", "SGD", "SchedulerView"]
