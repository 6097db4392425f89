"""Refusing a torch LRScheduler attached to a fusedlr optimizer that already
follows a schedule (the two would multiply; see SchedulerView for what to use)."""
from __future__ import annotations

from ..schedules import Constant


def follows_schedule(group: dict) -> bool:
    """True when the group's lr follows a schedule (anything but the constant default)."""
    schedule = group.get("schedule")
    return schedule is not None and not (type(schedule) is Constant and schedule.factor == 1.0)


def refuse_torch_scheduler(param_groups: list[dict]) -> None:
    """Raise when a torch LRScheduler (it leaves ``initial_lr`` in every group)
    drives ``group["lr"]`` of a group that follows a fusedlr schedule: the two
    would multiply, silently (e.g. HF Trainer's default linear schedule over a
    fusedlr warmup squares the warmup)."""
    for g, group in enumerate(param_groups):
        if "initial_lr" in group and follows_schedule(group):
            raise RuntimeError(
                f"param_groups[{g}] has 'initial_lr': a torch.optim.lr_scheduler (e.g. LambdaLR, or the one HF "
                "Trainer builds when given none) is attached to this fusedlr optimizer, which already follows "
                "schedule=...; the torch scheduler rewrites group['lr'], fusedlr's base lr, so both schedules would "
                "apply. Drop the torch scheduler (convert it with fusedlr.schedules.from_torch(...) and pass it as "
                "schedule=), and where a trainer needs a scheduler object give it fusedlr.SchedulerView(opt), e.g. "
                "Trainer(optimizers=(opt, fusedlr.SchedulerView(opt))). To drive group['lr'] with a torch scheduler "
                "instead, build the optimizer without schedule=")
