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
import numpy as np
import optax

from adam_jax import _checks, factored, quantization
from adam_jax._placement import replicated_zero
from adam_jax._tree import (
    abs_sq,
    cast,
    check_inexact_leaves,
    check_same_structure,
    compute_dtype,
    real_dtype,
    without_variables,
)

SECOND_MOMENTS = ('square', 'max', 'belief')
_INT32_MAX = jnp.iinfo(jnp.int32).max


_ARRAY_ATTRIBUTES = frozenset({'dtype', 'shape', 'ndim', 'size', 'real', 'imag', 'conj', 'astype', 'sum', 'T'})


class MisplacedMomentsError(TypeError, AttributeError):
    """An array's attribute asked of a :class:`Moments` value: a transform that works on arrays inside the moment
    stage. A TypeError like the library's other misplaced-transform errors, and an AttributeError for ``hasattr``."""


@dataclasses.dataclass(frozen=True)
class Moments:
    r"""What flows between the transforms of the moment stage.

    Attributes:
      grad: the gradient :math:`g_t` this step was given.
      mu: the first moment :math:`m_t` (or :math:`\hat m_t` once corrected).
      nu: the second moment :math:`v_t`, or AdaMax's :math:`u_t`.
      count: the step number :math:`t` (int32, 1 on the first step).
      b1, b2: the decay rates that produced ``mu`` and ``nu``.
      second_moment: ``'square'`` (an EMA of :math:`|g|^2`), ``'max'``
        (AdaMax's running max of :math:`|g|`, already in gradient units) or
        ``'belief'`` (AdaBelief's EMA of :math:`|g - m|^2`).
      mu_debiased, nu_debiased: whether a moment is free of the zero-start bias
        (after :func:`bias_correct`, or by construction for AdaMax's ``u``).
      precise_corrections: form :math:`1 - \beta^t` from :math:`\log\beta` taken in double
        precision (see :func:`adam_jax.correction.one_minus_power`), as ``torch.optim`` does.
      update_dtype: per leaf, the dtype of the direction that ends the stage: without a ``mu_dtype`` the
        gradient's promoted with the params' (in which mu is stored), so float32 params with bfloat16 gradients
        get float32 updates, as in optax. ``None`` (a ``mu_dtype`` was asked for): the gradient's dtype.

    Not a pytree: a transform that maps over every leaf of the updates meets it as a single value, which
    refuses arithmetic and conversion to an array with a ``TypeError`` saying where such a transform belongs.
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
    precise_corrections: bool = False
    update_dtype: Any = None

    def replace(self, **changes: Any) -> Moments:
        return dataclasses.replace(self, **changes)

    # Moments is deliberately not a pytree: a transform that maps over every leaf (optax.scale,
    # optax.clip_by_global_norm, ...) would otherwise reach count, b1 and b2 too (optax.scale(0.5) halved them
    # and turned the int32 step count into 0.5, with no error). As one leaf, the value refuses arithmetic and
    # conversion to an array with a message that says where such a transform belongs.
    def _misplaced(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "A transform that works on arrays received the moment stage's Moments value (what flows from "
            'scale_by_moments() to the transform that ends the stage, such as scale_by_rms()). Transforms of the '
            'gradient (e.g. optax.clip_by_global_norm) go before scale_by_moments(), transforms of the update '
            '(e.g. optax.scale) after scale_by_rms() or another transform that turns moments into a direction.'
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _misplaced
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = _misplaced
    __neg__ = __pos__ = __abs__ = __lt__ = __le__ = __gt__ = __ge__ = _misplaced
    __array__ = _misplaced

    def __getattr__(self, name: str) -> Any:  # only for names the dataclass does not have
        # An AttributeError (hasattr and getattr with a default keep working); for an array's attribute, asked by a
        # transform that works on arrays, also a TypeError (a transform in the wrong place, as everywhere else in
        # the library) that says where the transform goes.
        try:
            self._misplaced()
        except TypeError as error:
            message = f'{type(self).__name__!r} object has no attribute {name!r}.'
            if name in _ARRAY_ATTRIBUTES:
                raise MisplacedMomentsError(f'{message} {error}') from None
            raise AttributeError(message) from None


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


# Where a transform that takes the gradients goes (reject_moments's advice for it).
TAKES_GRADIENTS = (
    'It takes the gradients: use it in place of the moment stage (scale_by_moments() ... scale_by_rms()), '
    'not inside it.'
)


def reject_moments(value: Any, name: str, advice: str | None = None) -> None:
    """Lets a params-shaped transform refuse a Moments value; ``advice`` says where the transform goes (by default:
    after the end of the moment stage)."""
    if isinstance(value, Moments):
        advice = advice or (
            'End the moment stage first: put scale_by_rms() (or another transform that turns moments into a '
            f'direction) before {name} in the chain.'
        )
        raise TypeError(
            f"{name} works on a params-shaped tree, but received the moment stage's Moments value. {advice}"
        )


def saturating_increment(count: chex.Array) -> chex.Array:
    """count + 1 that stays at 2**31 - 1 instead of wrapping to a negative number."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def default_nu_dtype(param_dtype: Any) -> jnp.dtype:
    r"""Storage dtype of ``nu`` when ``nu_dtype`` is None: the param's real dtype, but float32 for float16.

    float16 (5 exponent bits) rounds :math:`(1-\beta_2) g^2` to zero for :math:`|g| \lesssim 5 \cdot 10^{-3}`
    (with :math:`\beta_2 = 0.999`), and a decaying :math:`v` reaches zero the same way. A zero :math:`v`
    under a non-zero :math:`m` makes :math:`m / (\sqrt{v} + \epsilon)` overflow to inf (optax issue #1754).
    bfloat16 has float32's exponent range and keeps its own dtype. ``nu_dtype=float16`` is refused.
    """
    dtype = real_dtype(param_dtype)
    return jnp.dtype(jnp.float32) if dtype == jnp.float16 else dtype


