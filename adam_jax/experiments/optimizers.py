r"""The optimizers the experiments compare, by name.

Adam-family optimizers come from adam_jax; the baselines (SGD with Nesterov momentum, AdaGrad,
RMSProp, AdaDelta) and AMSGrad come from optax. Every factory takes hyperparameters that may be
traced arrays, so one compiled step serves a whole grid (``jax.vmap`` over learning rates, betas...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import optax

import adam_jax


def inverse_sqrt(alpha) -> Callable:
    r""":math:`\alpha_t = \alpha / \sqrt{t}`, the decay of the paper's logistic-regression experiment (t from 1)."""
    return lambda count: alpha / jnp.sqrt(count + 1.0)


def adam_without_bias_correction(learning_rate, b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    r"""Adam's chain minus ``bias_correct()``: :math:`\theta_t = \theta_{t-1} - \alpha m_t/(\sqrt{v_t}+\epsilon)`.

    The same transforms as :func:`adam_jax.adam`, one fewer: the ablation of Kingma & Ba's Section 6.4.
    """
    return optax.chain(
        adam_jax.scale_by_moments(b1, b2),
        adam_jax.scale_by_rms(eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_l2(learning_rate, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    r"""Adam on the L2-regularised loss: :math:`g_t \leftarrow g_t + \lambda\theta_{t-1}` before the moments."""
    return optax.chain(optax.add_decayed_weights(weight_decay), adam_jax.adam(learning_rate, b1, b2, eps))


# name -> (factory(learning_rate, **hparams), default learning rate, legend label)
OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], float, str]] = {
    'adam': (adam_jax.adam, 1e-3, 'Adam'),
    'adamw': (lambda lr, weight_decay=1e-4, **kw: adam_jax.adamw(lr, weight_decay=weight_decay, **kw), 1e-3, 'AdamW'),
    'adamw-lh': (
        lambda lr, weight_decay=1e-4, **kw: adam_jax.loshchilov_hutter_adamw(lr, weight_decay=weight_decay, **kw),
        1e-3,
        'AdamW (Loshchilov & Hutter)',
    ),
    'adam-l2': (adam_l2, 1e-3, 'Adam + L2'),
    'adam-no-bias-correction': (adam_without_bias_correction, 1e-3, 'Adam without bias correction'),
    'adamax': (adam_jax.adamax, 2e-3, 'AdaMax'),
    'amsgrad': (optax.amsgrad, 1e-3, 'AMSGrad'),
    'sgd': (optax.sgd, 0.1, 'SGD'),
    'sgd-nesterov': (lambda lr, momentum=0.9: optax.sgd(lr, momentum=momentum, nesterov=True), 0.05, 'SGD Nesterov'),
    'adagrad': (optax.adagrad, 0.01, 'AdaGrad'),
    'rmsprop': (optax.rmsprop, 1e-3, 'RMSProp'),
    'adadelta': (optax.adadelta, 1.0, 'AdaDelta'),
}


def check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f'unknown optimizer {name!r}; choose from: {", ".join(OPTIMIZERS)}.')


def label(name: str) -> str:
    check_name(name)
    return OPTIMIZERS[name][2]


def default_learning_rate(name: str) -> float:
    check_name(name)
    return OPTIMIZERS[name][1]


def make(name: str, hparams: Mapping, schedule: str = 'constant') -> optax.GradientTransformation:
    """Builds optimizer ``name`` from ``hparams`` (``learning_rate`` plus any of its keyword arguments).

    ``schedule='inverse_sqrt'`` decays the learning rate as :math:`\\alpha/\\sqrt{t}`.
    """
    check_name(name)
    factory = OPTIMIZERS[name][0]
    hparams = dict(hparams)
    lr = hparams.pop('learning_rate')
    if schedule == 'inverse_sqrt':
        lr = inverse_sqrt(lr)
    elif schedule != 'constant':
        raise ValueError(f"schedule must be 'constant' or 'inverse_sqrt', got {schedule!r}.")
    return factory(lr, **hparams)
