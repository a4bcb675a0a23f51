r"""``torch.optim``'s Adam family as chains, with PyTorch's keyword names and defaults.

Each constructor returns an ``optax.GradientTransformationExtraArgs`` whose
trajectory equals the ``torch.optim`` optimizer of the same name (checked in
float64 to 1e-10 against torch 2.13). PyTorch's equations differ from optax's
in a few places, each of which is a different chain of the same transforms:

- ``weight_decay`` is L2 regularisation, :math:`g_t \leftarrow g_t + \lambda\theta_{t-1}`,
  i.e. :func:`adam_jax.decoupled_decay` placed *before* the moments, unless the
  decay is decoupled (``AdamW``, ``decoupled_weight_decay=True``), where it is
  placed after the direction, :math:`\theta_t = \theta_{t-1} - \alpha(d_t +
  \lambda\theta_{t-1})`.
- ``maximize=True`` negates the gradient first (before the L2 term).
- ``amsgrad=True`` takes the maximum of the raw :math:`v_t` and corrects it
  afterwards: :func:`adam_jax.max_second_moment` before :func:`adam_jax.bias_correct`.
- NAdam follows Dozat's momentum schedule :math:`\mu_t = \beta_1(1 - \tfrac12
  0.96^{t\psi})` (:func:`adam_jax.nesterov_momentum` with ``momentum_decay``).
- RAdam rectifies only when :math:`\rho_t > 5` and adds eps to the raw
  :math:`\sqrt{v_t}` (:func:`adam_jax.scale_by_rectified_rms` with
  ``strict=True, eps_on_raw_nu=True``).
- Adamax puts eps inside the max, as optax does.

``lr`` may also be an optax schedule (the counterpart of a PyTorch LR scheduler
stepped every optimizer step); a decoupled decay is then scaled by the
scheduled learning rate, as PyTorch scales it by the group's current ``lr``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax.aliases import adamax_direction, corrected_moments, scale_by_learning_rate
from adam_jax.correction import max_second_moment, nesterov_momentum
from adam_jax.decay import decoupled_decay
from adam_jax.normalize import scale_by_rectified_rms, scale_by_rms

Betas = tuple[float, float]


def _torch_chain(
    lr: optax.ScalarOrSchedule,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    *direction: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """[-g] -> [g + wd theta] -> direction -> [+ wd theta] -> -lr: PyTorch's order of operations."""
    _checks.check_bool('decoupled_weight_decay', decoupled_weight_decay)
    _checks.check_bool('maximize', maximize)
    if not callable(lr):
        _checks.check_range('lr', lr, 0.0)  # torch.optim refuses a negative lr
    _checks.check_nonnegative('weight_decay', weight_decay)
    decay = decoupled_decay(weight_decay)
    chain = optax.chain(
        *([optax.scale(-1.0)] if maximize else []),
        *([] if decoupled_weight_decay else [decay]),
        *direction,
        *([decay] if decoupled_weight_decay else []),
        scale_by_learning_rate(lr),
    )

    def init(params: optax.Params) -> optax.OptState:
        _check_real(params)
        return chain.init(params)

    return optax.GradientTransformationExtraArgs(init, chain.update)


def _check_real(params: optax.Params) -> None:
    """Refuses complex params: torch.optim steps a complex parameter as its real view (view_as_real: second moments
    of the real and imaginary parts apart), while adam_jax keeps one moment of |g|^2."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(leaf):
            raise TypeError(
                f'adam_jax.presets.pytorch: the leaf at {jax.tree_util.keystr(path) or "<root>"} is complex '
                f'({leaf.dtype}). torch.optim steps a complex parameter as its real view (view_as_real: separate '
                'second moments for the real and imaginary parts); to reproduce that, optimize '
                'jnp.stack([p.real, p.imag], -1). adam_jax.adam(...) takes complex leaves with one moment of |g|^2.'
            )


def _betas(betas: Betas) -> Betas:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f'betas must be a pair (beta1, beta2), got {betas!r}.')
    _checks.check_decay('betas[0]', betas[0])  # named as the caller wrote them, not as the chain's b1, b2
    _checks.check_decay('betas[1]', betas[1])
    return betas[0], betas[1]


def adam(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adam``.

    .. math::

       g_t \leftarrow \pm g_t + \lambda\theta_{t-1}, \quad
       \theta_t = \theta_{t-1} - \alpha \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`v_t` replaced by :math:`\max_{s \le t} v_s` when ``amsgrad``.
    Chain: ``[scale(-1)] -> [decoupled_decay (L2)] -> scale_by_moments ->
    [max_second_moment] -> bias_correct -> scale_by_rms(eps) ->
    [decoupled_decay] -> scale_by_learning_rate(lr)``.
    """
    b1, b2 = _betas(betas)
    _checks.check_bool('amsgrad', amsgrad)
    return _torch_chain(
        lr,
        weight_decay,
        decoupled_weight_decay,
        maximize,
        *corrected_moments(
            b1,
            b2,
            mu_dtype,
            nu_dtype,
            *([max_second_moment(nu_dtype=nu_dtype)] if amsgrad else []),
            precise_corrections=True,
        ),
        scale_by_rms(eps),
    )


