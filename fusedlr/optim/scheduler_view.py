"""A torch ``LRScheduler`` face for a fusedlr optimizer, for the trainers that
want a scheduler object (HF Trainer, accelerate, Lightning): its ``step()``
moves nothing (the schedule runs on the device, inside the optimizer's step)
and ``get_last_lr()`` reads the optimizer's lrs."""
from __future__ import annotations

import torch

from .base import FusedOptimizer


class SchedulerView(torch.optim.lr_scheduler.LRScheduler):
    """``SchedulerView(opt)``: what to hand a trainer as the lr scheduler of a
    fusedlr optimizer, e.g. ``Trainer(optimizers=(opt, SchedulerView(opt)))``.

    ``step()`` only counts its calls (``last_epoch``); the optimizer's own
    device counter drives the schedule. ``get_last_lr()`` returns each param
    group's lr as a torch scheduler's would: called after ``opt.step()`` and
    before the scheduler's ``step()`` (where HF Trainer logs), the lr that
    step applied (with several steps in between, the last one's); after
    both, the lr of the coming step (``opt.current_lr``).
    It reads the device only when called, so a loop that does not log never
    syncs. Unlike a torch scheduler it never
    writes ``group["lr"]`` (fusedlr's base lr) nor ``group["initial_lr"]``.
    Its ``state_dict()`` holds only ``last_epoch``: the schedule's state is
    saved with the optimizer's."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, FusedOptimizer):
            raise TypeError(f"SchedulerView needs a fusedlr optimizer, got {type(optimizer).__name__}; a "
                            "torch.optim optimizer takes a torch.optim.lr_scheduler scheduler")
        # not LRScheduler.__init__: it would write initial_lr and wrap opt.step
        self.optimizer = optimizer
        self._step_calls_seen = optimizer._step_calls  # optimizer steps taken when this view last stepped
        self.last_epoch = 0
        self._step_count = 1

    @property
    def base_lrs(self) -> list[float]:
        """Each group's base lr (``group["lr"]``), which its schedule scales."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """Each group's lr at the schedule step this scheduler is at (one device read)."""
        opt = self.optimizer
        if opt._step_calls == self._step_calls_seen:
            lrs = opt.current_lr
        else:  # opt.step() ran since this view's step(): the lr of that step (one GradScaler skipped is not counted)
            lrs = opt.lrs_at((opt.step_count - opt.last_step_applied.to(torch.int64)).clamp_min(0))
        return [float(lr) for lr in lrs.tolist()]

    def get_lr(self) -> list[float]:
        return self.get_last_lr()

    def step(self, epoch=None) -> None:
        """Count the call; the schedule already moved with the optimizer's step."""
        if epoch is not None:
            raise ValueError("SchedulerView.step() takes no epoch: the schedule follows the optimizer's step "
                             "counter; write opt.step_count.fill_(n) to move it")
        self._step_count += 1
        self.last_epoch += 1
        self._step_calls_seen = self.optimizer._step_calls

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = int(state_dict.get("last_epoch", 0))
