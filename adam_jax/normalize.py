r"""Transforms that end the moment stage: a direction shaped like the params."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._tree import cast, real_dtype
from adam_jax.correction import correction_dtype, one_minus_power, per_dtype, power
from adam_jax.moments import Moments, require_moments


def _rms_direction(moments: Moments, eps: chex.Numeric, eps_root: chex.Numeric, eps_on_raw_nu: bool):
    """m / (root(v + eps_root) + eps) per leaf, as a function of the leaf's (m, v, g)."""
    root = (lambda x: x) if moments.second_moment == 'max' else jnp.sqrt

    @per_dtype
    def raw_nu_eps(dtype):
        # sqrt(v_hat) + eps / sqrt(1 - b2^t) = (sqrt(v_t) + eps) / sqrt(1 - b2^t)
        c2 = one_minus_power(moments.b2, moments.count, correction_dtype(dtype), moments.precise_corrections)
        return (eps / jnp.sqrt(c2)).astype(dtype)

    def direction(m, v, g):
        eps_t = eps
        if eps_on_raw_nu and moments.nu_debiased and moments.second_moment != 'max':
            eps_t = raw_nu_eps(v.dtype)
        return m / (root(v + eps_root) + eps_t)

    return direction


def _ending(
    name: str, eps: chex.Numeric, eps_root: chex.Numeric, leaf_direction
) -> optax.GradientTransformationExtraArgs:
    """A transform that ends the moment stage with ``leaf_direction(moments)(m, v, g)`` per leaf."""
    _checks.check_nonnegative('eps', eps)
    _checks.check_nonnegative('eps_root', eps_root)

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, name)
        direction = leaf_direction(moments)
        dtypes = moments.update_dtype
        if dtypes is None:
            dtypes = jax.tree.map(lambda g: g.dtype, moments.grad)
        d = jax.tree.map(lambda m, v, g, dt: cast(direction(m, v, g), dt), moments.mu, moments.nu, moments.grad, dtypes)
        return d, state

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_rms(
    eps: chex.Numeric = 1e-8, eps_root: chex.Numeric = 0.0, *, eps_on_raw_nu: bool = False
) -> optax.GradientTransformationExtraArgs:
    r"""Divide the first moment by the root of the second (Kingma & Ba 2014, Algorithm 1).

    .. math::

       d_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    For AdaMax's second moment (``second_moment='max'``), which is already in
    gradient units, the root is skipped: :math:`d_t = \hat m_t / (u_t +
    \epsilon_{root} + \epsilon)`. The direction has the gradient's dtype; when no
    ``mu_dtype`` was asked for (mu then has the params' dtype), promoted with the
    params' (``Moments.update_dtype``): float32 for float32 params with bfloat16
    gradients, as in optax.

    With ``eps_on_raw_nu=True``, :math:`\epsilon` is added to the root of the
    uncorrected :math:`v_t` (as ``torch.optim.RAdam`` does):
    :math:`d_t = \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon)`, i.e.
    :math:`\epsilon / \sqrt{1-\beta_2^t}` next to :math:`\sqrt{\hat v_t}`.
    (PyTorch's Adam writes :math:`\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon`,
    which is the default placement.)

    Args:
      eps: added to the denominator, outside the root (>= 0).
      eps_root: added inside the root (>= 0); keeps the derivative of the
        update finite when differentiating through it (meta-learning).
      eps_on_raw_nu: add ``eps`` to the root of the uncorrected second moment.
    """
    _checks.check_bool('eps_on_raw_nu', eps_on_raw_nu)
    return _ending('scale_by_rms', eps, eps_root, lambda moments: _rms_direction(moments, eps, eps_root, eps_on_raw_nu))


def _first_tractable_step(b2: Any, threshold: Any, strict: bool) -> int | None:
    """The first step t whose rho_t passes the threshold, in double precision on the host (for concrete b2 and
    threshold; None otherwise, and for a b2 whose rho_t never does, where the count is compared in float)."""
    b2, threshold = _checks.concrete(b2), _checks.concrete(threshold)
    if b2 is None or threshold is None or b2.ndim or threshold.ndim or not 0 < float(b2) < 1:
        return None
    b2, threshold = float(b2), float(threshold)
    rho_inf = 2 / (1 - b2) - 1
    if rho_inf < threshold or (strict and rho_inf == threshold):
        return None
    t = 1
    while t <= 1_000_000:  # for any b2 with rho_inf above the threshold this ends within a few dozen steps
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > threshold or (not strict and rho_t == threshold):
            return t
        t += 1
    return None


