r"""Lion's sign update (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms", Algorithm 2)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._tree import cast, check_inexact_leaves, check_same_structure, compute_dtype
from adam_jax.moments import TAKES_GRADIENTS, _ema, direction_dtype, reject_moments


class SignMomentumState(NamedTuple):
    """State of :func:`scale_by_sign_momentum`."""

    mu: optax.Updates


def scale_by_sign_momentum(
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.99,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The sign of an interpolation between the momentum and the gradient (Lion).

    .. math::

       c_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad d_t = \operatorname{sign}(c_t)

       m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

    The direction uses the *previous* momentum with :math:`\beta_1`; the
    momentum is then updated with :math:`\beta_2`. It is a params-shaped
    transform (one moment, no moment stage); follow it with
    :func:`adam_jax.decoupled_decay` and the learning rate for Lion.

    Args:
      b1: interpolation weight of the momentum in the direction, in [0, 1).
      b2: decay rate of the momentum, in [0, 1).
      mu_dtype: storage dtype of the momentum, a float dtype (default: the params' dtype).
    """
    _checks.check_decay('b1', b1)
    _checks.check_decay('b2', b2)
    mu_dtype = None if mu_dtype is None else _checks.float_dtype('mu_dtype', mu_dtype)

    def init(params: optax.Params) -> SignMomentumState:
        check_inexact_leaves('scale_by_sign_momentum', params)
        return SignMomentumState(mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        reject_moments(updates, 'scale_by_sign_momentum', TAKES_GRADIENTS)
        check_same_structure('gradient', updates, 'optimizer state (mu)', state.mu)

        def direction(g, m):
            cdt = compute_dtype(g.dtype, m.dtype)
            # without a mu_dtype, m has the params' dtype: the gradient's promoted with it, as in optax
            out = g.dtype if mu_dtype is not None else direction_dtype(g, m)
            return cast(jnp.sign(_ema(b1, cast(m, cdt), cast(g, cdt))), out)

        def momentum(g, m):
            cdt = compute_dtype(g.dtype, m.dtype)
            return cast(_ema(b2, cast(m, cdt), cast(g, cdt)), m.dtype)

        d = jax.tree.map(direction, updates, state.mu)
        mu = jax.tree.map(momentum, updates, state.mu)
        return d, SignMomentumState(mu=mu)

    return optax.GradientTransformationExtraArgs(init, update)
