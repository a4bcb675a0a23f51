r"""The optimizers: each a short chain of the transforms, with optax's names and defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax.correction import bias_correct
from adam_jax.decay import decoupled_decay
from adam_jax.factored import scale_by_factored_rms
from adam_jax.moments import scale_by_moments
from adam_jax.normalize import scale_by_rms

ScalarOrSchedule = optax.ScalarOrSchedule
MaskOrFn = Any | Callable[[optax.Params], Any] | None


def _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype) -> optax.GradientTransformationExtraArgs:
    return optax.chain(
        scale_by_moments(b1, b2, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        bias_correct(),
        scale_by_rms(eps, eps_root),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    *,
    nu_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam (Kingma & Ba 2014, "Adam: A Method for Stochastic Optimization", Algorithm 1).

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

       \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t)

       \theta_t = \theta_{t-1} - \alpha_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

    Chain: ``scale_by_moments(b1, b2) -> bias_correct() -> scale_by_rms(eps,
    eps_root) -> optax.scale_by_learning_rate(learning_rate)``. Equal to
    ``optax.adam`` with the same arguments.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: chex.Numeric = 1e-4,
    mask: MaskOrFn = None,
    *,
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
    see :func:`loshchilov_hutter_adamw`.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype),
        decoupled_decay(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def loshchilov_hutter_adamw(
    learning_rate: chex.Numeric,
    schedule_multiplier: ScalarOrSchedule = 1.0,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: chex.Numeric = 1e-4,
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
    return optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nu_dtype),
        optax.scale(learning_rate),
        decoupled_decay(weight_decay, mask),
        optax.scale_by_learning_rate(schedule_multiplier),
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
        scale_by_moments(b1, b2, mu_dtype=mu_dtype, nu_dtype=nu_dtype, second_moment='max', max_eps=eps),
        bias_correct(),
        scale_by_rms(eps=0.0),
        optax.scale_by_learning_rate(learning_rate),
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
    defaults are optax's, and the result equals ``optax.adafactor``. With
    ``learning_rate=None`` the step is :math:`\max(\epsilon_2,
    \mathrm{RMS}(\theta))\hat U_t` alone (the paper's relative step size
    without its :math:`\min(10^{-2}, 1/\sqrt t)` schedule, as in optax).
    """
    if learning_rate is not None:
        _checks.check_learning_rate(learning_rate)
    _checks.check_nonnegative('eps', eps)
    if momentum is not None:
        _checks.check_decay('momentum', momentum)
    tx = [scale_by_factored_rms(decay_rate, decay_offset, min_dim_size_to_factor, eps, factored)]
    if clipping_threshold is not None:
        tx.append(optax.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        tx.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        tx.append(optax.scale_by_param_block_rms())
    if momentum is not None:
        tx.append(optax.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        tx.append(optax.add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)
