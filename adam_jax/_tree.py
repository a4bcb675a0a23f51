"""Small pytree helpers shared by the transforms."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_none(x: Any) -> bool:
    return x is None


def real_dtype(dtype: Any) -> np.dtype:
    """The real counterpart of a dtype: float32 for complex64, itself for reals."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return np.dtype(jnp.finfo(dtype).dtype)
    return dtype


def compute_dtype(*dtypes: Any) -> np.dtype:
    """float32 or wider: the precision in which a step is computed (cached: it is asked per leaf, per step
    traced; the answer depends on ``jax_enable_x64``, so that is part of the key)."""
    return _compute_dtype(dtypes, bool(jax.config.jax_enable_x64))


@functools.cache
def _compute_dtype(dtypes: tuple, x64: bool) -> np.dtype:
    del x64  # only a key: jnp.result_type reads the setting itself
    return np.dtype(jnp.result_type(*dtypes, jnp.float32))


def cast(x: Any, dtype: Any) -> Any:
    """``x.astype(dtype)`` (of the real part, for a complex x and a real dtype), or ``x`` itself where it already
    has that dtype (and is not weakly typed).

    The value is the same; tracing a no-op ``astype`` costs about 90 us, several times per leaf, which for
    1000 leaves made the composed chain's first call seconds slower than optax's.
    """
    if x.dtype == dtype and not getattr(x, 'weak_type', False):
        return x
    if jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
        # The real part, said explicitly (JAX deprecates astype dropping it): a complex mu_dtype for real
        # params stores an EMA of real gradients, whose imaginary part is 0.
        x = jnp.real(x)
    return x.astype(dtype)


def abs_sq(g: Any) -> Any:
    """|g|**2, real for complex g."""
    return (g.conj() * g).real if jnp.iscomplexobj(g) else g * g


def without_variables(params: Any) -> Any:
    """``params`` with flax.nnx ``Variable`` boxes taken off (``nnx.as_pure``).

    ``nnx.Optimizer`` hands ``init`` a ``State`` of ``Param`` boxes; a moment that is itself a pytree (a
    ``QuantizedArray``, a ``FactoredMoment``) built inside such a box does not survive nnx's round trip of the
    optimizer state, so those moments are built from the bare arrays.
    """
    try:
        from flax import nnx
    except ImportError:  # flax is optional at run time
        return params
    is_variable = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    if not any(is_variable(x) for x in jax.tree.leaves(params, is_leaf=is_variable)):
        return params
    return nnx.as_pure(params)


def register_flax_serialization(cls: type, data_fields: list[str]) -> None:
    """Lets ``flax.serialization`` (``to_bytes``, ``to_state_dict``, ``TrainState``) save a dataclass pytree of the
    state: its data fields as a state dict; the static fields come from the target it is restored into."""
    try:
        from flax import serialization
    except ImportError:  # flax is optional at run time
        return

    def to_state(x: Any) -> dict:
        return {f: serialization.to_state_dict(getattr(x, f)) for f in data_fields}

    def from_state(x: Any, state: dict) -> Any:
        fields = {f: serialization.from_state_dict(getattr(x, f), state[f], name=f) for f in data_fields}
        return dataclasses.replace(x, **fields)

    serialization.register_serialization_state(cls, to_state, from_state)


def first_difference(a: Any, b: Any) -> str:
    """A readable description of where two pytree structures first differ."""
    paths_a = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    paths_b = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    for pa, pb in zip(paths_a, paths_b):
        if pa != pb:
            return f'first differing leaf path: {pa or "<root>"} vs {pb or "<root>"}'
    if len(paths_a) != len(paths_b):
        shorter, longer = (paths_a, paths_b) if len(paths_a) < len(paths_b) else (paths_b, paths_a)
        return f'{len(paths_a)} vs {len(paths_b)} leaves; first unmatched leaf path: {longer[len(shorter)] or "<root>"}'
    return f'same leaf paths but different node types: {jax.tree.structure(a)} vs {jax.tree.structure(b)}'


def check_same_structure(name_a: str, a: Any, name_b: str, b: Any, is_leaf: Any = is_none) -> None:
    """Raises ``ValueError`` naming the first differing path if the trees differ, in structure or in the shape of
    a leaf (``leaf_shape()`` for a leaf of ``b`` that has it; a leaf without a shape, such as ``None``, is not
    compared)."""
    if jax.tree.structure(a, is_leaf=is_leaf) != jax.tree.structure(b, is_leaf=is_leaf):
        raise ValueError(
            f'{name_a} and {name_b} have different tree structures ({first_difference(a, b)}). '
            'Was the optimizer state built with init() on parameters of this shape?'
        )
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a, is_leaf=is_leaf)[0], jax.tree.leaves(b, is_leaf=is_leaf)
    ):
        # A compressed moment that stands for a leaf (FactoredMoment) tells the leaf's shape through leaf_shape().
        shape = y.leaf_shape() if hasattr(y, 'leaf_shape') else getattr(y, 'shape', None)
        if x is not None and shape is not None and tuple(jnp.shape(x)) != tuple(shape):
            raise ValueError(
                f'{name_a} and {name_b} differ in shape at {jax.tree_util.keystr(path) or "<root>"}: '
                f'{tuple(jnp.shape(x))} vs {tuple(shape)}. Was the optimizer state built with init() on parameters '
                'of this shape?'
            )


def check_inexact_leaves(name: str, params: Any) -> None:
    """Raises ``TypeError`` naming the first integer or boolean leaf: Adam is defined for real or complex floats."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = getattr(leaf, 'dtype', None)
        if dtype is None and isinstance(leaf, (bool, int, float, complex)):
            raise TypeError(
                f'{name}: the leaf at {jax.tree_util.keystr(path) or "<root>"} is the Python {type(leaf).__name__} '
                f'{leaf!r}; parameters must be arrays (e.g. jnp.asarray({leaf!r}, jnp.float32)).'
            )
        if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f'{name}: the leaf at {jax.tree_util.keystr(path) or "<root>"} has dtype {dtype}; only floating '
                'and complex leaves can be optimized. Leave integer and boolean leaves out of the optimizer with '
                'optax.masked(tx, mask) or optax.multi_transform({..., "frozen": optax.set_to_zero()}, labels).'
            )