def _ema(decay: chex.Numeric, old: chex.Array, new: chex.Array) -> chex.Array:
    return (1 - decay) * new + decay * old


def is_compressed(x: Any) -> bool:
    """A moment stored as a pytree of its own (quantized or factored): one leaf of the params tree."""
    return quantization.is_quantized(x) or factored.is_factored(x)


def _state_leaf(x: Any) -> bool:
    return x is None or is_compressed(x)


def direction_dtype(g: Any, stored_mu: Any) -> np.dtype:
    """The direction's dtype for a leaf whose mu is stored in the params' dtype: see ``Moments.update_dtype``."""
    stored = stored_mu.dtype if jnp.iscomplexobj(g) else real_dtype(stored_mu.dtype)  # real g: a real direction
    return np.dtype(jnp.result_type(g.dtype, stored))


def moment_storage(name: str, value: Any, signed: bool) -> tuple[np.dtype | None, Any]:
    """A moment's storage: a float dtype, an 8-bit block-wise spec (:mod:`adam_jax.quantization`)
    or, for the second moment, a factored one (:mod:`adam_jax.factored`)."""
    if isinstance(value, factored.Factored):
        if signed:
            raise ValueError(f'{name}=Factored(...) is for the second moment only (nu_dtype).')
        return None, value
    spec = quantization.as_spec(name, value)
    if spec is not None:
        if spec.signed != signed:
            want = "'int8' (signed map)" if signed else "'uint8' (unsigned map)"
            raise ValueError(f'{name}={value!r} does not fit this moment; use {want}.')
        return None, spec
    if value is None:
        return None, None
    if signed:
        dtype = _checks.float_dtype(name, value, others=" or 'int8' / BlockQuantized(signed=True)")
    else:  # v is real: a complex dtype stands for its real part
        others = " or 'uint8' / BlockQuantized(signed=False) / Factored()"
        dtype = real_dtype(_checks.float_dtype(name, value, others=others))
    if not signed and dtype == np.dtype(np.float16):
        raise ValueError(
            f'{name}=float16 cannot hold the second moment: v ~ g**2 flushes to zero for |g| < 2.4e-4, '
            "and then the step divides by eps alone. Use 'bfloat16' (float32's exponent range), "
            "'uint8' (8-bit, scaled per block) or float32."
        )
    return dtype, None


