"""``from_torch``: a constructed torch.optim.lr_scheduler object as a fusedlr schedule."""
from __future__ import annotations

import warnings

from torch.optim import lr_scheduler as tls

from .base import Schedule
from .base import Chain, PerGroup, Sequential
from .families import (Constant, Cosine, CosineRestarts, Cyclic, Exponential, Linear, MultiStep, OneCycle,
                       Polynomial, Step)
from .plateau import Plateau

# Chained schedulers that scale the current lr by a ratio (so chaining multiplies).
_MULTIPLICATIVE = (tls.StepLR, tls.MultiStepLR, tls.ConstantLR, tls.LinearLR, tls.ExponentialLR,
                   tls.PolynomialLR, tls.CosineAnnealingLR, tls.ChainedScheduler)


_CONVERTIBLE = (tls.StepLR, tls.MultiStepLR, tls.ConstantLR, tls.LinearLR, tls.ExponentialLR, tls.PolynomialLR,
                tls.CosineAnnealingLR, tls.CosineAnnealingWarmRestarts, tls.CyclicLR, tls.OneCycleLR, tls.SequentialLR,
                tls.ChainedScheduler, tls.LambdaLR, tls.MultiplicativeLR, tls.ReduceLROnPlateau)
# what a subclass must leave alone for the conversion of its torch class to hold
_LR_METHODS = ("get_lr", "_get_closed_form_lr", "step", "_reduce_lr", "_is_better", "scale_fn")


def from_torch(scheduler, hyperparameter: str = "lr") -> Schedule:
    """The fusedlr schedule equal to ``scheduler`` from step 0.

    Evaluate it with ``torch_base_lrs(scheduler)`` (the groups' ``initial_lr``).
    Supported: StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR,
    PolynomialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR,
    OneCycleLR, SequentialLR, ChainedScheduler, ReduceLROnPlateau (as a
    ``Plateau`` with a fresh state: report metrics with ``opt.report``).
    Anything else raises TypeError, as does a subclass that overrides how
    its torch class computes the lr.

    OneCycleLR and CyclicLR give absolute values (torch overwrites the
    group's lr with them), so the lr given to the fusedlr optimizer does not
    change them; the others scale the fusedlr group's lr as torch scales its
    ``initial_lr``.

    ``hyperparameter="momentum"``: the momentum (SGD) / beta1 (Adam) cycle of a
    OneCycleLR or CyclicLR built with ``cycle_momentum=True``, for
    ``momentum_schedule=`` / ``beta1_schedule=`` (absolute values).
    """
    _check_not_overridden(scheduler)
    if hyperparameter == "momentum":
        return _momentum(scheduler)
    if hyperparameter != "lr":
        raise ValueError(f"hyperparameter must be 'lr' or 'momentum', got {hyperparameter!r}")
    groups = scheduler.optimizer.param_groups if hasattr(scheduler, "optimizer") else []
    if isinstance(scheduler, tls.StepLR):
        return Step(scheduler.step_size, scheduler.gamma)
    if isinstance(scheduler, tls.MultiStepLR):
        return MultiStep(list(scheduler.milestones.elements()), scheduler.gamma)
    if isinstance(scheduler, tls.ConstantLR):
        return Constant(scheduler.factor, scheduler.total_iters)
    if isinstance(scheduler, tls.LinearLR):
        return Linear(scheduler.start_factor, scheduler.end_factor, scheduler.total_iters)
    if isinstance(scheduler, tls.ExponentialLR):
        return Exponential(scheduler.gamma)
    if isinstance(scheduler, tls.PolynomialLR):
        return Polynomial(scheduler.total_iters, scheduler.power)
    if isinstance(scheduler, tls.CosineAnnealingLR):
        # torch keeps following the cosine past T_max, back up to the base lr.
        return Cosine(scheduler.T_max, scheduler.eta_min, periodic=True)
    if isinstance(scheduler, tls.CosineAnnealingWarmRestarts):
        return CosineRestarts(scheduler.T_0, scheduler.T_mult, scheduler.eta_min)
    if isinstance(scheduler, tls.CyclicLR):
        return _cyclic(scheduler)
    if isinstance(scheduler, tls.OneCycleLR):
        return _one_cycle(scheduler, groups)
    if isinstance(scheduler, tls.SequentialLR):
        for i, child in enumerate(scheduler._schedulers[1:], start=1):
            if isinstance(child, (tls.SequentialLR, tls.ChainedScheduler)):
                raise TypeError(
                    f"SequentialLR has a {type(child).__name__} at position {i}: torch cannot restart it at a "
                    "milestone, so it has no defined schedule (only position 0 may hold one)"
                )
        if isinstance(scheduler._schedulers[0], (tls.SequentialLR, tls.ChainedScheduler)):
            warnings.warn(
                f"SequentialLR starts with a nested {type(scheduler._schedulers[0]).__name__}: torch's own "
                "stepping of such nests runs the inner schedulers one step out of phase (its constructor "
                "undoes their initial step twice); the converted schedule follows the documented "
                "SequentialLR semantics (inner schedule from step 0) instead",
                UserWarning,
                stacklevel=2,
            )
        return Sequential([from_torch(s) for s in scheduler._schedulers], list(scheduler._milestones))
    if isinstance(scheduler, tls.ChainedScheduler):
        return _chained(scheduler)
    if isinstance(scheduler, (tls.LambdaLR, tls.MultiplicativeLR)):
        raise TypeError(
            f"{type(scheduler).__name__} runs an arbitrary Python function, which cannot be evaluated on "
            "the device; write the schedule with fusedlr.schedules instead"
        )
    if isinstance(scheduler, tls.ReduceLROnPlateau):
        return _plateau(scheduler)
    raise TypeError(f"cannot convert {type(scheduler).__name__}: not a supported torch.optim.lr_scheduler class")


