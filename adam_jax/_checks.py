"""Argument checks shared by every factory: clear errors at construction time.

Concrete values are checked: Python and NumPy numbers and 0-d arrays, and jax arrays
that are not being traced (so ``optax.inject_hyperparams`` values are checked when
its ``init`` runs outside ``jit``). Traced arrays and schedules pass through
unchecked, because their values are not known when the transform is built.
Booleans, strings, ``None`` and arrays that are not 0-d (a shape-(1,) array included:
it would broadcast a 0-d leaf to shape (1,)) are not numbers and are refused with a
``TypeError`` naming the argument.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def is_bool(value: Any) -> bool:
    """A Python or NumPy boolean (a subclass of int that no numeric argument should accept)."""
    return isinstance(value, (bool, np.bool_))


def _is_number_dtype(dtype: Any, complex_ok: bool) -> bool:
    """Integers and floats, bfloat16 and the other ml_dtypes floats included (NumPy gives those kind 'V')."""
    return np.dtype(dtype).kind in ('fiuc' if complex_ok else 'fiu') or jnp.issubdtype(
        dtype, jnp.inexact if complex_ok else jnp.floating
    )


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array when it is a number known now (Python, NumPy, or a jax array not being traced);
    None for a traced value, a boolean or anything that is not a number."""
    if isinstance(value, jax.core.Tracer) or is_bool(value):
        return None
    if isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array)):
        array = np.asarray(value)
        return array if _is_number_dtype(array.dtype, complex_ok=True) else None
    return None


def is_known_zero(value: Any) -> bool:
    """Whether ``value`` is known, now, to be 0 (everywhere)."""
    array = concrete(value)
    return array is not None and bool(np.all(array == 0))


def is_known_nonzero(value: Any) -> bool:
    """Whether ``value`` is known, now, to be non-zero somewhere."""
    array = concrete(value)
    return array is not None and bool(np.any(array != 0))


