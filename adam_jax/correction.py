r"""Moment-stage transforms that correct the moments before they are normalised.

Kingma & Ba (2014), Section 3: moving averages started at zero are biased
towards zero; dividing by :math:`1 - \beta^t` removes that bias
(:func:`bias_correct`). AMSGrad keeps the running maximum of the second moment
(:func:`max_second_moment`); NAdam looks one step ahead with the first moment
(:func:`nesterov_momentum`). Each takes and returns a :class:`Moments` value, so
their order in the chain is the order of the equations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import _checks, factored, quantization
from adam_jax._placement import replicated_zero
from adam_jax._tree import cast, real_dtype
from adam_jax.moments import default_nu_dtype, moment_storage, require_moments, saturating_increment


def correction_dtype(dtype) -> np.dtype:
    r"""Where the scalar corrections (:math:`1 - \beta^t` and the like) of moments of ``dtype`` are formed.

    float64 for float64/complex128 moments, and for any moments while ``jax_enable_x64`` is on (optax forms them
    from Python floats, which are then double: under x64 a float32 :math:`1 - 0.9999^t` would move RAdam's switch
    step and cost float32 params about 5x optax's accuracy); float32 otherwise. The result is cast to the
    moments' dtype only where it is applied.
    """
    if jax.config.jax_enable_x64 or real_dtype(dtype) == np.dtype(np.float64):
        return np.dtype(jnp.float64)
    return np.dtype(jnp.float32)


def _host_log(decay: Any) -> float | None:
    r""":math:`\log\beta` in double precision for a concrete scalar :math:`0 < \beta < 1`, else None."""
    value = _checks.concrete(decay)
    if value is None or value.ndim or not 0 < float(value) < 1:
        return None
    return math.log(float(value))


def power(decay: chex.Numeric, count: chex.Array, dtype: Any, precise: bool = False) -> chex.Array:
    r""":math:`\beta^t` in ``dtype``; ``precise``: as :math:`\exp(t \log\beta)` with :math:`\log\beta` in double."""
    log_decay = _host_log(decay) if precise else None
    if log_decay is None:
        return jnp.asarray(decay, dtype) ** count
    return jnp.exp(jnp.asarray(count, dtype) * jnp.asarray(log_decay, dtype))


def one_minus_power(decay: chex.Numeric, count: chex.Array, dtype: Any, precise: bool = False) -> chex.Array:
    r""":math:`1 - \beta^t` in ``dtype`` (float32 or wider).

    Default: ``1 - beta ** t`` with :math:`\beta` rounded to ``dtype`` first, as optax forms it (for
    :math:`\beta = 0.999` in float32 that is up to 2e-5 relative off the exact value, 2.2e-4 for 0.9999, over
    steps 1 to 10^4).
    ``precise``: :math:`-\mathrm{expm1}(t \log\beta)` with :math:`\log\beta` taken in double precision
    on the host (for a concrete :math:`\beta`; a traced one takes the default), accurate to a few ulp of
    ``dtype``, which is what ``torch.optim`` gets by forming it in double.
    """
    log_decay = _host_log(decay) if precise else None
    if log_decay is None:
        return 1 - jnp.asarray(decay, dtype) ** count
    return -jnp.expm1(jnp.asarray(count, dtype) * jnp.asarray(log_decay, dtype))


def per_dtype(scalar: Callable[[np.dtype], Any]) -> Callable[[Any], Any]:
    """``scalar(dtype)`` traced once per dtype (and kept for the rest of one update): every leaf of that dtype
    shares it. For scalars that only scale a leaf's result (RAdam's rectification, NAdam's coefficients,
    ``eps_on_raw_nu``'s epsilon) the value is the same either way, and tracing a copy per leaf costs a few jnp
    operations per leaf. (Not used for the bias correction's divisor: see :func:`debias`.)"""
    cached = functools.cache(scalar)
    return lambda dtype: cached(np.dtype(dtype))


def debias(moments: Any, decay: chex.Numeric, count: chex.Array, precise: bool = False) -> Any:
    r""":math:`x / (1 - \beta^t)` for every leaf x of ``moments``, with :math:`1 - \beta^t` formed in float32 or
    wider (:func:`one_minus_power`) and cast to the leaf's dtype.

    A low-precision :math:`\beta^t` rounds to 1 early in training and would divide by zero, so the factor is
    formed wide and only then cast. The factor is traced for each leaf on purpose: XLA's CPU compiler turns the
    division by a leaf's own scalar into a product with its reciprocal, which is what the fused kernels compute
    (bitwise); a factor shared by all leaves made it compile another form, and an explicit reciprocal was 1 ulp
    off optax on an H100 (a 25-step training loop grew that to 4e-5 of the loss).
    """
    return jax.tree.map(
        lambda x: x / one_minus_power(decay, count, correction_dtype(x.dtype), precise).astype(real_dtype(x.dtype)),
        moments,
    )


def check_correctable(name: str, decay: Any, moments: Any, precise: bool) -> None:
    """A concrete decay rate that rounds to 1 where 1 - beta^t is formed would make the correction 0 (a zero or
    infinite step): refused by name (optax takes it and returns zeros or inf)."""
    value = _checks.concrete(decay)
    if precise or value is None or value.ndim:
        return
    for dtype in {correction_dtype(x.dtype) for x in jax.tree.leaves(moments)}:
        if float(value) < 1 and np.asarray(value, dtype) == 1:
            raise ValueError(
                f'{name}={float(value)!r} rounds to 1.0 in {dtype.name}, where the bias correction 1 - {name}^t '
                'is formed, so it would be 0 and the step 0 or inf; use a smaller decay (the PyTorch presets, '
                'adam_jax.presets.pytorch, form 1 - beta^t in double precision).'
            )


def bias_correct(*, mu: bool = True, nu: bool = True) -> optax.GradientTransformationExtraArgs:
    r"""Bias correction of both moments (Kingma & Ba 2014, Algorithm 1).

    .. math::

       \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}

    The decay rates and :math:`t` come from the :class:`Moments` value made by
    :func:`scale_by_moments`, so they cannot disagree with it. A moment that is
    already unbiased (AdaMax's :math:`u_t`, or a moment corrected earlier in the
    chain) is left as it is.

    Args:
      mu: correct the first moment (``False``: leave :math:`m_t` as it is, as
        AMSGrad's paper does).
      nu: correct the second moment.
    """
    _checks.check_bool('mu', mu)
    _checks.check_bool('nu', nu)

    def init(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, 'bias_correct')
        precise = moments.precise_corrections
        changes = {}
        if mu and not moments.mu_debiased:
            check_correctable('b1', moments.b1, moments.mu, precise)
            m_hat = debias(moments.mu, moments.b1, moments.count, precise)
            changes.update(mu=m_hat, mu_debiased=True)
        if nu and not moments.nu_debiased:
            check_correctable('b2', moments.b2, moments.nu, precise)
            v_hat = debias(moments.nu, moments.b2, moments.count, precise)
            changes.update(nu=v_hat, nu_debiased=True)
        return moments.replace(**changes), state

    return optax.GradientTransformationExtraArgs(init, update)


class MaxSecondMomentState(NamedTuple):
    """State of :func:`max_second_moment`."""

    nu_max: optax.Updates


def max_second_moment(*, nu_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad's running maximum of the second moment (Reddi, Kale & Kumar 2018, Algorithm 2).

    .. math::

       \hat v_t = \max(\hat v_{t-1}, v_t)

    The maximum is taken of the second moment as it arrives, so the chain order
    chooses the variant: before :func:`bias_correct` it is the maximum of the raw
    :math:`v_t`, corrected afterwards by :math:`1 - \beta_2^t` (PyTorch's
    ``amsgrad=True``); after it, the maximum of the corrected
    :math:`v_t / (1 - \beta_2^t)` (``optax.amsgrad``); with no correction at all,
    the paper's Algorithm 2. Whether ``nu`` was corrected passes through
    unchanged, so a later :func:`bias_correct` corrects the maximum only if the
    maximum was taken of raw moments.

    Args:
      nu_dtype: storage dtype of :math:`\hat v`, a float dtype (default: as
        :func:`scale_by_moments` stores :math:`v`: the real dtype of the parameters, float32 for float16
        ones, whose small maxima would flush to zero). The maximum is not kept 8-bit or factored.
    """
    if isinstance(nu_dtype, factored.Factored) or quantization.as_spec('nu_dtype', nu_dtype) is not None:
        raise ValueError(
            f"max_second_moment (AMSGrad's running maximum of v) keeps the maximum in a float dtype; "
            f"nu_dtype={nu_dtype!r} (8-bit or factored storage) is not supported with it. Use None, 'float32' "
            "or 'bfloat16'."
        )
    nu_dtype, _ = moment_storage('nu_dtype', nu_dtype, signed=False)  # float16 refused, as for v itself

    def init(params: optax.Params) -> MaxSecondMomentState:
        return MaxSecondMomentState(
            nu_max=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=nu_dtype or default_nu_dtype(p.dtype)), params)
        )

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, 'max_second_moment')
        nu_max = jax.tree.map(lambda v, old: jnp.maximum(v, cast(old, v.dtype)), moments.nu, state.nu_max)
        new_state = MaxSecondMomentState(
            nu_max=jax.tree.map(lambda new, old: cast(new, old.dtype), nu_max, state.nu_max)
        )
        return moments.replace(nu=nu_max), new_state

    return optax.GradientTransformationExtraArgs(init, update)


class NesterovState(NamedTuple):
    """State of :func:`nesterov_momentum` with a momentum schedule."""

    mu_product: chex.Array  # \prod_{i \le t} \mu_i, a scalar in float32 or wider


def _momentum(b1: chex.Numeric, momentum_decay: chex.Numeric, t: chex.Array, wide: np.dtype) -> chex.Array:
    """Dozat's schedule as PyTorch writes it: mu_t = b1 (1 - 0.5 * 0.96^(t psi)), in ``wide``."""
    b1, momentum_decay, t = (jnp.asarray(x).astype(wide) for x in (b1, momentum_decay, t))
    return b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))


def nesterov_coefficients(b1: chex.Numeric, count: chex.Array, wide: Any) -> tuple[chex.Array, chex.Array]:
    r"""NAdam's coefficients with a constant :math:`\beta_1`, in ``wide``: :math:`c_m = \beta_1 / (1 -
    \beta_1^{t+1})` and :math:`c_g = (1 - \beta_1) / (1 - \beta_1^t)`, so that :math:`\hat m_t = c_m m_t + c_g g_t`
    (the fused kernels take these same values)."""
    b1_wide = jnp.asarray(b1, wide)
    return b1 / (1 - b1_wide ** saturating_increment(count)), (1 - b1) / (1 - b1_wide**count)


def nesterov_momentum(momentum_decay: chex.Numeric | None = None) -> optax.GradientTransformationExtraArgs:
    r"""NAdam's look-ahead first moment (Dozat 2016, "Incorporating Nesterov Momentum into Adam").

    .. math::

       \hat m_t = \frac{\mu_{t+1} m_t}{1 - \prod_{i=1}^{t+1} \mu_i}
                 + \frac{(1 - \mu_t) g_t}{1 - \prod_{i=1}^{t} \mu_i}

    With ``momentum_decay=None`` the momentum is constant, :math:`\mu_t =
    \beta_1`, and the products are :math:`\beta_1^{t+1}`, :math:`\beta_1^t`
    (``optax.nadam``, i.e. ``optax.adam(nesterov=True)``). With a number
    :math:`\psi` it follows Dozat's schedule as ``torch.optim.NAdam`` does,
    :math:`\mu_t = \beta_1 (1 - \tfrac12 \, 0.96^{t\psi})`, and keeps the
    running product :math:`\prod_{i \le t} \mu_i` in its state. :math:`m_t`
    itself stays the EMA with the constant :math:`\beta_1`.

    The result is already unbiased: put this transform after
    :func:`scale_by_moments` and before :func:`bias_correct`, which then
    corrects only the second moment.

    Args:
      momentum_decay: :math:`\psi \ge 0` (PyTorch's default is 4e-3), or
        ``None`` for a constant :math:`\beta_1`.
    """
    scheduled = momentum_decay is not None
    if scheduled:
        _checks.check_nonnegative('momentum_decay', momentum_decay)

    def init(params: optax.Params) -> NesterovState | optax.EmptyState:
        if not scheduled:
            return optax.EmptyState()
        wide = max((correction_dtype(p.dtype) for p in jax.tree.leaves(params)), default=np.dtype(np.float32))
        return NesterovState(mu_product=replicated_zero(params, wide) + 1)  # placed like the step count

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        moments = require_moments(updates, 'nesterov_momentum')
        if moments.mu_debiased:
            raise TypeError(
                'nesterov_momentum needs the raw first moment, but it was already bias-corrected. '
                'Put nesterov_momentum() before bias_correct() in the chain.'
            )
        b1, t = moments.b1, moments.count
        t_next = saturating_increment(t)
        if scheduled:
            wide = state.mu_product.dtype
            mu_t = _momentum(b1, momentum_decay, t, wide)
            mu_next = _momentum(b1, momentum_decay, t_next, wide)
            product = state.mu_product * mu_t
            state = NesterovState(mu_product=product)
            coefficients = lambda wide: (mu_next / (1 - product * mu_next), (1 - mu_t) / (1 - product))
        else:  # mu_t = b1: the products are powers, formed in each leaf's correction dtype like debias
            check_correctable('b1', b1, moments.mu, moments.precise_corrections)
            coefficients = functools.partial(nesterov_coefficients, b1, t)

        @per_dtype
        def cast_coefficients(dtype):
            c_m, c_g = coefficients(correction_dtype(dtype))
            return c_m.astype(real_dtype(dtype)), c_g.astype(real_dtype(dtype))

        def look_ahead(m, g):
            c_m, c_g = cast_coefficients(m.dtype)
            return c_m * m + c_g * cast(g, m.dtype)

        m_hat = jax.tree.map(look_ahead, moments.mu, moments.grad)
        return moments.replace(mu=m_hat, mu_debiased=True), state

    return optax.GradientTransformationExtraArgs(init, update)
