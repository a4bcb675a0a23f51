"""The chains equal optax's optimizers over hundreds of jitted steps on a mixed tree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import bias_correct, decoupled_decay, scale_by_moments, scale_by_rms
from tests.conftest import mixed_tree, noisy_quadratic_grad


def run(opt, params, steps):
    state = opt.init(params)

    @jax.jit
    def step(params, state, t):
        updates, state = opt.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    for t in range(steps):
        params, state = step(params, state, t)
    return params


def assert_trees_close(a, b, atol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


LR = 3e-2


def test_composed_chain_equals_optax_adam():
    chain = optax.chain(
        scale_by_moments(0.9, 0.999), bias_correct(), scale_by_rms(1e-8), optax.scale_by_learning_rate(LR)
    )
    params = mixed_tree()
    got, want = run(chain, params, 300), run(optax.adam(LR), params, 300)
    assert_trees_close(got, want, atol=1e-5)
    # The run actually moved the params: equality is not trivially true.
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params))) > 0.5


def test_composed_chain_with_decoupled_decay_equals_optax_adamw():
    chain = optax.chain(
        scale_by_moments(0.9, 0.999),
        bias_correct(),
        scale_by_rms(1e-8),
        decoupled_decay(0.1),
        optax.scale_by_learning_rate(LR),
    )
    params = mixed_tree()
    assert_trees_close(run(chain, params, 300), run(optax.adamw(LR, weight_decay=0.1), params, 300), atol=1e-5)


CASES = [
    ('adam', {}),
    ('adam', dict(b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9)),
    ('adamw', {}),
    ('adamw', dict(b1=0.5, b2=0.95, weight_decay=0.3, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))),
    ('adamax', {}),
    ('adamax', dict(b1=0.7, b2=0.9, eps=1e-4)),
]


@pytest.mark.parametrize('name,kwargs', CASES)
def test_optimizer_equals_optax_float32(name, kwargs):
    params = mixed_tree()
    got = run(getattr(adam_jax, name)(LR, **kwargs), params, 300)
    want = run(getattr(optax, name)(LR, **kwargs), params, 300)
    assert_trees_close(got, want, atol=1e-5)


@pytest.mark.parametrize('name,kwargs', CASES)
def test_optimizer_equals_optax_float64(x64, name, kwargs):
    params = mixed_tree(jnp.float64)
    got = run(getattr(adam_jax, name)(LR, **kwargs), params, 100)
    want = run(getattr(optax, name)(LR, **kwargs), params, 100)
    assert_trees_close(got, want, atol=1e-9)


X64_FLOAT32_CASES = [
    ('adam', {}),
    ('nadam', {}),
    ('radam', dict(b2=0.9999)),  # in float32, 1 - 0.9999^t moved the rectification's switch from step 6 to 2
    ('adabelief', {}),
]


@pytest.mark.parametrize('name,kwargs', X64_FLOAT32_CASES)
def test_float32_params_under_x64_equal_optax(x64, name, kwargs):
    # Under x64 optax forms 1 - b^t from Python floats, in float64, and casts it to float32 where it divides:
    # adam_jax forms its corrections in float64 then too.
    params = mixed_tree()
    got = run(getattr(adam_jax, name)(1e-2, **kwargs), params, 30)
    want = run(getattr(optax, name)(1e-2, **kwargs), params, 30)
    assert_trees_close(got, want, atol=1e-6)


def test_schedule_equals_optax():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 5e-2, 20, 200)
    params = mixed_tree()
    assert_trees_close(run(adam_jax.adamw(schedule), params, 200), run(optax.adamw(schedule), params, 200), atol=1e-5)


def test_loshchilov_hutter_form_scales_decay_by_multiplier_only(x64):
    """theta_t = theta - eta_t (alpha d_t + lambda theta): checked against optax parts."""
    alpha, wd = 1e-2, 0.1
    eta = optax.linear_schedule(1.0, 0.1, 50)
    params = mixed_tree(jnp.float64)
    got = run(adam_jax.loshchilov_hutter_adamw(alpha, eta, weight_decay=wd), params, 50)
    want = run(
        optax.chain(
            optax.scale_by_adam(), optax.scale(alpha), optax.add_decayed_weights(wd), optax.scale_by_learning_rate(eta)
        ),
        params,
        50,
    )
    assert_trees_close(got, want, atol=1e-12)
    # ... and it differs from optax's adamw, whose decay is alpha * lambda * theta.
    other = run(optax.adamw(lambda t: alpha * eta(t), weight_decay=wd), params, 50)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(other))) > 1e-3


@pytest.mark.filterwarnings('ignore:Explicitly requested dtype float64')  # the first call's float64 grads, x64 off
def test_float64_params_under_x64_are_updated_in_float64_after_a_float32_call():
    # compute_dtype is cached; its answer depends on jax_enable_x64, which must be part of the key: after a call
    # with NumPy float64 gradients while x64 was off, float64 params under x64 were updated in float32 (review).
    opt = adam_jax.adam(1e-3)
    p = jnp.zeros(3)
    opt.update(np.ones(3), opt.init(p), p)
    with jax.enable_x64(True):
        from adam_jax._tree import compute_dtype

        assert compute_dtype(np.dtype(np.float64)) == np.float64
        p = jnp.zeros(1, jnp.float64)
        g = jnp.asarray([1 + 2.0**-40], jnp.float64)
        nu = optax.tree.get(opt.update(g, opt.init(p), p)[1], 'nu')
        assert nu.dtype == jnp.float64 and float(nu[0]) == pytest.approx(1e-3 * (1 + 2.0**-40) ** 2, rel=1e-15)