def rectifier(
    b2: chex.Numeric,
    count: chex.Array,
    threshold: chex.Numeric,
    strict: bool,
    precise: bool,
    wide: Any,
    first: int | None = None,
) -> tuple[chex.Array, chex.Array]:
    r"""RAdam's ``(tractable, r_t)`` at step ``count`` (see :func:`scale_by_rectified_rms`), formed in the dtype
    ``wide`` (float32 or wider); ``first``: the first tractable step found on the host, or None to compare
    :math:`\rho_t` with the threshold. Shared by the chain and the fused kernel's scalars."""
    # A Python b2 keeps rho_inf in double precision: in float32, 1 - 0.999 is off by 1.3e-5
    # relative, which moves rho_inf by 0.026 and r_t visibly in the first steps.
    rho_inf = 2 / (1 - b2) - 1
    b2_t = power(b2, count, wide, precise)
    rho_t = rho_inf - 2 * count * b2_t / one_minus_power(b2, count, wide, precise)
    if first is not None:  # rho_t is increasing in t: the switch step, found in double precision
        tractable = count >= first
    else:
        tractable = rho_t > threshold if strict else rho_t >= threshold
    rho = jnp.where(tractable, rho_t, rho_inf)  # r_t is only used where it is real
    return tractable, jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


def scale_by_rectified_rms(
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    threshold: chex.Numeric = 5.0,
    *,
    strict: bool = False,
    eps_on_raw_nu: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam's rectified direction (Liu et al. 2020, "On the Variance of the Adaptive
    Learning Rate and Beyond", Algorithm 2).

    .. math::

       \rho_\infty = \frac{2}{1-\beta_2} - 1, \qquad
       \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}

       r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}

       d_t = \begin{cases} r_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
             & \rho_t \ge \text{threshold} \\ \hat m_t & \text{otherwise} \end{cases}

    While the variance of the adaptive step is intractable (few steps), the
    step is SGD with momentum. optax switches at :math:`\rho_t \ge 5`
    (``strict=False``); PyTorch at :math:`\rho_t > 5` (``strict=True``) and adds
    :math:`\epsilon` to the uncorrected root (``eps_on_raw_nu=True``, see
    :func:`scale_by_rms`).

    Args:
      eps, eps_root, eps_on_raw_nu: as in :func:`scale_by_rms`.
      threshold: :math:`\rho_t` from which the rectified adaptive step is used.
      strict: switch only when :math:`\rho_t` exceeds ``threshold``.
    """
    _checks.check_nonnegative('eps', eps)
    _checks.check_nonnegative('eps_root', eps_root)
    _checks.check_bool('strict', strict)
    _checks.check_bool('eps_on_raw_nu', eps_on_raw_nu)
    # r_t is real only for rho_t >= 4: a lower threshold would switch to a NaN step
    _checks.check_range('threshold', threshold, 4.0, None)

    def leaf_direction(moments: Moments):
        if moments.second_moment == 'max':
            raise TypeError("scale_by_rectified_rms rectifies an EMA of squares; second_moment='max' has none.")
        adaptive = _rms_direction(moments, eps, eps_root, eps_on_raw_nu)
        precise = moments.precise_corrections
        first = _first_tractable_step(moments.b2, threshold, strict) if precise else None  # once per update
        rectification = per_dtype(
            lambda wide: rectifier(moments.b2, moments.count, threshold, strict, precise, wide, first)
        )

        def direction(m, v, g):
            tractable, r_t = rectification(correction_dtype(v.dtype))
            return jnp.where(tractable, r_t.astype(real_dtype(m.dtype)) * adaptive(m, v, g), m)

        return direction

    return _ending('scale_by_rectified_rms', eps, eps_root, leaf_direction)