def _concrete_number(name: str, value: Any) -> float | None:
    """``value`` as a float, ``None`` if it is traced (unknown until run time); ``TypeError`` if not a number."""
    if isinstance(value, jax.core.Tracer):
        return None
    if is_bool(value):
        raise TypeError(f'{name} must be a real number, got the boolean {value!r}.')
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if value.ndim != 0:
            raise TypeError(f'{name} must be a scalar, got an array of shape {tuple(value.shape)}.')
        if not _is_number_dtype(value.dtype, complex_ok=False):
            raise TypeError(f'{name} must be a real number, got a 0-d array of dtype {value.dtype}.')
        return float(value)
    raise TypeError(f'{name} must be a real number, got {value!r} of type {type(value).__name__}.')


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
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` is out of range (``TypeError`` if not a number).

    NaN and infinite values are always rejected.
    """
    x = _concrete_number(name, value)
    if x is None:
        return
    allowed = _describe(low, high, low_inclusive, high_inclusive)
    if not math.isfinite(x):
        raise ValueError(f'{name} must be a finite number in {allowed}, got {value!r}.')
    too_low = low is not None and (x < low or (x == low and not low_inclusive))
    too_high = high is not None and (x > high or (x == high and not high_inclusive))
    if too_low or too_high:
        dtype = getattr(value, 'dtype', None)
        hint = ''
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
            hint = (
                f' ({dtype} has {jnp.finfo(dtype).nmant} mantissa bits: values such as 0.999 round to 1; keep'
                ' hyperparameters in float32, e.g. optax.inject_hyperparams(..., hyperparam_dtype=jnp.float32))'
            )
        raise ValueError(f'{name} must be in {allowed}, got {value!r}{hint}.')


def check_decay(name: str, value: Any) -> None:
    """A decay rate of an exponential moving average: ``0 <= value < 1``."""
    check_range(name, value, 0.0, 1.0, high_inclusive=False)


def check_nonnegative(name: str, value: Any) -> None:
    check_range(name, value, 0.0, None)


def check_rate_or_schedule(name: str, value: Any) -> None:
    """A rate >= 0 (a weight decay), or a schedule: any callable, not called here."""
    if not callable(value):
        check_nonnegative(name, value)


def check_learning_rate(value: Any, name: str = 'learning_rate') -> None:
    """A constant learning rate must be a finite number; a schedule (any callable) is not called here."""
    if not callable(value):
        check_range(name, value)


def check_int(name: str, value: Any, minimum: int = 1) -> None:
    """A count or size: a Python or NumPy integer >= ``minimum`` (not a bool)."""
    if is_bool(value) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = {1: 'a positive int', 0: 'a non-negative int'}.get(minimum, f'an int >= {minimum}')
        hint = (
            '; a size cannot be an array (with optax.inject_hyperparams, list it in static_args)'
            if hasattr(value, 'shape') and not isinstance(value, numbers.Integral)
            else ''
        )
        raise ValueError(f'{name} must be {kind}, got {value!r}{hint}.')


def check_bool(name: str, value: Any) -> None:
    """A flag: ``True`` or ``False`` (a Python or NumPy boolean, or a concrete boolean scalar array). A string such as
    ``'no'`` or ``'False'`` is truthy, and a number is not a flag: both raise a ``TypeError`` naming ``name``."""
    if is_bool(value) or (getattr(value, 'dtype', None) == np.bool_ and np.ndim(value) == 0):
        return
    raise TypeError(f'{name} must be a bool (True or False), got {value!r}.')


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}.')


def check_mask(name: str, value: Any) -> None:
    """A mask as optax.masked takes it: None, a function of the params, or a tree of booleans (maybe a prefix of
    the params tree; 0/1 integers too, which optax reads by truth). Its leaves are checked now; a function's
    result only when it is called."""
    if value is None or callable(value):
        return
    for leaf in jax.tree.leaves(value):
        flag_array = isinstance(leaf, (np.ndarray, np.generic, jax.Array)) and np.dtype(leaf.dtype).kind in 'biu'
        if not (isinstance(leaf, numbers.Integral) or flag_array):
            raise TypeError(
                f'{name} must be None, a tree of booleans shaped like the params (or a prefix of it) or a function '
                f'of the params returning one, got {value!r} (a leaf {leaf!r} of type {type(leaf).__name__}).'
            )


def check_transformation(name: str, value: Any) -> None:
    """An optax transform: ``TypeError`` naming ``name`` otherwise (with a hint when a factory was passed)."""
    if isinstance(value, optax.GradientTransformation):
        return
    if callable(getattr(value, 'init', None)) and callable(getattr(value, 'update', None)):
        return
    hint = '; a factory such as adam_jax.adam must be called first, e.g. adam_jax.adam(1e-3)' if callable(value) else ''
    raise TypeError(f'{name} must be an optax.GradientTransformation (with init and update), got {value!r}{hint}.')


def float_dtype(name: str, value: Any, *, complex_ok: bool = True, others: str = '') -> np.dtype:
    """``value`` as the dtype of a moment kept in floating point: float16, bfloat16, float32 or float64 (and
    complex64 / complex128 if ``complex_ok``). Anything else, integer and 8-bit float types included (they need
    a scale to hold a moment: see :mod:`adam_jax.quantization`), is refused naming ``name``; ``others`` lists
    what else the caller accepts, for the message."""
    allowed = 'a floating dtype of 16 bits or more (float32, bfloat16, float16, float64' + (
        ', complex64, complex128)' if complex_ok else ')'
    )
    message = f'{name} must be {allowed}{others} or None, got {value!r}.'
    if isinstance(value, (jax.Array, np.ndarray)):  # optax.inject_hyperparams turns a dtype argument into one
        value = value.dtype
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(message) from None
    kinds = jnp.inexact if complex_ok else jnp.floating
    if not jnp.issubdtype(dtype, kinds) or jnp.finfo(dtype).bits < 16:
        raise ValueError(message)
    return np.dtype(dtype)
