"""Argument checks shared by every factory: clear errors at construction time.

Only concrete Python or NumPy numbers are checked. Traced arrays (from
``optax.inject_hyperparams``), jax arrays and schedules pass through unchecked,
because their values are not known when the transform is built.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def _concrete_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in 'fiu':
        return float(value)
    return None


def _describe(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    left = '(-inf' if low is None else ('[' if low_inclusive else '(') + repr(low)
    right = 'inf)' if high is None else repr(high) + (']' if high_inclusive else ')')
    return f'{left}, {right}'


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` is out of range.

    NaN and infinite values are always rejected.
    """
    x = _concrete_number(value)
    if x is None:
        return
    allowed = _describe(low, high, low_inclusive, high_inclusive)
    if not math.isfinite(x):
        raise ValueError(f'{name} must be a finite number in {allowed}, got {value!r}.')
    too_low = low is not None and (x < low or (x == low and not low_inclusive))
    too_high = high is not None and (x > high or (x == high and not high_inclusive))
    if too_low or too_high:
        raise ValueError(f'{name} must be in {allowed}, got {value!r}.')


def check_decay(name: str, value: Any) -> None:
    """A decay rate of an exponential moving average: ``0 <= value < 1``."""
    check_range(name, value, 0.0, 1.0, high_inclusive=False)


def check_nonnegative(name: str, value: Any) -> None:
    check_range(name, value, 0.0, None)


def check_learning_rate(value: Any) -> None:
    """A constant learning rate must be finite; a schedule is not called here."""
    if not callable(value):
        check_range('learning_rate', value)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}.')
