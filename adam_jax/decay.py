r"""Decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._tree import cast, check_same_structure, is_none
from adam_jax.moments import reject_moments


def decoupled_decay(
    weight_decay: chex.Numeric,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Add :math:`\lambda \theta_{t-1}` to the direction.

    .. math::

       d_t \leftarrow d_t + \lambda \theta_{t-1}

    Followed by ``optax.scale_by_learning_rate(lr)`` this is AdamW as optax
    and PyTorch write it: :math:`\theta_t = \theta_{t-1} - \eta_t (d_t +
    \lambda\theta_{t-1})`, i.e. the decay is scaled by the whole learning rate.
    Loshchilov & Hutter's Algorithm 2 scales the decay by the schedule
    multiplier :math:`\eta_t` only, :math:`\theta_t = \theta_{t-1} - \eta_t
    (\alpha d_t + \lambda\theta_{t-1})`; that form is
    :func:`adam_jax.loshchilov_hutter_adamw` (``optax.scale(alpha)`` before this
    transform, the schedule multiplier after it).

    Args:
      weight_decay: :math:`\lambda \ge 0`.
      mask: a tree of booleans (or a function of the params returning one)
        choosing the leaves to decay; other leaves pass through unchanged.
    """
    _checks.check_nonnegative('weight_decay', weight_decay)
    _checks.check_mask('mask', mask)

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        reject_moments(updates, 'decoupled_decay')
        if params is None:
            raise ValueError('decoupled_decay needs the params: call update(updates, state, params).')
        check_same_structure('updates', updates, 'params', params)  # named, instead of broadcasting wd * p

        def add(u, p):
            # at least the params' precision: a bfloat16 update would round lambda p away next to the direction
            return None if u is None else cast(u + weight_decay * p, jnp.result_type(u.dtype, p.dtype))

        return jax.tree.map(add, updates, params, is_leaf=is_none), state

    tx = optax.GradientTransformationExtraArgs(init, update)
    if mask is not None:
        return optax.masked(tx, mask)
    return tx
