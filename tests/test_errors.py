"""Bad input gets a clear error naming the argument, the value and what is allowed."""

from __future__ import annotations

import re

import jax.numpy as jnp
import optax
import pytest

import adam_jax
from adam_jax import bias_correct, decoupled_decay, presets, scale_by_moments, scale_by_rms


@pytest.mark.parametrize(
    'build,arg,value,allowed',
    [
        (lambda: scale_by_moments(b1=1.0), 'b1', '1.0', '[0.0, 1.0)'),
        (lambda: scale_by_moments(b2=-0.1), 'b2', '-0.1', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, b1=1.5), 'b1', '1.5', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, b2=1.0), 'b2', '1.0', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, eps=-1e-8), 'eps', '-1e-08', '[0.0, inf)'),
        (lambda: adam_jax.adam(1e-3, eps_root=-1.0), 'eps_root', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adamw(1e-3, weight_decay=-0.1), 'weight_decay', '-0.1', '[0.0, inf)'),
        (lambda: adam_jax.adamax(1e-3, b2=2.0), 'b2', '2.0', '[0.0, 1.0)'),
        (lambda: adam_jax.adamax(1e-3, eps=-1.0), 'max_eps', '-1.0', '[0.0, inf)'),
        (lambda: scale_by_rms(eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: decoupled_decay(-1.0), 'weight_decay', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adam(float('nan')), 'learning_rate', 'nan', '(-inf, inf)'),
        (lambda: adam_jax.adamw(float('inf')), 'learning_rate', 'inf', '(-inf, inf)'),
        (lambda: adam_jax.adam(1e-3, b1=float('nan')), 'b1', 'nan', '[0.0, 1.0)'),
        (lambda: scale_by_moments(belief_eps=1e-8), 'belief_eps', '1e-08', "second_moment='belief'"),
        (lambda: scale_by_moments(second_moment='belief', belief_eps=-1.0), 'belief_eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adabelief(1e-3, eps_root=-1.0), 'belief_eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.radam(1e-3, eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.lion(1e-3, b2=1.0), 'b2', '1.0', '[0.0, 1.0)'),
        (lambda: adam_jax.nesterov_momentum(-0.1), 'momentum_decay', '-0.1', '[0.0, inf)'),
        (lambda: presets.pytorch.adam(lr=-1.0), 'lr', '-1.0', '[0.0, inf)'),
        (lambda: presets.pytorch.adam(betas=(0.9, 1.0)), 'b2', '1.0', '[0.0, 1.0)'),
        (lambda: presets.pytorch.adam(betas=0.9), 'betas', '0.9', 'a pair (beta1, beta2)'),
        (lambda: presets.pytorch.nadam(momentum_decay=-1.0), 'momentum_decay', '-1.0', '[0.0, inf)'),
        (lambda: presets.pytorch.radam(weight_decay=-0.1), 'weight_decay', '-0.1', '[0.0, inf)'),
        (lambda: presets.pytorch.adamax(eps=-1.0), 'max_eps', '-1.0', '[0.0, inf)'),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(build, arg, value, allowed):
    with pytest.raises(ValueError) as err:
        build()
    message = str(err.value)
    assert message.startswith(arg + ' '), message
    assert value in message and allowed in message, message


def test_unknown_second_moment_is_rejected():
    with pytest.raises(
        ValueError, match=re.escape("second_moment must be one of ('square', 'max', 'belief'), got 'cube'")
    ):
        scale_by_moments(second_moment='cube')


def test_traced_hyperparameters_are_not_checked_at_construction():
    # inject_hyperparams passes arrays; they are valid here and must not raise.
    opt = optax.inject_hyperparams(adam_jax.adam)(learning_rate=jnp.asarray(1e-3), b1=jnp.asarray(0.9))
    opt.init(jnp.ones(2))


@pytest.mark.parametrize('transform,name', [(bias_correct(), 'bias_correct'), (scale_by_rms(), 'scale_by_rms')])
def test_moment_stage_transform_without_moments_raises_type_error(transform, name):
    params = {'w': jnp.ones(3)}
    chain = optax.chain(transform, optax.scale_by_learning_rate(1e-3))
    state = chain.init(params)
    with pytest.raises(TypeError, match=f'{name} .*Put scale_by_moments\\(\\) before it'):
        chain.update(params, state, params)


def test_params_shaped_transform_given_moments_raises_type_error():
    params = {'w': jnp.ones(3)}
    chain = optax.chain(scale_by_moments(), decoupled_decay(0.1), scale_by_rms())
    state = chain.init(params)
    with pytest.raises(TypeError, match='decoupled_decay works on a params-shaped tree.*scale_by_rms'):
        chain.update(params, state, params)


def test_two_moment_stages_raise_type_error():
    params = {'w': jnp.ones(3)}
    chain = optax.chain(scale_by_moments(), scale_by_moments())
    state = chain.init(params)
    with pytest.raises(TypeError, match='scale_by_moments must come first'):
        chain.update(params, state, params)


def test_decoupled_decay_without_params_raises():
    opt = adam_jax.adamw(1e-3)
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match='decoupled_decay needs the params'):
        opt.update(jnp.ones(2), state)


def test_mismatched_gradient_tree_names_the_first_differing_path():
    opt = adam_jax.adam(1e-3)
    state = opt.init({'a': jnp.ones(2), 'b': {'c': jnp.ones(3)}})
    with pytest.raises(ValueError, match=r"different tree structures.*\['b'\]\['d'\]"):
        opt.update({'a': jnp.ones(2), 'b': {'d': jnp.ones(3)}}, state)
    with pytest.raises(ValueError, match=r"different tree structures.*3 vs 2 leaves.*\['b'\]\['e'\]"):
        opt.update({'a': jnp.ones(2), 'b': {'c': jnp.ones(3), 'e': jnp.ones(1)}}, state)


def test_schedule_as_learning_rate_for_loshchilov_hutter_is_refused():
    with pytest.raises(TypeError, match='schedule_multiplier'):
        adam_jax.loshchilov_hutter_adamw(optax.constant_schedule(1e-3))