def adamw(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.AdamW``: :func:`adam` with ``decoupled_weight_decay=True``.

    .. math::

       \theta_t = \theta_{t-1} - \alpha\left(\frac{\hat m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}
       + \lambda\theta_{t-1}\right)
    """
    return adam(
        lr,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def nadam(
    lr: optax.ScalarOrSchedule = 2e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.NAdam`` (Dozat 2016, with his momentum schedule).

    .. math::

       \mu_t = \beta_1 (1 - \tfrac12 0.96^{t\psi}), \quad
       \theta_t = \theta_{t-1} - \alpha \frac{\mu_{t+1} m_t / (1 - \prod_{i \le t+1}\mu_i)
       + (1-\mu_t) g_t / (1 - \prod_{i \le t}\mu_i)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    Chain: ``[scale(-1)] -> [L2] -> scale_by_moments ->
    nesterov_momentum(momentum_decay) -> bias_correct -> scale_by_rms(eps) ->
    [decoupled_decay] -> lr``.
    """
    b1, b2 = _betas(betas)
    if momentum_decay is None:  # nesterov_momentum(None) is optax's constant-momentum NAdam, not torch's
        raise TypeError(
            "momentum_decay must be a number >= 0 (torch.optim.NAdam's psi, default 4e-3), got None; for NAdam "
            'with a constant momentum (as optax.nadam) use adam_jax.nadam.'
        )
    return _torch_chain(
        lr,
        weight_decay,
        decoupled_weight_decay,
        maximize,
        *corrected_moments(b1, b2, mu_dtype, nu_dtype, nesterov_momentum(momentum_decay), precise_corrections=True),
        scale_by_rms(eps),
    )


def radam(
    lr: optax.ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.RAdam`` (Liu et al. 2020).

    .. math::

       \theta_t = \theta_{t-1} - \alpha \begin{cases} r_t \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon)
       & \rho_t > 5 \\ \hat m_t & \text{otherwise} \end{cases}

    Chain: ``[scale(-1)] -> [L2] -> scale_by_moments -> bias_correct ->
    scale_by_rectified_rms(eps, threshold=5, strict=True, eps_on_raw_nu=True) ->
    [decoupled_decay] -> lr``.
    """
    b1, b2 = _betas(betas)
    return _torch_chain(
        lr,
        weight_decay,
        decoupled_weight_decay,
        maximize,
        *corrected_moments(b1, b2, mu_dtype, nu_dtype, precise_corrections=True),
        scale_by_rectified_rms(eps, threshold=5.0, strict=True, eps_on_raw_nu=True),
    )


def adamax(
    lr: optax.ScalarOrSchedule = 2e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.Adamax`` (Kingma & Ba 2014, Algorithm 2, eps inside the max).

    .. math::

       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
       \theta_t = \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\frac{m_t}{u_t}

    Chain: ``[scale(-1)] -> [L2] -> scale_by_moments(second_moment='max',
    max_eps=eps) -> bias_correct -> scale_by_rms(0) -> lr``.
    """
    b1, b2 = _betas(betas)
    return _torch_chain(
        lr,
        weight_decay,
        False,
        maximize,
        adamax_direction(b1, b2, eps, mu_dtype, nu_dtype, precise_corrections=True),  # 1 - b1^t as torch forms it
    )