def scale_by_moments(
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    second_moment: str = 'square',
    max_eps: chex.Numeric = 0.0,
    belief_eps: chex.Numeric = 0.0,
    precise_corrections: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""First and second moment estimates (Kingma & Ba 2014, Algorithm 1).

    .. math::

       m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t

       v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2 \quad (\text{second\_moment='square'})

       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon_{max}) \quad (\text{second\_moment='max'},
       \text{AdaMax, Algorithm 2})

       s_t = \beta_2 s_{t-1} + (1 - \beta_2) |g_t - m_t|^2 + \epsilon_{belief} \quad
       (\text{second\_moment='belief'}, \text{AdaBelief, Zhuang et al. 2020, Algorithm 2})

    The step count :math:`t` is an int32 that saturates at :math:`2^{31}-1`.
    Moments are computed in float32 or wider and stored in ``mu_dtype`` /
    ``nu_dtype`` (default: the dtype of the parameters; for complex
    parameters ``nu`` is real and stored in the matching real dtype; for
    float16 parameters ``nu`` is stored in float32, see :func:`default_nu_dtype`).
    Integer and boolean parameters are rejected by ``init`` with a ``TypeError``
    naming their path: exclude them with ``optax.masked`` or
    ``optax.multi_transform`` (``optax.set_to_zero()`` for that group).

    Lean state. ``'bfloat16'`` halves the state: bfloat16 has float32's
    exponent range, so :math:`v \approx g^2` underflows only where float32's
    would. float16 cannot hold :math:`v` (it flushes to zero below
    :math:`6 \cdot 10^{-8}`, i.e. for :math:`|g| < 2.4 \cdot 10^{-4}`, and the
    step would then divide by :math:`\epsilon` alone): ``nu_dtype=float16`` is
    refused, and for float16 parameters the default ``nu`` is float32 (float16
    ``mu`` is allowed: where it underflows the step is merely zero). ``'int8'``
    (for ``mu``) and ``'uint8'`` (for ``nu``), or a
    :class:`~adam_jax.quantization.BlockQuantized` spec, store the moment in 8
    bits, block-wise quantized with a float32 absmax per block of 256 elements
    (Dettmers et al. 2021); the scale lives in the absmax, so small :math:`v`
    do not underflow either. Leaves with fewer than 4096 elements (and complex
    leaves) stay in float32 or wider. The stored moment is dequantized, updated
    and requantized inside the step. With a low-precision float storage the
    later stages see the moments as stored, widened to float32 or wider (so the
    step uses the state the next step will read, and XLA can update it in
    place); with 8-bit storage they see the float32 moment before it is
    requantized (as in Dettmers et al.). Either way
    :math:`\epsilon` (e.g. ``1e-8``, below float16's range) is added in float32 or wider
    and never vanishes.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      mu_dtype: storage of the first moment: a float dtype, ``'int8'`` or a
        signed ``BlockQuantized(...)`` (8-bit block-wise).
      nu_dtype: storage of the second moment: a float dtype other than
        float16, ``'uint8'``, an unsigned ``BlockQuantized(...)``, or
        ``Factored(...)`` (row and column statistics, Shazeer & Stern 2018;
        see :mod:`adam_jax.factored`).
      second_moment: ``'square'`` for Adam's :math:`v_t`, ``'max'`` for
        AdaMax's exponentially weighted infinity norm :math:`u_t`, ``'belief'``
        for AdaBelief's :math:`s_t` (not with 8-bit ``nu``: see the error it raises).
      max_eps: with ``second_moment='max'``, added to :math:`|g_t|` inside the
        max (where optax and PyTorch put AdaMax's epsilon). Must be 0 otherwise.
      precise_corrections: the later stages (:func:`bias_correct`, :func:`scale_by_rms`,
        :func:`scale_by_rectified_rms`) form :math:`1 - \beta^t` as
        :math:`-\mathrm{expm1}(t \log\beta)` with :math:`\log\beta` from double precision, accurate to
        float32 even for :math:`\beta` near 1, as ``torch.optim`` does in double (the PyTorch presets set
        it). ``False`` (default) forms :math:`\beta^t` in float32 from :math:`\beta` rounded to float32,
        as ``optax`` does: up to 2e-5 relative off for :math:`\beta = 0.999`, 2.2e-4 for 0.9999 (steps 1 to 10^4).
      belief_eps: with ``second_moment='belief'``, added to :math:`s_t` every
        step and kept in the state (optax's ``eps_root`` of ``adabelief``).
        Must be 0 otherwise.

    Returns:
      A transform whose update returns a :class:`Moments` value; follow it with
      moment-stage transforms and end the stage with :func:`scale_by_rms`.
    """
    _checks.check_decay('b1', b1)
    _checks.check_decay('b2', b2)
    _checks.check_choice('second_moment', second_moment, SECOND_MOMENTS)
    _checks.check_bool('precise_corrections', precise_corrections)
    _checks.check_nonnegative('max_eps', max_eps)
    if second_moment != 'max' and _checks.is_known_nonzero(max_eps):
        raise ValueError(f"max_eps is only used with second_moment='max', got max_eps={max_eps!r}.")
    _checks.check_nonnegative('belief_eps', belief_eps)
    if second_moment != 'belief' and _checks.is_known_nonzero(belief_eps):
        raise ValueError(f"belief_eps is only used with second_moment='belief', got belief_eps={belief_eps!r}.")
    requested_nu = nu_dtype
    mu_dtype, mu_spec = moment_storage('mu_dtype', mu_dtype, signed=True)
    nu_dtype, nu_spec = moment_storage('nu_dtype', nu_dtype, signed=False)
    if second_moment == 'belief' and isinstance(nu_spec, quantization.BlockQuantized):
        raise ValueError(
            f"nu_dtype must be a float dtype ('float32', 'bfloat16') for AdaBelief's second moment s_t, got "
            f'{requested_nu!r} (8-bit): (g - m)^2 is near 0 wherever the gradient is well predicted, the 8-bit map '
            'rounds values more than 1e-7 below their block maximum to 0, and the step would then divide by eps alone '
            "(1e-16 by default: steps of thousands of learning rates). mu_dtype='int8' is fine."
        )
    if second_moment != 'square' and isinstance(nu_spec, factored.Factored):
        raise ValueError(
            f"nu_dtype=Factored(...) needs second_moment='square', got second_moment={second_moment!r}: "
            'only an EMA of squared gradients factors into row and column statistics.'
        )

    def zeros(p, dtype, spec, default):
        if isinstance(spec, factored.Factored) and spec.applies_to(p):
            return factored.zeros_like(p, spec.min_dim_size_to_factor, compute_dtype(default))
        if spec is not None and spec.applies_to(p):
            return quantization.zeros_like(p, spec)
        if spec is not None:  # too small to quantize or factor: full precision
            dtype = compute_dtype(default)
        return jnp.zeros_like(p, dtype=dtype or default)

    def init(params: optax.Params) -> MomentsState:
        check_inexact_leaves('scale_by_moments', params)
        if mu_spec is not None or nu_spec is not None:  # compressed moments are pytrees: build them from bare arrays
            params = without_variables(params)
        mu = jax.tree.map(lambda p: zeros(p, mu_dtype, mu_spec, p.dtype), params)
        nu = jax.tree.map(lambda p: zeros(p, nu_dtype, nu_spec, default_nu_dtype(p.dtype)), params)
        return MomentsState(count=replicated_zero(params, jnp.int32), mu=mu, nu=nu)

    def store(new, old):
        if factored.is_factored(old):
            return new
        if quantization.is_quantized(old):
            return quantization.requantize(new, old)
        return cast(new, old.dtype)

    def as_stored(new, stored):
        if factored.is_factored(stored):
            return stored.reconstruct()
        if quantization.is_quantized(stored) or stored.dtype == new.dtype:
            return new
        return cast(stored, new.dtype)

    def update_mu(g, mu):
        mu = quantization.dequantize(mu) if quantization.is_quantized(mu) else mu
        if jnp.iscomplexobj(g) and not jnp.iscomplexobj(mu):
            raise TypeError(
                f'mu_dtype={mu.dtype} cannot hold the complex first moment of a {g.dtype} gradient '
                'without dropping its imaginary part; use a complex mu_dtype (e.g. complex64) or None.'
            )
        cdt = compute_dtype(g.dtype, mu.dtype)
        return _ema(b1, cast(mu, cdt), cast(g, cdt))

    def update_nu(g, nu, m):
        if factored.is_factored(nu):
            return nu.update(b2, abs_sq(cast(g, compute_dtype(g.dtype))))
        nu = quantization.dequantize(nu) if quantization.is_quantized(nu) else nu
        cdt = compute_dtype(real_dtype(g.dtype), nu.dtype)
        if second_moment == 'max':
            return jnp.maximum(cast(jnp.abs(g), cdt) + max_eps, b2 * cast(nu, cdt))
        if second_moment == 'belief':  # the prediction error g_t - m_t instead of g_t
            return _ema(b2, cast(nu, cdt), cast(abs_sq(cast(g, m.dtype) - m), cdt)) + belief_eps
        return _ema(b2, cast(nu, cdt), cast(abs_sq(cast(g, compute_dtype(g.dtype))), cdt))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if isinstance(updates, Moments):
            raise TypeError(
                'scale_by_moments received a Moments value: a chain has one moment stage, '
                'so scale_by_moments must come first in it (after params-shaped pre-processing '
                'such as optax.clip_by_global_norm).'
            )
        if not isinstance(state, MomentsState):
            raise TypeError(
                f'scale_by_moments: the state must be the MomentsState that its init returned, got '
                f'{type(state).__name__}. Was it built by another optimizer (e.g. optax.adam(...).init)?'
            )
        check_same_structure('gradient', updates, 'optimizer state (mu)', state.mu, is_leaf=_state_leaf)
        count = saturating_increment(state.count)
        mu = jax.tree.map(update_mu, updates, state.mu)
        nu = jax.tree.map(update_nu, updates, state.nu, mu)
        new_state = MomentsState(
            count=count,
            mu=jax.tree.map(store, mu, state.mu),
            nu=jax.tree.map(store, nu, state.nu, is_leaf=is_compressed),
        )
        moments = Moments(
            grad=updates,
            mu=jax.tree.map(as_stored, mu, new_state.mu),
            nu=jax.tree.map(as_stored, nu, new_state.nu, is_leaf=is_compressed),
            count=count,
            b1=b1,
            b2=b2,
            second_moment=second_moment,
            nu_debiased=second_moment == 'max',
            precise_corrections=precise_corrections,
            # mu stored in the params' dtype (no mu_dtype asked for): the direction takes it in too.
            update_dtype=None
            if mu_dtype is not None or mu_spec is not None
            else jax.tree.map(direction_dtype, updates, state.mu),
        )
        return moments, new_state

    return optax.GradientTransformationExtraArgs(init, update)
