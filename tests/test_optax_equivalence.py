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


@pytest.mark.parametrize('name', ['adamw', 'nadamw', 'adamaxw', 'lion', 'lamb'])
def test_a_weight_decay_schedule_is_that_steps_rate_in_optax(name):
    # weight_decay may be a schedule, as in optax's aliases: the rate of step t is schedule(t), counted by the decay's
    # own state. The reference is optax's optimizer with that step's rate injected as a hyperparameter (independent of
    # whether the installed optax takes a weight-decay schedule itself).
    schedule = optax.linear_schedule(0.3, 0.0, 40)
    mask = {'dense': {'kernel': True, 'bias': False}, 'conv': [True], 'scale': True}
    ours = getattr(adam_jax, name)(LR, weight_decay=schedule, mask=mask)
    reference = optax.inject_hyperparams(getattr(optax, name))(learning_rate=LR, weight_decay=0.0, mask=mask)
    params = mixed_tree()
    state, ref_state = ours.init(params), reference.init(params)
    step = jax.jit(lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*ours.update(g, s, p)))
    ref_step = jax.jit(lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*reference.update(g, s, p)))
    p, ref_p = params, params
    for t in range(60):
        p, state = step(p, noisy_quadratic_grad(p, t), state)
        ref_state.hyperparams['weight_decay'] = jnp.asarray(schedule(t), jnp.float32)
        ref_p, ref_state = ref_step(ref_p, noisy_quadratic_grad(ref_p, t), ref_state)
    # (injecting hyperparameters as arrays alone moves optax.adamw's params by 5.5e-6 over these 60 steps)
    assert_trees_close(p, ref_p, atol=1e-5)
    is_decay = lambda x: isinstance(x, adam_jax.DecoupledDecayState)  # noqa: E731
    assert [int(s.count) for s in jax.tree.leaves(state, is_leaf=is_decay) if is_decay(s)] == [60]
    # the schedule mattered: a constant rate of 0.3 ends elsewhere
    assert max_diff(p, run(getattr(adam_jax, name)(LR, weight_decay=0.3, mask=mask), params, 60)) > 1e-3


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_zero_weight_decay_number_adds_nothing_and_a_zero_array_adds_zero_times_the_params():
    # As optax.add_decayed_weights: a Python 0 skips the decay (an infinite param stays infinite), an array is added
    # as any rate is (0 * inf is NaN), in our chain and in optax's alike.
    params = {'w': jnp.array([1.0, -2.0, jnp.inf, -0.0], jnp.float32)}
    grads = {'w': jnp.array([0.5, -0.5, 0.25, 0.0], jnp.float32)}
    for rate, finite in ((0.0, True), (0, True), (jnp.float32(0.0), False)):
        ours, theirs = adam_jax.adamw(LR, weight_decay=rate), optax.adamw(LR, weight_decay=rate)
        got = ours.update(grads, ours.init(params), params)[0]['w']
        want = theirs.update(grads, theirs.init(params), params)[0]['w']
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert bool(jnp.isfinite(got[2])) == finite


def test_a_weight_decay_schedule_refuses_the_state_of_a_number_rate_by_name():
    # (a review found `EmptyState.count`, a tuple method, reaching the schedule: an obscure TypeError, as in optax)
    params = {'w': jnp.ones((8, 3))}
    scheduled = adam_jax.adamw(1e-2, weight_decay=optax.linear_schedule(0.1, 0.0, 5))
    with pytest.raises(TypeError, match=r'weight_decay schedule needs the state its init made .*got EmptyState'):
        scheduled.update(params, adam_jax.adamw(1e-2, weight_decay=0.1).init(params), params)
