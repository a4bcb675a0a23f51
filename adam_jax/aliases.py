r"""The optimizers: each a short chain of the transforms, with optax's names and defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._placement import replicated_zero
from adam_jax.correction import bias_correct, max_second_moment, nesterov_momentum
from adam_jax.decay import decoupled_decay
from adam_jax.factored import scale_by_factored_rms
from adam_jax.moments import scale_by_moments
from adam_jax.normalize import scale_by_rectified_rms, scale_by_rms
from adam_jax.sign import scale_by_sign_momentum
from adam_jax.trust_ratio import trust_ratio

ScalarOrSchedule = optax.ScalarOrSchedule
MaskOrFn = Any | Callable[[optax.Params], Any] | None


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> optax.GradientTransformation:
    """``optax.scale_by_learning_rate``, with a schedule's step count placed where the params are.

    optax starts the count on the default device; on params sharded over a mesh the first jitted step returns it
    replicated on the mesh, and the step compiles a second time. Here ``init`` places it like the moments' count.
    """
    tx = optax.scale_by_learning_rate(learning_rate, flip_sign=flip_sign)
    if not callable(learning_rate):
        return tx

    def init(params: optax.Params) -> optax.ScaleByScheduleState:
        return optax.ScaleByScheduleState(count=replicated_zero(params, jnp.int32))

    return optax.GradientTransformation(init, tx.update)


def corrected_moments(b1, b2, mu_dtype, nu_dtype, *before_correction, **moment_kwargs) -> list:
    """The moment stage up to the corrected moments: ``scale_by_moments -> *before_correction ->
    bias_correct`` (``before_correction``: e.g. ``nesterov_momentum()``, ``max_second_moment()``)."""
    moments = scale_by_moments(b1, b2, mu_dtype=mu_dtype, nu_dtype=nu_dtype, **moment_kwargs)
    return [moments, *before_correction, bias_correct()]


def _look_ahead(nesterov: bool) -> list:
    _checks.check_bool('nesterov', nesterov)
    return [nesterov_momentum()] if nesterov else []


def _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov=False) -> optax.GradientTransformationExtraArgs:
    stage = corrected_moments(b1, b2, mu_dtype, nu_dtype, *_look_ahead(nesterov))
    return optax.chain(*stage, scale_by_rms(eps, eps_root))


def adamax_direction(
    b1, b2, eps, mu_dtype, nu_dtype, precise_corrections: bool = False
) -> optax.GradientTransformationExtraArgs:
    """AdaMax's direction; eps sits inside the max, u_t needs no correction and no root."""
    _checks.check_nonnegative('eps', eps)  # checked again as max_eps: named here as the caller passed it
    stage = corrected_moments(
        b1, b2, mu_dtype, nu_dtype, second_moment='max', max_eps=eps, precise_corrections=precise_corrections
    )
    return optax.chain(*stage, scale_by_rms(eps=0.0))


