"""Argument validation shared by the schedule constructors.

Every check raises at construction with the argument's name and the range it
accepts, so a bad value never reaches a kernel.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence


def real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {value} (too large for a float)") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def in_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False) -> float:
    """A finite real in [low, high] (bounds optional; *_open excludes the bound)."""
    value = real(name, value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return value


def positive(name: str, value) -> float:
    return in_range(name, value, 0, None, low_open=True)


def nonnegative(name: str, value) -> float:
    return in_range(name, value, 0, None)


#: step counts are int64 on the device
MAX_STEPS = 2 ** 63 - 1


def integer(name: str, value, minimum: int, maximum: int = MAX_STEPS) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    if value > maximum:
        bound = "2**63 - 1" if maximum == MAX_STEPS else maximum
        raise ValueError(f"{name} must be an int <= {bound}, got {value}")
    return int(value)


def choice(name: str, value, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def increasing(name: str, values, *, minimum: float = 0) -> list[float]:
    """A non-empty, strictly increasing list of finite numbers >= minimum."""
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    if not values:
        raise ValueError(f"{name} must not be empty")
    values = [in_range(f"{name}[{i}]", v, minimum) for i, v in enumerate(values)]
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise ValueError(
                f"{name} must be strictly increasing, got {values[i - 1]} then {values[i]} "
                f"at index {i}"
            )
    return values
