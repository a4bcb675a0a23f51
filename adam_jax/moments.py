r"""The first stage of every Adam-family optimizer: moving averages of the gradient.

Kingma & Ba (2014), "Adam: A Method for Stochastic Optimization", Algorithm 1:

.. math::

   m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
   v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2 .

:func:`scale_by_moments` keeps :math:`m, v, t` in its state and hands the later
stages a :class:`Moments` value (not a params-shaped tree), so that
:func:`adam_jax.bias_correct` and :func:`adam_jax.scale_by_rms` can see both
moments, the step count and the decay rates that were actually used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._tree import check_same_structure, compute_dtype, real_dtype
from adam_jax.sharding import replicated_zero

SECOND_MOMENTS = ('square', 'max')
_INT32_MAX = jnp.iinfo(jnp.int32).max


@dataclasses.dataclass(frozen=True)
class Moments:
    """What flows between the transforms of the moment stage.

    Attributes:
      grad: the gradient :math:`g_t` this step was given.
      mu: the first moment :math:`m_t` (or :math:`\\hat m_t` once corrected).
      nu: the second moment :math:`v_t`, or AdaMax's :math:`u_t`.
      count: the step number :math:`t` (int32, 1 on the first step).
      b1, b2: the decay rates that produced ``mu`` and ``nu``.
      second_moment: ``'square'`` (an EMA of :math:`|g|^2`) or ``'max'``
        (AdaMax's running max of :math:`|g|`, already in gradient units).
      mu_debiased, nu_debiased: whether a moment is free of the zero-start bias
        (after :func:`bias_correct`, or by construction for AdaMax's ``u``).
    """

    grad: Any
    mu: Any
    nu: Any
    count: chex.Array
    b1: chex.Numeric
    b2: chex.Numeric
    second_moment: str = 'square'
    mu_debiased: bool = False
    nu_debiased: bool = False

    def replace(self, **changes: Any) -> Moments:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    Moments,
    data_fields=['grad', 'mu', 'nu', 'count', 'b1', 'b2'],
    meta_fields=['second_moment', 'mu_debiased', 'nu_debiased'],
)


class MomentsState(NamedTuple):
    """State of :func:`scale_by_moments`."""

    count: chex.Array  # int32 scalar, saturating at 2**31 - 1
    mu: optax.Updates
    nu: optax.Updates


def require_moments(value: Any, name: str) -> Moments:
    """Lets a moment-stage transform refuse a plain gradient tree."""
    if not isinstance(value, Moments):
        raise TypeError(
            f'{name} works on the moments of the gradient, but received a plain tree '
            f'({type(value).__name__}). Put scale_by_moments() before it in the chain, e.g. '
            f'optax.chain(scale_by_moments(), {name}(...), ...).'
        )
    return value


def reject_moments(value: Any, name: str) -> None:
    """Lets a params-shaped transform refuse a Moments value."""
    if isinstance(value, Moments):
        raise TypeError(
            f"{name} works on a params-shaped tree, but received the moment stage's Moments "
            'value. End the moment stage first: put scale_by_rms() (or another transform that '
            f'turns moments into a direction) before {name} in the chain.'
        )


def saturating_increment(count: chex.Array) -> chex.Array:
    """count + 1 that stays at 2**31 - 1 instead of wrapping to a negative number."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def _ema(decay: chex.Numeric, old: chex.Array, new: chex.Array) -> chex.Array:
    return (1 - decay) * new + decay * old


def _abs_sq(g: chex.Array) -> chex.Array:
    return (g.conj() * g).real if jnp.iscomplexobj(g) else g * g


def scale_by_moments(
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    second_moment: str = 'square',
    max_eps: chex.Numeric = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""First and second moment estimates (Kingma & Ba 2014, Algorithm 1).

    .. math::

       m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t

       v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2 \quad (\text{second\_moment='square'})

       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon_{max}) \quad (\text{second\_moment='max'},
       \text{AdaMax, Algorithm 2})

    The step count :math:`t` is an int32 that saturates at :math:`2^{31}-1`.
    Moments are computed in float32 or wider and stored in ``mu_dtype`` /
    ``nu_dtype`` (default: the dtype of the parameters; for complex
    parameters ``nu`` is real and stored in the matching real dtype).

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      mu_dtype: storage dtype of the first moment.
      nu_dtype: storage dtype of the second moment.
      second_moment: ``'square'`` for Adam's :math:`v_t`, ``'max'`` for
        AdaMax's exponentially weighted infinity norm :math:`u_t`.
      max_eps: with ``second_moment='max'``, added to :math:`|g_t|` inside the
        max (where optax and PyTorch put AdaMax's epsilon). Must be 0 otherwise.

    Returns:
      A transform whose update returns a :class:`Moments` value; follow it with
      moment-stage transforms and end the stage with :func:`scale_by_rms`.
    """
    _checks.check_decay('b1', b1)
    _checks.check_decay('b2', b2)
    _checks.check_choice('second_moment', second_moment, SECOND_MOMENTS)
    _checks.check_nonnegative('max_eps', max_eps)
    if second_moment != 'max' and isinstance(max_eps, (int, float)) and max_eps != 0:
        raise ValueError(f"max_eps is only used with second_moment='max', got max_eps={max_eps!r}.")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)
    nu_dtype = None if nu_dtype is None else real_dtype(nu_dtype)

    def init(params: optax.Params) -> MomentsState:
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)
        nu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=nu_dtype or real_dtype(p.dtype)), params)
        return MomentsState(count=replicated_zero(params, jnp.int32), mu=mu, nu=nu)

    def update_mu(g, mu):
        if jnp.iscomplexobj(g) and not jnp.iscomplexobj(mu):
            raise TypeError(
                f'mu_dtype={mu.dtype} cannot hold the complex first moment of a {g.dtype} gradient '
                'without dropping its imaginary part; use a complex mu_dtype (e.g. complex64) or None.'
            )
        cdt = compute_dtype(g.dtype, mu.dtype)
        return _ema(b1, mu.astype(cdt), g.astype(cdt))

    def update_nu(g, nu):
        cdt = compute_dtype(real_dtype(g.dtype), nu.dtype)
        if second_moment == 'max':
            return jnp.maximum(jnp.abs(g).astype(cdt) + max_eps, b2 * nu.astype(cdt))
        return _ema(b2, nu.astype(cdt), _abs_sq(g.astype(compute_dtype(g.dtype))).astype(cdt))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if isinstance(updates, Moments):
            raise TypeError(
                'scale_by_moments received a Moments value: a chain has one moment stage, '
                'so scale_by_moments must come first in it (after params-shaped pre-processing '
                'such as optax.clip_by_global_norm).'
            )
        check_same_structure('gradient', updates, 'optimizer state (mu)', state.mu)
        count = saturating_increment(state.count)
        mu = jax.tree.map(update_mu, updates, state.mu)
        nu = jax.tree.map(update_nu, updates, state.nu)
        new_state = MomentsState(
            count=count,
            mu=jax.tree.map(lambda new, old: new.astype(old.dtype), mu, state.mu),
            nu=jax.tree.map(lambda new, old: new.astype(old.dtype), nu, state.nu),
        )
        moments = Moments(
            grad=updates,
            mu=mu,
            nu=nu,
            count=count,
            b1=b1,
            b2=b2,
            second_moment=second_moment,
            nu_debiased=second_moment == 'max',
        )
        return moments, new_state

    return optax.GradientTransformationExtraArgs(init, update)
