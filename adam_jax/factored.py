r"""Factored second moment (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with
Sublinear Memory Cost", Algorithms 4 and 5).

For a leaf of two or more dimensions, keep the moving averages of the row and
column means of :math:`G_t^2` instead of a full :math:`V_t` (:math:`n + m`
numbers instead of :math:`nm`), over its two largest axes:

.. math::

   R_t = \beta_{2} R_{t-1} + (1-\beta_{2})\,\mathrm{mean}_{\text{cols}}(G_t^2 + \epsilon_1), \qquad
   C_t = \beta_{2} C_{t-1} + (1-\beta_{2})\,\mathrm{mean}_{\text{rows}}(G_t^2 + \epsilon_1)

   \hat V_t = \frac{R_t\, C_t}{\mathrm{mean}(R_t)} .

Two ways in: ``scale_by_moments(nu_dtype=Factored())`` gives any Adam-like
optimizer a factored :math:`v` (its :math:`\beta_2` and bias correction apply:
:math:`\hat V` is homogeneous of degree one in :math:`R, C`); and
:func:`scale_by_factored_rms` is Adafactor's own normalisation with the decay
schedule :math:`\hat\beta_{2,t} = 1 - t^{-0.8}`, used by :func:`adam_jax.adafactor`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import _checks
from adam_jax._placement import placed_sharding, replicated_zero, without_dim
from adam_jax._tree import (
    abs_sq,
    check_inexact_leaves,
    check_same_structure,
    real_dtype,
    register_flax_serialization,
    without_variables,
)


def factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> tuple[int, int] | None:
    """(second largest axis, largest axis), or None if the leaf is not factored.

    A leaf is factored when it has two or more dimensions and its second
    largest is at least ``min_dim_size_to_factor``.
    """
    if len(shape) < 2:
        return None
    second, largest = (int(i) for i in np.argsort(shape)[-2:])
    if shape[second] < min_dim_size_to_factor:
        return None
    return second, largest


@dataclasses.dataclass(frozen=True)
class Factored:
    """Pass as ``nu_dtype`` to store the second moment factored (Shazeer & Stern 2018).

    Attributes:
      min_dim_size_to_factor: a leaf of two or more dimensions is factored
        when its second largest dimension is at least this (optax's default,
        128); other leaves keep a full ``v`` in float32 or wider.
    """

    min_dim_size_to_factor: int = 128

    def __post_init__(self):
        _checks.check_int('min_dim_size_to_factor', self.min_dim_size_to_factor)
        object.__setattr__(self, 'min_dim_size_to_factor', int(self.min_dim_size_to_factor))

    def applies_to(self, leaf: Any) -> bool:
        return factored_dims(tuple(leaf.shape), self.min_dim_size_to_factor) is not None


@dataclasses.dataclass(frozen=True)
class FactoredMoment:
    r"""Row and column statistics :math:`R, C` standing for a second moment :math:`V`.

    ``row`` is the mean over the largest axis (``axes[1]``), ``col`` the mean
    over the second largest (``axes[0]``); both keep every other axis.
    """

    row: chex.Array
    col: chex.Array
    axes: tuple[int, int] = (0, 1)

    def update(self, decay: chex.Numeric, sq: chex.Array) -> FactoredMoment:
        """The moving averages after one more :math:`G^2` (computed in ``row``'s dtype)."""
        second, largest = self.axes
        row = decay * self.row + (1 - decay) * jnp.mean(sq, axis=largest).astype(self.row.dtype)
        col = decay * self.col + (1 - decay) * jnp.mean(sq, axis=second).astype(self.col.dtype)
        return FactoredMoment(row.astype(self.row.dtype), col.astype(self.col.dtype), self.axes)

    def leaf_shape(self) -> tuple[int, ...]:
        """The shape of the leaf whose second moment this stands for."""
        second, largest = self.axes
        shape = list(self.row.shape)
        shape.insert(largest, self.col.shape[largest if largest < second else largest - 1])
        return tuple(shape)

    def reconstruct(self) -> jax.Array:
        r""":math:`\hat V = R\,C / \mathrm{mean}(R)`, broadcast back to the leaf's shape."""
        second, largest = self.axes
        row_axis = second if second < largest else second - 1  # position of `second` in row
        row_mean = jnp.mean(self.row, axis=row_axis, keepdims=True)
        # All-zero statistics (a leaf whose gradients were all 0 so far) give V = 0, not 0 / 0 = NaN.
        row_mean = jnp.where(row_mean > 0, row_mean, jnp.ones_like(row_mean))
        return jnp.expand_dims(self.row / row_mean, largest) * jnp.expand_dims(self.col, second)


jax.tree_util.register_dataclass(FactoredMoment, data_fields=['row', 'col'], meta_fields=['axes'])
register_flax_serialization(FactoredMoment, ['row', 'col'])


def is_factored(x: Any) -> bool:
    return isinstance(x, FactoredMoment)


def zeros_like(leaf: Any, min_dim_size_to_factor: int, dtype: Any) -> FactoredMoment:
    """Zero statistics for ``leaf`` (which must be factorable), replicated on its mesh (or on its device) when it
    has been placed there, as :func:`adam_jax.state_shardings` places them."""
    axes = factored_dims(tuple(leaf.shape), min_dim_size_to_factor)
    assert axes is not None
    second, largest = axes
    shape = tuple(leaf.shape)
    row_shape = shape[:largest] + shape[largest + 1 :]
    col_shape = shape[:second] + shape[second + 1 :]
    where = factored_shardings(placed_sharding(leaf), len(shape), axes)
    if where is None:
        return FactoredMoment(jnp.zeros(row_shape, dtype), jnp.zeros(col_shape, dtype), axes)
    zeros = [jax.lax.full(s, 0, dtype, sharding=w) for s, w in zip((row_shape, col_shape), where)]
    return FactoredMoment(*zeros, axes)


def factored_shardings(sharding: Any, ndim: int, axes: tuple[int, int]) -> tuple[Any, Any] | None:
    """Where the (row, column) statistics of an ``ndim``-dimensional leaf with ``sharding`` go: each keeps the mesh
    axes of the leaf's dimensions it keeps (the row statistics drop the largest axis, ``axes[1]``, the column
    ones the second largest), as XLA places the means the update takes; None for a leaf not placed on a mesh
    or a device."""
    second, largest = axes
    row, col = without_dim(sharding, ndim, largest), without_dim(sharding, ndim, second)
    return None if row is None else (row, col)


def decay_rate_pow(step: chex.Numeric, exponent: chex.Numeric = 0.8) -> chex.Array:
    r"""Adafactor's schedule :math:`\hat\beta_{2,t} = 1 - t^{-c}` (Shazeer & Stern 2018, Sec. 7.2), t from 1."""
    # t + 1 in float: in int32 a saturated step count (2^31 - 1) would wrap to a negative t and give NaN
    return 1.0 - (jnp.asarray(step, jnp.float32) + 1) ** (-exponent)


def _nu_leaf(x: Any) -> bool:
    return x is None or is_factored(x)


class FactoredRmsState(NamedTuple):
    """State of :func:`scale_by_factored_rms`: ``nu`` leaves are :class:`FactoredMoment` or full arrays."""

    count: chex.Array
    nu: optax.Updates


def scale_by_factored_rms(
    decay_rate: chex.Numeric = 0.8,
    decay_offset: chex.Numeric = 0,
    min_dim_size_to_factor: int = 128,
    eps: chex.Numeric = 1e-30,
    factored: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor's update direction :math:`G_t / \sqrt{\hat V_t}` (Shazeer & Stern 2018, Alg. 4, 5).

    .. math::

       \hat\beta_{2,t} = 1 - (t - t_0)^{-c}, \qquad
       \hat V_t = \frac{R_t C_t}{\mathrm{mean}(R_t)} \ \text{(factored leaves)}, \qquad
       U_t = G_t / \sqrt{\hat V_t}

    with :math:`R_t, C_t` the moving averages (decay :math:`\hat\beta_{2,t}`)
    of the row and column means of :math:`G_t^2 + \epsilon_1`; leaves that are
    not factored keep the full :math:`V_t`. At :math:`t = 1`,
    :math:`\hat\beta_{2,1} = 0`, so no bias correction is needed.

    Args:
      decay_rate: the exponent :math:`c` of the decay schedule (0.8).
      decay_offset: :math:`t_0`, the step at which fine-tuning started; steps
        counted before it (a freshly initialised state) decay like step :math:`t_0`
        (:math:`\hat\beta_2 = 0`), where optax's adafactor gives NaN.
      min_dim_size_to_factor: factor a leaf only if its second largest
        dimension is at least this.
      eps: :math:`\epsilon_1`, added to :math:`G_t^2`.
      factored: ``False`` keeps a full :math:`V_t` for every leaf.
    """
    _checks.check_nonnegative('decay_rate', decay_rate)
    # 1 - (t - t0)^-c is a decay in [0, 1) only for t - t0 >= 1: t0 is a past step, a whole number
    _checks.check_nonnegative('decay_offset', decay_offset)
    offset = _checks.concrete(decay_offset)
    if offset is not None and offset.ndim == 0 and not float(offset).is_integer():
        raise ValueError(f'decay_offset must be a whole number of steps, got {decay_offset!r}.')
    _checks.check_int('min_dim_size_to_factor', min_dim_size_to_factor)
    _checks.check_nonnegative('eps', eps)
    _checks.check_bool('factored', factored)

    def init(params):
        check_inexact_leaves('scale_by_factored_rms', params)
        params = without_variables(params)  # factored moments are pytrees: build them from bare arrays

        def one(p):
            dtype = real_dtype(p.dtype)
            if factored and factored_dims(tuple(p.shape), min_dim_size_to_factor) is not None:
                return zeros_like(p, min_dim_size_to_factor, dtype)
            return jnp.zeros_like(p, dtype=dtype)  # follows the sharding of a placed leaf

        return FactoredRmsState(count=replicated_zero(params, jnp.int32), nu=jax.tree.map(one, params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        from adam_jax.moments import TAKES_GRADIENTS, reject_moments  # (moments imports this module)

        reject_moments(updates, 'scale_by_factored_rms', TAKES_GRADIENTS)
        check_same_structure('gradient', updates, 'optimizer state (nu)', state.nu, is_leaf=_nu_leaf)
        # Steps before t0 (a fresh state, count 0, for a run that starts fine-tuning at t0) count as its first
        # step: decay 0, V_t = G_t^2 + eps_1. optax.adafactor raises a negative base to -c there: NaN for good.
        decay = decay_rate_pow(jnp.maximum(state.count - decay_offset, 0), decay_rate)

        def one(g, nu):
            sq = abs_sq(g) + eps
            if is_factored(nu):
                nu = nu.update(decay, sq)
                v = nu.reconstruct()
            else:
                nu = (decay * nu + (1 - decay) * sq).astype(nu.dtype)
                v = nu
            return (g * v ** (-0.5)).astype(g.dtype), nu

        out = jax.tree.map(one, updates, state.nu)
        treedef = jax.tree.structure(updates)
        pairs = treedef.flatten_up_to(out)
        new_updates = treedef.unflatten([u for u, _ in pairs])
        new_nu = treedef.unflatten([n for _, n in pairs])
        return new_updates, FactoredRmsState(count=optax.safe_increment(state.count), nu=new_nu)

    return optax.GradientTransformationExtraArgs(init, update)
