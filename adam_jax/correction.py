r"""Moment-stage transforms that correct the moments before they are normalised.

Kingma & Ba (2014), Section 3: moving averages started at zero are biased
towards zero; dividing by :math:`1 - \beta^t` removes that bias.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax._tree import real_dtype
from adam_jax.moments import require_moments


def correction_dtype(dtype) -> np.dtype:
    """float64 for float64/complex128 moments, float32 otherwise."""
    return np.dtype(jnp.float64) if real_dtype(dtype) == np.dtype(np.float64) else np.dtype(jnp.float32)


def debias(moment: chex.Array, decay: chex.Numeric, count: chex.Array) -> chex.Array:
    r""":math:`x / (1 - \beta^t)`, with :math:`1 - \beta^t` formed in float32 or wider.

    A low-precision :math:`\beta^t` rounds to 1 early in training and would
    divide by zero, so the factor is formed wide and only then cast.
    """
    wide = correction_dtype(moment.dtype)
    factor = 1 - jnp.asarray(decay, wide) ** count
    return moment / factor.astype(real_dtype(moment.dtype))


def bias_correct() -> optax.GradientTransformationExtraArgs:
    r"""Bias correction of both moments (Kingma & Ba 2014, Algorithm 1).

    .. math::

       \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}

    The decay rates and :math:`t` come from the :class:`Moments` value made by
    :func:`scale_by_moments`, so they cannot disagree with it. A moment that is
    already unbiased (AdaMax's :math:`u_t`, or a moment corrected earlier in the
    chain) is left as it is.
    """

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, 'bias_correct')
        mu, nu = moments.mu, moments.nu
        if not moments.mu_debiased:
            mu = jax.tree.map(lambda m: debias(m, moments.b1, moments.count), mu)
        if not moments.nu_debiased:
            nu = jax.tree.map(lambda v: debias(v, moments.b2, moments.count), nu)
        return moments.replace(mu=mu, nu=nu, mu_debiased=True, nu_debiased=True), state

    return optax.GradientTransformationExtraArgs(init, update)