def _check_not_overridden(scheduler) -> None:
    cls = type(scheduler)
    base = next((c for c in cls.__mro__ if c in _CONVERTIBLE), None)
    if base is None or base is cls:
        return
    changed = [name for name in _LR_METHODS
               if hasattr(base, name) and getattr(cls, name) is not getattr(base, name)]
    if changed:
        raise TypeError(f"cannot convert {cls.__name__}: it overrides {', '.join(changed)} of torch's "
                        f"{base.__name__}, so its lrs may differ from {base.__name__}'s; write the schedule "
                        "with fusedlr.schedules instead")


def torch_base_lrs(scheduler) -> list[float]:
    """The base lrs torch schedules from: each param group's ``initial_lr``."""
    return [float(group["initial_lr"]) for group in scheduler.optimizer.param_groups]


def _per_group_or_one(schedules: list[Schedule]) -> Schedule:
    first = repr(schedules[0])
    return schedules[0] if all(repr(s) == first for s in schedules) else PerGroup(schedules)


def _cyclic(scheduler, targets_and_starts=None) -> Schedule:
    """CyclicLR's lr cycle (from each group's base_lr to its max_lr: torch
    overwrites the group lr with base_lr, so it is absolute here too), or the
    cycle from each (target, start) pair given."""
    if getattr(scheduler, "_scale_fn_custom", None) is not None:
        raise TypeError("CyclicLR with a custom scale_fn runs Python code per step and cannot be converted")
    schedules = []
    for target, start in targets_and_starts or zip(scheduler.max_lrs, scheduler.base_lrs):
        cyc = Cyclic(float(target), step_size_up=scheduler.total_size * scheduler.step_ratio,
                     step_size_down=scheduler.total_size * (1 - scheduler.step_ratio),
                     mode=scheduler.mode, gamma=scheduler.gamma, start=float(start))
        # Keep torch's own stored values so the arithmetic matches bit for bit.
        schedules.append(cyc._evolve(total_size=scheduler.total_size, step_ratio=scheduler.step_ratio))
    return _per_group_or_one(schedules)


def _one_cycle(scheduler, groups, value: str = "lr") -> Schedule:
    """OneCycleLR's cycle of each group's ``value`` ("lr" or "momentum"), with
    torch's own phase ends and phase values."""
    anneal = getattr(scheduler, "_anneal_func_type", None)
    if anneal is None:  # older torch stored the function itself
        anneal = "cos" if "cos" in scheduler.anneal_func.__name__ else "linear"
    phases = scheduler._schedule_phases
    cycles = []
    for group in groups:
        cycle = OneCycle(group["max_lr"], scheduler.total_steps, anneal_strategy=anneal,
                         three_phase=len(phases) == 3)
        cycles.append(cycle._evolve(
            phase_ends=tuple(float(p["end_step"]) for p in phases),
            phase_lrs=(group[phases[0][f"start_{value}"]],) + tuple(group[p[f"end_{value}"]] for p in phases)))
    return _per_group_or_one(cycles)


def _momentum(scheduler) -> Schedule:
    if not isinstance(scheduler, (tls.OneCycleLR, tls.CyclicLR)) or not scheduler.cycle_momentum:
        raise TypeError(f"{type(scheduler).__name__} does not cycle momentum; only OneCycleLR and CyclicLR "
                        "built with cycle_momentum=True do")
    groups = scheduler.optimizer.param_groups
    if isinstance(scheduler, tls.CyclicLR):
        # torch: max_momentum - (max_momentum - base_momentum) * scale, the lr's cycle mirrored
        return _cyclic(scheduler, [(g["base_momentum"], g["max_momentum"]) for g in groups])
    return _one_cycle(scheduler, groups, "momentum")


def _plateau(scheduler) -> Plateau:
    min_lrs = [float(v) for v in scheduler.min_lrs]
    return Plateau(scheduler.mode, scheduler.factor, scheduler.patience, scheduler.threshold,
                   scheduler.threshold_mode, scheduler.cooldown,
                   min_lrs[0] if len(set(min_lrs)) == 1 else min_lrs, scheduler.eps)


def _chained(scheduler) -> Schedule:
    for i, child in enumerate(scheduler._schedulers):
        if not isinstance(child, _MULTIPLICATIVE):
            raise TypeError(
                f"ChainedScheduler holds a {type(child).__name__} at position {i}; torch chains it by "
                "overwriting or resetting the lr, which is not a product of schedules"
            )
        if isinstance(child, tls.CosineAnnealingLR) and child.eta_min != 0:
            raise TypeError(
                f"ChainedScheduler holds CosineAnnealingLR(eta_min={child.eta_min}) at position {i}: with "
                "eta_min != 0 torch's chained update is not a product of schedules"
            )
    return Chain([from_torch(s) for s in scheduler._schedulers])
