"""How many bytes an optimizer state takes, in total and by kind."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
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


def _nbytes(x: Any) -> int:
    return math.prod(x.shape) * np.dtype(x.dtype).itemsize


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
            add(np.dtype(leaf.dtype).name, _nbytes(leaf))
        else:
            raise TypeError(
                f'state_nbytes counts arrays (or jax.ShapeDtypeStruct), and the state holds {leaf!r} of type '
                f'{type(leaf).__name__}. Pass an optimizer state, e.g. opt.init(params).'
            )
    return StateBytes(total=sum(by_kind.values()), by_kind=dict(sorted(by_kind.items())))
