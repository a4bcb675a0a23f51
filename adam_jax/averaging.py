r"""Temporal averaging of the parameters (Kingma & Ba 2014, Section 7.2).

.. math::

   \bar\theta_t = \beta_2 \bar\theta_{t-1} + (1 - \beta_2) \theta_t, \quad \bar\theta_0 = 0, \qquad
   \hat\theta_t = \frac{\bar\theta_t}{1 - \beta_2^t}

The average starts at zero, so it carries the same bias towards zero as Adam's moments. The
factor :math:`1-\beta_2^t` is itself kept as the same moving average of ones,
:math:`c_t = \beta_2 c_{t-1} + (1-\beta_2)`, :math:`c_0 = 0`: formed with the same rounded
:math:`\beta_2` as :math:`\bar\theta_t`, the weights of :math:`\hat\theta_t` sum to one to the last
bit, where ``1 - b2**t`` in float32 loses about 5 digits to cancellation for small :math:`t`.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._placement import replicated_zero
from adam_jax._tree import compute_dtype, real_dtype
from adam_jax.moments import reject_moments, saturating_increment


class TemporalAverageState(NamedTuple):
    """State of :func:`temporal_average`."""

    count: chex.Array  # int32 t, saturating
    correction: chex.Array  # c_t = 1 - b2^t, accumulated as an average of ones (default float dtype)
    theta_bar: optax.Params  # the biased average, float32 or wider


def temporal_average(b2: chex.Numeric = 0.999) -> optax.GradientTransformationExtraArgs:
    r"""Keep :math:`\bar\theta_t`, an exponential moving average of the parameters after each step.

    .. math::

       \theta_t = \theta_{t-1} + u_t, \qquad \bar\theta_t = \beta_2 \bar\theta_{t-1} + (1-\beta_2)\theta_t

    The updates pass through unchanged, so put it last in a chain, after the learning rate:
    ``optax.chain(adam_jax.adamw(...), temporal_average(0.999))``. Read the bias-corrected average
    :math:`\hat\theta_t = \bar\theta_t / (1-\beta_2^t)` with :func:`averaged_params`. The average is
    kept in float32 or wider whatever the parameter dtype (a bfloat16 average with
    :math:`\beta_2 = 0.999` would not move).

    Args:
      b2: decay rate of the average, in [0, 1); the paper uses Adam's :math:`\beta_2`.
    """
    _checks.check_decay('b2', b2)

    def init(params: optax.Params) -> TemporalAverageState:
        theta_bar = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=compute_dtype(p.dtype)), params)  # placed like p
        bias = replicated_zero(params, jax.dtypes.canonicalize_dtype(float))
        return TemporalAverageState(replicated_zero(params, jnp.int32), bias, theta_bar)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        reject_moments(updates, 'temporal_average', 'Put it last in the chain, after the learning rate.')
        if params is None:
            raise ValueError('temporal_average needs the params: call update(updates, state, params).')

        def ema(old, new):
            return (b2 * old + (1 - b2) * new).astype(old.dtype)

        def average(bar, p, u):
            return ema(bar, p.astype(bar.dtype) + u.astype(bar.dtype))

        theta_bar = jax.tree.map(average, state.theta_bar, params, updates)
        correction = ema(state.correction, jnp.ones_like(state.correction))
        return updates, TemporalAverageState(saturating_increment(state.count), correction, theta_bar)

    return optax.GradientTransformationExtraArgs(init, update)


def _plain(x: Any) -> Any:
    value = getattr(x, 'get_value', None)  # a flax.nnx Variable holding an array
    return value() if callable(value) else x


def _is_average(x: Any) -> bool:
    return isinstance(x, TemporalAverageState)


def averaged_params(opt_state: Any, like: optax.Params | None = None) -> optax.Params:
    r""":math:`\hat\theta_t = \bar\theta_t / (1-\beta_2^t)` from a state holding a :func:`temporal_average`.

    ``opt_state`` may be the whole optimizer state (a chain, ``inject_hyperparams`` state, or the
    ``opt_state`` of a ``flax.nnx.Optimizer``); the one :class:`TemporalAverageState` in it is used.
    Before the first step (:math:`t = 0`) there is no average and the result is NaN.

    Args:
      opt_state: an optimizer state containing exactly one :class:`TemporalAverageState`.
      like: optional params tree; the result is cast to its dtypes (and to its tree type).
    """
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_average) if _is_average(x)]
    if len(found) != 1:
        raise ValueError(
            f'averaged_params needs an optimizer state with exactly one TemporalAverageState, found {len(found)}. '
            'Add temporal_average() to the chain: optax.chain(adam_jax.adam(...), adam_jax.temporal_average()).'
        )
    state = jax.tree.map(_plain, found[0], is_leaf=lambda x: callable(getattr(x, 'get_value', None)))
    theta_hat = jax.tree.map(lambda bar: bar / state.correction.astype(real_dtype(bar.dtype)), state.theta_bar)
    if like is None:
        return theta_hat
    ours = jax.tree_util.tree_flatten_with_path(theta_hat)[0]
    theirs = jax.tree_util.tree_flatten_with_path(like)[0]
    for (path, x), (like_path, p) in itertools.zip_longest(ours, theirs, fillvalue=(None, None)):
        where = jax.tree_util.keystr(path if path is not None else like_path)
        if path is None or like_path is None or where != jax.tree_util.keystr(like_path):
            raise ValueError(
                f'averaged_params: like must have the paths of the averaged params; they differ at {where} '
                f'(averaged: {len(ours)} leaves, like: {len(theirs)}).'
            )
        if tuple(jnp.shape(p)) != tuple(x.shape):
            raise ValueError(
                f'averaged_params: like{where} has shape {tuple(jnp.shape(p))}, the average has {tuple(x.shape)}.'
            )
    leaves = [jnp.asarray(x, p.dtype) for (_, x), (_, p) in zip(ours, theirs)]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)
