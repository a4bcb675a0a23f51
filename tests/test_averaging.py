"""Temporal averaging (Kingma & Ba 2014, Section 7.2) against NumPy written from the equation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from tests.reference import adam_reference


def _averaged_reference(thetas, b2):
    """theta_bar_t = b2 theta_bar_{t-1} + (1 - b2) theta_t, theta_bar_0 = 0; theta_hat_t = theta_bar_t / (1 - b2^t)."""
    theta_bar = np.zeros_like(thetas[0])
    out = []
    for t, theta in enumerate(thetas, start=1):
        theta_bar = b2 * theta_bar + (1 - b2) * theta
        out.append(theta_bar / (1 - b2**t))
    return out


def _grad(theta, t):
    return theta - np.cos(0.3 * t) * np.arange(1, theta.size + 1)


def test_average_of_adam_iterates_matches_numpy(x64):
    b2, steps = 0.99, 60
    theta0 = np.linspace(-1.0, 1.0, 5)
    thetas = adam_reference(theta0, _grad, steps, alpha=0.05, beta2=b2)
    want = _averaged_reference(thetas, b2)

    tx = optax.chain(adam_jax.adam(0.05, b2=b2), adam_jax.temporal_average(b2))
    theta = jnp.asarray(theta0)
    state = tx.init(theta)
    step = jax.jit(tx.update)
    for t in range(1, steps + 1):
        updates, state = step(jnp.asarray(_grad(np.asarray(theta), t)), state, theta)
        theta = optax.apply_updates(theta, updates)
        if t in (1, 2, 10, steps):
            np.testing.assert_allclose(adam_jax.averaged_params(state), want[t - 1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(theta, thetas[-1], rtol=1e-12, atol=1e-12)
    # The average differs from the last iterate (the test is not trivially true).
    assert np.max(np.abs(want[-1] - thetas[-1])) > 1e-2


def test_low_precision_params_are_averaged_in_float32_and_returned_like_the_params():
    params = {'w': jnp.full(4, 1.0, jnp.bfloat16)}
    tx = optax.chain(optax.sgd(1.0), adam_jax.temporal_average(0.999))
    state = tx.init(params)
    assert state[1].theta_bar['w'].dtype == jnp.float32
    for _ in range(3):
        updates, state = tx.update({'w': jnp.full(4, 2**-4, jnp.bfloat16)}, state, params)
        params = optax.apply_updates(params, updates)
    thetas = [np.full(4, 1 - k * 2**-4) for k in (1, 2, 3)]
    np.testing.assert_allclose(adam_jax.averaged_params(state)['w'], _averaged_reference(thetas, 0.999)[-1], rtol=1e-6)
    like = adam_jax.averaged_params(state, like=params)
    assert like['w'].dtype == jnp.bfloat16


def test_averaged_params_needs_exactly_one_average_in_the_state():
    with pytest.raises(ValueError, match='exactly one TemporalAverageState, found 0'):
        adam_jax.averaged_params(adam_jax.adam(1e-3).init(jnp.ones(2)))
    with pytest.raises(ValueError, match='b2 must be in'):
        adam_jax.temporal_average(1.0)
    tx = adam_jax.temporal_average()
    with pytest.raises(ValueError, match='temporal_average needs the params'):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_averaged_params_refuses_a_like_of_other_paths_or_shapes():
    # like used to be paired with the average by position: a missing leaf shifted every value to another key.
    params = {'a': jnp.ones(2), 'b': 2 * jnp.ones(3)}
    opt = optax.chain(adam_jax.adam(1e-1), adam_jax.temporal_average(0.5))
    _, state = opt.update(params, opt.init(params), params)
    with pytest.raises(ValueError, match=r"like must have the paths of the averaged params; they differ at \['a'\]"):
        adam_jax.averaged_params(state, like={'b': jnp.ones(3)})
    with pytest.raises(ValueError, match=r"like\['a'\] has shape \(3,\), the average has \(2,\)"):
        adam_jax.averaged_params(state, like={'a': jnp.ones(3), 'b': jnp.ones(2)})
    got = adam_jax.averaged_params(state, like={'a': jnp.ones(2, jnp.bfloat16), 'b': jnp.ones(3)})
    assert got['a'].dtype == jnp.bfloat16 and got['b'].shape == (3,)
