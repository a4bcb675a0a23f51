r"""The optimizers: each a short chain of the transforms, with optax's names and defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import optax

from adam_jax import _checks
from adam_jax.correction import bias_correct
from adam_jax.decay import decoupled_decay
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
        scale_by_moments(b1, b2, second_moment='max', max_eps=eps),
        bias_correct(),
        scale_by_rms(eps=0.0),
        optax.scale_by_learning_rate(learning_rate),
    )