def adam(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam (Kingma & Ba 2014, "Adam: A Method for Stochastic Optimization", Algorithm 1).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

       \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t)

       \theta_t = \theta_{t-1} - \alpha_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

    Chain: ``scale_by_moments(b1, b2) -> bias_correct() -> scale_by_rms(eps,
    eps_root) -> optax.scale_by_learning_rate(learning_rate)``. With
    ``nesterov=True``, ``nesterov_momentum()`` comes before ``bias_correct()``
    (that is :func:`nadam`). Equal to ``optax.adam`` with the same arguments, except with a reduced-precision
    ``mu_dtype``: the step then uses the stored (rounded) moment, where optax's uses the unrounded one (README,
    "Lean optimizer state").
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \left(\frac{\hat m_t}{\sqrt{\hat v_t
       + \epsilon_{root}} + \epsilon} + \lambda \theta_{t-1}\right)

    Chain: Adam's direction ``-> decoupled_decay(weight_decay, mask) ->
    optax.scale_by_learning_rate(learning_rate)``. Equal to ``optax.adamw`` and
    to ``torch.optim.AdamW``: the decay is scaled by the whole learning rate.
    For the paper's form, where only the schedule multiplier scales the decay,
    see :func:`loshchilov_hutter_adamw`. ``nesterov=True`` is :func:`nadamw`.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov),
        decoupled_decay(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def loshchilov_hutter_adamw(
    learning_rate: chex.Numeric,
    schedule_multiplier: ScalarOrSchedule = 1.0,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW exactly as Loshchilov & Hutter (2019), Algorithm 2, line 12.

    .. math::

       \theta_t = \theta_{t-1} - \eta_t \left(\alpha \frac{\hat m_t}{\sqrt{\hat v_t}
       + \epsilon} + \lambda \theta_{t-1}\right)

    ``learning_rate`` is the constant :math:`\alpha`; ``schedule_multiplier``
    is :math:`\eta_t` (a number or a schedule), which alone scales the decay.
    With ``schedule_multiplier=1`` the decay is :math:`\lambda\theta` per step
    whatever :math:`\alpha` is, unlike :func:`adamw` (optax, PyTorch), where it
    is :math:`\alpha\lambda\theta`.

    Chain: Adam's direction ``-> optax.scale(learning_rate) ->
    decoupled_decay(weight_decay, mask) ->
    optax.scale_by_learning_rate(schedule_multiplier)``.
    """
    _checks.check_learning_rate(learning_rate)
    if callable(learning_rate):
        raise TypeError(
            'loshchilov_hutter_adamw: learning_rate is the constant alpha; pass a schedule as '
            'schedule_multiplier instead.'
        )
    _checks.check_learning_rate(schedule_multiplier, 'schedule_multiplier')
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype),
        optax.scale(learning_rate),
        decoupled_decay(weight_decay, mask),
        scale_by_learning_rate(schedule_multiplier),
    )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam: Adam with Nesterov momentum (Dozat 2016), with a constant :math:`\beta_1`.

    .. math::

       \hat m_t = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g_t}{1-\beta_1^t}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

    Chain: ``scale_by_moments -> nesterov_momentum() -> bias_correct() (v only) ->
    scale_by_rms -> lr``, i.e. ``adam(..., nesterov=True)``. Equal to
    ``optax.nadam``. PyTorch's NAdam (Dozat's momentum schedule) is
    :func:`adam_jax.presets.pytorch.nadam`. ``nesterov`` is there for optax's signature (``optax.nadam`` is
    ``optax.adam`` with ``nesterov=True``): ``nesterov=False`` gives :func:`adam`.
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW: :func:`nadam`'s direction with decoupled weight decay.

    Chain: ``scale_by_moments -> nesterov_momentum() -> bias_correct() ->
    scale_by_rms -> decoupled_decay -> lr``, i.e. ``adamw(..., nesterov=True)``.
    Equal to ``optax.nadamw``; ``nesterov=False`` gives :func:`adamw`.
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov, nu_dtype=nu_dtype
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad (Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond").

    .. math::

       \hat v_t = \max(\hat v_{t-1}, v_t / (1-\beta_2^t)), \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    Chain: ``scale_by_moments -> bias_correct(mu=bias_correction_mu,
    nu=bias_correction_nu) -> max_second_moment() -> scale_by_rms -> lr``: the
    maximum of the corrected second moment, as ``optax.amsgrad`` (equal to it).

    The paper's Algorithm 2 (with a constant :math:`\beta_1`) corrects neither
    moment: ``bias_correction_mu=False, bias_correction_nu=False`` (and
    ``eps=0`` for the paper's exact update). PyTorch's ``Adam(amsgrad=True)``
    takes the maximum of the raw :math:`v_t` and corrects it afterwards
    (:func:`adam_jax.presets.pytorch.adam`).
    """
    _checks.check_learning_rate(learning_rate)
    _checks.check_bool('bias_correction_mu', bias_correction_mu)
    _checks.check_bool('bias_correction_nu', bias_correction_nu)
    return optax.chain(
        scale_by_moments(b1, b2, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        bias_correct(mu=bias_correction_mu, nu=bias_correction_nu),
        max_second_moment(nu_dtype=nu_dtype),
        scale_by_rms(eps, eps_root),
        scale_by_learning_rate(learning_rate),
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    threshold: chex.Numeric = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam: Adam with the variance of the adaptive step rectified (Liu et al. 2020).

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \begin{cases} r_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
       + \epsilon) & \rho_t \ge \text{threshold} \\ \hat m_t & \text{otherwise} \end{cases}

    with :math:`\rho_t, r_t` as in :func:`adam_jax.scale_by_rectified_rms`.
    Chain: ``scale_by_moments -> [nesterov_momentum] -> bias_correct ->
    scale_by_rectified_rms(eps, eps_root, threshold) -> lr``. Equal to
    ``optax.radam``; PyTorch's (``rho_t > 5``, eps on the raw root) is
    :func:`adam_jax.presets.pytorch.radam`.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        *corrected_moments(b1, b2, mu_dtype, nu_dtype, *_look_ahead(nesterov)),
        scale_by_rectified_rms(eps, eps_root, threshold),
        scale_by_learning_rate(learning_rate),
    )


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-16,
    eps_root: chex.Numeric = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief (Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the
    Belief in Observed Gradients", Algorithm 2).

    .. math::

       s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{\hat m_t}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}

    Chain: ``scale_by_moments(second_moment='belief', belief_eps=eps_root) ->
    [nesterov_momentum] -> bias_correct -> scale_by_rms(eps) -> lr``. Equal to
    ``optax.adabelief``.
    """
    _checks.check_learning_rate(learning_rate)
    _checks.check_nonnegative('eps_root', eps_root)  # checked again as belief_eps: named here as passed
    stage = corrected_moments(
        b1, b2, mu_dtype, nu_dtype, *_look_ahead(nesterov), second_moment='belief', belief_eps=eps_root
    )
    return optax.chain(*stage, scale_by_rms(eps), scale_by_learning_rate(learning_rate))


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-6,
    eps_root: chex.Numeric = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LAMB: AdamW's direction scaled per layer by a trust ratio (You et al. 2020, Algorithm 2).

    .. math::

       r_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{\lVert\theta_{t-1}\rVert}{\lVert r_t + \lambda\theta_{t-1}\rVert}
       (r_t + \lambda\theta_{t-1})

    Chain: Adam's direction ``-> decoupled_decay(weight_decay, mask) ->
    trust_ratio() -> lr``. Equal to ``optax.lamb``.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype),
        decoupled_decay(weight_decay, mask),
        trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \left(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
       + \lambda\theta_{t-1}\right), \quad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Chain: ``scale_by_sign_momentum(b1, b2) -> decoupled_decay(weight_decay,
    mask) -> lr``. Lion keeps one moment, so it has no ``nu_dtype``. Equal to
    ``optax.lion``.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_sign_momentum(b1, b2, mu_dtype=mu_dtype),
        decoupled_decay(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaMax (Kingma & Ba 2014, Section 7.1, Algorithm 2).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon)

       \theta_t = \theta_{t-1} - \frac{\alpha_t}{1-\beta_1^t} \frac{m_t}{u_t}

    The infinity norm :math:`u_t` needs no bias correction. As in optax and
    PyTorch, :math:`\epsilon` sits inside the max (the paper has none). Chain:
    ``scale_by_moments(b1, b2, second_moment='max', max_eps=eps) ->
    bias_correct() -> scale_by_rms(eps=0) -> scale_by_learning_rate``. Equal to
    ``optax.adamax``.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        adamax_direction(b1, b2, eps, mu_dtype, nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaMaxW: :func:`adamax`'s direction with decoupled weight decay.

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \left(\frac{m_t}{(1-\beta_1^t) u_t} + \lambda\theta_{t-1}\right)

    Chain: AdaMax's direction ``-> decoupled_decay(weight_decay, mask) -> lr``.
    Equal to ``optax.adamaxw``.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        adamax_direction(b1, b2, eps, mu_dtype, nu_dtype),
        decoupled_decay(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: chex.Numeric = 0.8,
    decay_offset: chex.Numeric = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: chex.Numeric | None = 1.0,
    momentum: chex.Numeric | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: chex.Numeric = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost").

    .. math::

       \hat\beta_{2,t} = 1 - t^{-0.8}, \quad
       \hat V_t = \frac{R_t C_t}{\mathrm{mean}(R_t)}, \quad
       U_t = \frac{G_t}{\sqrt{\hat V_t}}, \quad
       \hat U_t = \frac{U_t}{\max(1, \mathrm{RMS}(U_t)/d)}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \hat U_t

    Chain: :func:`adam_jax.factored.scale_by_factored_rms` ``->
    optax.clip_by_block_rms(d) -> [scale by learning_rate] ->
    optax.scale_by_param_block_rms() -> [optax.ema(momentum)] ->
    [optax.add_decayed_weights] -> optax.scale(-1)``; the arguments and
    defaults are optax's, and the result equals ``optax.adafactor`` (but for a
    ``decay_offset`` above the step count, as in a fresh state for fine-tuning:
    NaN in optax, the first step's decay here). With
    ``learning_rate=None`` the step is :math:`\max(\epsilon_2,
    \mathrm{RMS}(\theta))\hat U_t` alone (the paper's relative step size
    without its :math:`\min(10^{-2}, 1/\sqrt t)` schedule, as in optax).
    """
    if learning_rate is not None:
        _checks.check_learning_rate(learning_rate)
    _checks.check_nonnegative('eps', eps)
    if momentum is not None:
        _checks.check_decay('momentum', momentum)
    if dtype_momentum is not None:  # None: optax.ema keeps the params' dtype
        dtype_momentum = _checks.float_dtype('dtype_momentum', dtype_momentum, complex_ok=False)
    if clipping_threshold is not None:
        _checks.check_range('clipping_threshold', clipping_threshold, 0.0, None, low_inclusive=False)
    if weight_decay_rate is not None and not callable(weight_decay_rate):
        _checks.check_nonnegative('weight_decay_rate', weight_decay_rate)
    _checks.check_bool('multiply_by_parameter_scale', multiply_by_parameter_scale)
    _checks.check_mask('weight_decay_mask', weight_decay_mask)
    _checks.check_bool('factored', factored)
    tx = [scale_by_factored_rms(decay_rate, decay_offset, min_dim_size_to_factor, eps, factored)]
    if clipping_threshold is not None:
        tx.append(optax.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        tx.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        tx.append(optax.scale_by_param_block_rms())
    if momentum is not None:
        tx.append(optax.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        tx.append(optax.add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)
