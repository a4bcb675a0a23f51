r"""LAMB's layer-wise trust ratio (You et al. 2020, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes", Algorithm 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from adam_jax._tree import abs_sq, is_none
from adam_jax.moments import reject_moments


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(abs_sq(x)))


def trust_ratio() -> optax.GradientTransformationExtraArgs:
    r"""Scale each leaf's direction by :math:`\lVert\theta\rVert / \lVert d\rVert`.

    .. math::

       d_t \leftarrow \frac{\lVert \theta_{t-1} \rVert}{\lVert d_t \rVert} \, d_t

    per leaf (a leaf is a layer's weight or bias), with the ratio taken as 1
    where either norm is 0, so zero-initialised leaves still move. Placed after
    :func:`adam_jax.decoupled_decay`, :math:`d_t` is Adam's direction plus
    :math:`\lambda\theta_{t-1}`, which is LAMB's :math:`r_t + \lambda x_t`.
    The paper's scaling function :math:`\phi` is the identity, as in optax.
    """

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        reject_moments(updates, 'trust_ratio')
        if params is None:
            raise ValueError('trust_ratio needs the params: call update(updates, state, params).')

        def scale(d, p):
            if d is None:
                return None
            param_norm, direction_norm = _norm(p), _norm(d)
            ratio = jnp.where((param_norm == 0) | (direction_norm == 0), 1.0, param_norm / direction_norm)
            return (d * ratio.astype(d.real.dtype)).astype(d.dtype)

        return jax.tree.map(scale, updates, params, is_leaf=is_none), state

    return optax.GradientTransformationExtraArgs(init, update)
