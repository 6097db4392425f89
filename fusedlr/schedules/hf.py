"""Hugging Face ``get_scheduler`` names mapped onto fusedlr schedules."""
from __future__ import annotations

from . import _checks as check
from .base import Schedule
from .base import Sequential
from .compose import warmup_stable_decay, with_warmup
from .families import Anneal, Constant, Cosine, CosineRestarts, InverseSqrt, Polynomial, cosine_decay_with_min
from .plateau import Plateau

NAMES = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "reduce_lr_on_plateau",
)
_NEEDS_TRAINING_STEPS = {"linear", "cosine", "cosine_with_restarts", "polynomial", "cosine_with_min_lr"}


def get_scheduler(name: str, num_warmup_steps: int | None = None, num_training_steps: int | None = None,
                  scheduler_specific_kwargs: dict | None = None, **kwargs) -> Schedule:
    """The schedule HF ``transformers.get_scheduler(name, ...)`` would build, as
    a factor of each group's base lr. Extra keyword arguments (or
    ``scheduler_specific_kwargs``) are the HF ones: ``num_cycles``, ``power``,
    ``lr_end``, ``timescale``, ``min_lr``, ``min_lr_rate``, ``num_decay_steps``,
    ``num_stable_steps``, ``warmup_type``, ``decay_type``, ``min_lr_ratio``.

    Unlike HF, every schedule holds its final value after ``num_training_steps``.
    """
    options = {**(scheduler_specific_kwargs or {}), **kwargs}
    if name == "reduce_lr_on_plateau":  # HF passes its kwargs to ReduceLROnPlateau, without warmup
        return Plateau(**options)
    check.choice("name", name, NAMES)
    if name == "constant":
        return _no_more(name, options) or Constant(1.0)

    warmup_steps = check.integer("num_warmup_steps", 0 if num_warmup_steps is None else num_warmup_steps, 0)
    if name == "warmup_stable_decay":
        return warmup_stable_decay(warmup_steps, num_training_steps=num_training_steps, **options)
    if name == "constant_with_warmup":
        return _no_more(name, options) or with_warmup(Constant(1.0), warmup_steps)
    if name == "inverse_sqrt":
        timescale = options.pop("timescale", None)
        _no_more(name, options)
        return with_warmup(InverseSqrt(timescale if timescale is not None else (warmup_steps or 10_000)), warmup_steps)

    if num_training_steps is None:
        raise ValueError(f"{name} requires num_training_steps")
    total = check.integer("num_training_steps", num_training_steps, 1)
    if warmup_steps >= total:
        raise ValueError(
            f"num_warmup_steps ({warmup_steps}) must be < num_training_steps ({total}) for {name}"
        )
    decay_steps = total - warmup_steps
    if name == "linear":
        body: Schedule = Anneal(1.0, 0.0, decay_steps, "linear")
    elif name == "cosine":
        body = Cosine(decay_steps, num_cycles=options.pop("num_cycles", 0.5))
    elif name == "cosine_with_min_lr":
        body = cosine_decay_with_min(decay_steps, options.pop("min_lr", None), options.pop("min_lr_rate", None),
                                     num_cycles=options.pop("num_cycles", 0.5))
    elif name == "cosine_with_restarts":
        cycles = check.positive("num_cycles", options.pop("num_cycles", 1))
        body = Sequential([CosineRestarts(decay_steps / cycles), Constant(0.0)], [decay_steps])
    else:  # polynomial
        body = Polynomial(decay_steps, power=options.pop("power", 1.0), end_lr=options.pop("lr_end", 1e-7))
    _no_more(name, options)
    return with_warmup(body, warmup_steps)


def _no_more(name: str, options: dict) -> None:
    if options:
        raise TypeError(f"unexpected arguments for {name!r}: {sorted(options)}")
