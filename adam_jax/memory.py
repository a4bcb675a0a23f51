"""How many bytes an optimizer state takes, in total and by kind."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adam_jax import factored, quantization


class StateBytes(NamedTuple):
    """Result of :func:`state_nbytes`.

    Attributes:
      total: bytes of every array in the state.
      by_kind: bytes per kind of array: ``'int8 codes'`` / ``'uint8 codes'`` and
        ``'absmax'`` for 8-bit quantized moments, ``'factored float32'`` for the
        row and column statistics of a factored moment, otherwise the dtype name
        (``'float32'``, ``'bfloat16'``, ``'int32'`` for step counts, ...).
    """

    total: int
    by_kind: dict[str, int]


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _itemsize(dtype: Any) -> int:
    return dtype.itemsize if _is_key(dtype) else np.dtype(dtype).itemsize  # a typed PRNG key: its key data


def _kind(dtype: Any) -> str:
    return str(dtype) if _is_key(dtype) else np.dtype(dtype).name


def _nbytes(x: Any) -> int:
    return math.prod(x.shape) * _itemsize(x.dtype)


def state_nbytes(state: Any) -> StateBytes:
    """Bytes of an optimizer state (or any pytree of arrays), total and by kind.

    Works on concrete arrays and on ``jax.ShapeDtypeStruct`` s, so the state of
    a model too large to allocate can be measured with
    ``state_nbytes(jax.eval_shape(opt.init, params))``. Sharded arrays count at
    their global size. With ``flax.nnx.Optimizer`` pass ``optimizer.opt_state``: ``nnx.state(optimizer)``
    also holds nnx's own step counter, and its variables no longer say which arrays are 8-bit codes (the
    total is the same, the kinds are plain dtypes).
    """
    by_kind: dict[str, int] = {}

    def add(kind: str, nbytes: int) -> None:
        by_kind[kind] = by_kind.get(kind, 0) + nbytes

    for leaf in jax.tree.leaves(state, is_leaf=lambda x: quantization.is_quantized(x) or factored.is_factored(x)):
        if factored.is_factored(leaf):
            add(f'factored {np.dtype(leaf.row.dtype).name}', _nbytes(leaf.row) + _nbytes(leaf.col))
        elif quantization.is_quantized(leaf):
            add(f'{np.dtype(leaf.codes.dtype).name} codes', _nbytes(leaf.codes))
            add('absmax', _nbytes(leaf.absmax))
        elif hasattr(leaf, 'shape') and hasattr(leaf, 'dtype'):
            add(_kind(leaf.dtype), _nbytes(leaf))
        elif isinstance(leaf, (bool, int, float, complex)) and not isinstance(leaf, np.generic):
            scalar = jax.eval_shape(jnp.asarray, leaf)  # a Python number (flax TrainState's step before a step)
            add(_kind(scalar.dtype), _nbytes(scalar))
        else:
            raise TypeError(
                f'state_nbytes counts arrays (or jax.ShapeDtypeStruct), and the state holds {leaf!r} of type '
                f'{type(leaf).__name__}. Pass an optimizer state, e.g. opt.init(params).'
            )
    return StateBytes(total=sum(by_kind.values()), by_kind=dict(sorted(by_kind.items())))
