r"""Transforms that end the moment stage: a direction shaped like the params."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax.moments import require_moments


def scale_by_rms(eps: chex.Numeric = 1e-8, eps_root: chex.Numeric = 0.0) -> optax.GradientTransformationExtraArgs:
    r"""Divide the first moment by the root of the second (Kingma & Ba 2014, Algorithm 1).

    .. math::

       d_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    For AdaMax's second moment (``second_moment='max'``), which is already in
    gradient units, the root is skipped: :math:`d_t = \hat m_t / (u_t +
    \epsilon_{root} + \epsilon)`. The direction has the gradient's dtype.

    Args:
      eps: added to the denominator, outside the root (>= 0).
      eps_root: added inside the root (>= 0); keeps the derivative of the
        update finite when differentiating through it (meta-learning).
    """
    _checks.check_nonnegative('eps', eps)
    _checks.check_nonnegative('eps_root', eps_root)

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, 'scale_by_rms')
        root = (lambda x: x) if moments.second_moment == 'max' else jnp.sqrt

        def direction(m, v, g):
            return (m / (root(v + eps_root) + eps)).astype(g.dtype)

        return jax.tree.map(direction, moments.mu, moments.nu, moments.grad), state

    return optax.GradientTransformationExtraArgs(init, update)
