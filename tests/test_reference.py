"""adam and adamax against the paper's Algorithms 1 and 2 in NumPy float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.reference import adam_reference, adamax_reference

TARGET = np.array([0.5, -2.0, 3.0, 0.0, 1e-3])


def _grad(theta, t):
    """A gradient that depends on theta, with noise, a zero step and a sparse coordinate."""
    rng = np.random.default_rng(t)
    g = 2.0 * (theta - TARGET) + rng.normal(scale=0.3, size=theta.shape)
    if t == 7:
        g = np.zeros_like(g)  # a step with no gradient at all
    if t % 4:
        g[3] = 0.0  # a coordinate that only sometimes gets a gradient
    return g


def _run_jax(opt, theta0, steps, grad=_grad):
    """float64 params (an array or a tree of them) after each of ``steps`` jitted steps on ``grad(theta, t)``."""
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), theta0)
    state = opt.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    history = []
    for t in range(1, steps + 1):
        g = grad(jax.tree.map(np.asarray, params), t)
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        history.append(jax.tree.map(np.asarray, params))
    return history


THETA0 = np.array([1.0, 1.0, -1.0, 2.0, 0.0])


@pytest.mark.parametrize(
    'hp',
    [
        dict(alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8),
        dict(alpha=5e-2, beta1=0.5, beta2=0.99, epsilon=1e-6),
        dict(alpha=1e-1, beta1=0.0, beta2=0.9, epsilon=1e-3),
    ],
)
def test_adam_equals_algorithm_1_in_float64(x64, hp):
    want = adam_reference(THETA0, _grad, 200, **hp)
    got = _run_jax(adam_jax.adam(hp['alpha'], hp['beta1'], hp['beta2'], hp['epsilon']), THETA0, 200)
    assert got[-1].dtype == np.float64
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-12)


@pytest.mark.parametrize('hp', [dict(alpha=2e-3, beta1=0.9, beta2=0.999), dict(alpha=5e-2, beta1=0.8, beta2=0.95)])
@pytest.mark.parametrize('epsilon', [0.0, 1e-8])
def test_adamax_equals_algorithm_2_in_float64(x64, hp, epsilon):
    # The zero-gradient step needs epsilon > 0 (u stays 0 for coordinate 3 otherwise).
    want = adamax_reference(THETA0, _grad, 200, epsilon=max(epsilon, 1e-12), **hp)
    opt = adam_jax.adamax(hp['alpha'], hp['beta1'], hp['beta2'], eps=max(epsilon, 1e-12))
    got = _run_jax(opt, THETA0, 200)
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-12)


def test_worked_example_theta_squared(x64):
    """theta_0 = 5, f = theta^2, alpha = 1e-3: each of the first steps moves theta by ~alpha."""
    opt = adam_jax.adam(1e-3)
    theta = jnp.asarray(5.0, jnp.float64)
    state = opt.init(theta)
    values = []
    for _ in range(2):
        updates, state = opt.update(jax.grad(lambda x: x**2)(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
        values.append(float(theta))
    # The exact values (from Algorithm 1 by hand): 4.999 - 5e-12 and 4.998000005.
    np.testing.assert_allclose(values, [4.999, 4.998], atol=1e-8)
    ref = adam_reference(np.array(5.0), lambda th, t: 2 * th, 2)
    np.testing.assert_allclose(values, [float(r) for r in ref], atol=1e-13)


def test_worked_example_in_float32():
    opt = adam_jax.adam(1e-3)
    theta = jnp.asarray(5.0, jnp.float32)
    state = opt.init(theta)
    for want in (4.999, 4.998):
        updates, state = opt.update(2 * theta, state, theta)
        theta = optax.apply_updates(theta, updates)
        assert theta.dtype == jnp.float32
        assert abs(float(theta) - want) < 1e-6
