"""Factored second moment (Shazeer & Stern 2018) and adafactor, against NumPy and optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import Factored, FactoredMoment


def _factored_v(row, col, second, largest):
    """V = R C / mean(R), R the mean over the largest axis, C over the second largest."""
    r_axis = second if second < largest else second - 1
    return np.expand_dims(row / row.mean(axis=r_axis, keepdims=True), largest) * np.expand_dims(col, second)


def test_adam_with_a_factored_second_moment_matches_numpy():
    b1, b2, lr, eps = 0.9, 0.999, 1e-2, 1e-8
    rng = np.random.default_rng(0)
    shapes = {'w': ((130, 200), (0, 1)), 'conv': ((3, 140, 129), (2, 1)), 'b': ((200,), None)}
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, (s, _) in shapes.items()}
    opt = adam_jax.adam(lr, nu_dtype=Factored())
    state = opt.init(params)
    nu = optax.tree.get(state, 'nu')
    assert isinstance(nu['w'], FactoredMoment) and nu['w'].row.shape == (130,) and nu['w'].col.shape == (200,)
    assert nu['conv'].row.shape == (3, 129) and nu['conv'].col.shape == (3, 140)
    assert not isinstance(nu['b'], FactoredMoment)
    ref = {k: dict(p=np.asarray(p, np.float64), m=0.0, v=0.0, r=0.0, c=0.0) for k, p in params.items()}
    step = jax.jit(opt.update)
    p = params
    for t in range(1, 6):
        g = {k: rng.standard_normal(s).astype(np.float32) for k, (s, _) in shapes.items()}
        updates, state = step(g, state, p)
        p = optax.apply_updates(p, updates)
        for k, (_, axes) in shapes.items():
            r, gk = ref[k], g[k].astype(np.float64)
            r['m'] = b1 * r['m'] + (1 - b1) * gk
            if axes is None:
                r['v'] = b2 * r['v'] + (1 - b2) * gk**2
                v = r['v']
            else:
                second, largest = axes
                r['r'] = b2 * r['r'] + (1 - b2) * (gk**2).mean(axis=largest)
                r['c'] = b2 * r['c'] + (1 - b2) * (gk**2).mean(axis=second)
                v = _factored_v(r['r'], r['c'], second, largest)
            r['p'] = r['p'] - lr * (r['m'] / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    for k in shapes:
        np.testing.assert_allclose(p[k], ref[k]['p'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optax.tree.get(state, 'nu')['w'].row, ref['w']['r'], rtol=1e-5)


@pytest.mark.parametrize('kwargs', [{}, dict(learning_rate=1e-2, momentum=0.9, weight_decay_rate=1e-3)])
def test_adafactor_equals_optax_adafactor(kwargs):
    rng = np.random.default_rng(1)
    params = {
        'w': jnp.asarray(rng.standard_normal((130, 200)), jnp.float32),
        'conv': jnp.asarray(rng.standard_normal((3, 140, 129)), jnp.float32),
        'thin': jnp.asarray(rng.standard_normal((4, 300)), jnp.float32),  # not factored: 4 < 128
        'b': jnp.asarray(rng.standard_normal(7), jnp.float32),
    }
    ours, theirs = adam_jax.adafactor(**kwargs), optax.adafactor(**kwargs)

    @jax.jit
    def run(params):
        def body(carry, t):
            p, s_ours, s_theirs = carry
            g = jax.tree.map(lambda x: jnp.sin(3.0 * x + t), p)
            u_ours, s_ours = ours.update(g, s_ours, p)
            u_theirs, s_theirs = theirs.update(g, s_theirs, p)
            return (optax.apply_updates(p, u_ours), s_ours, s_theirs), (u_ours, u_theirs)

        return jax.lax.scan(body, (params, ours.init(params), theirs.init(params)), jnp.arange(20.0))[1]

    u_ours, u_theirs = run(params)
    for k in params:
        np.testing.assert_allclose(u_ours[k], u_theirs[k], rtol=1e-6, atol=1e-7)
        assert float(jnp.max(jnp.abs(u_theirs[k]))) > 1e-3  # the updates are not trivially zero


def test_factored_storage_errors():
    with pytest.raises(ValueError, match=r'mu_dtype=Factored\(...\) is for the second moment only'):
        adam_jax.adam(1e-3, mu_dtype=Factored())
    with pytest.raises(ValueError, match="needs second_moment='square'"):
        adam_jax.adamax(1e-3, nu_dtype=Factored())
    with pytest.raises(ValueError, match='min_dim_size_to_factor must be a positive int, got 0'):
        Factored(0)


@pytest.mark.parametrize('mu_dtype', [None, 'int8'])
def test_a_factored_leaf_with_zero_gradients_does_not_move(mu_dtype):
    """All-zero row and column statistics stand for V = 0 (not 0 / 0): m = 0 gives a zero step, as with a
    float second moment. (A zero-initialised output layer gives its input layer exactly zero gradients.)"""
    params = {'hidden': jnp.full((128, 128), 0.01), 'out': jnp.zeros((128, 1))}
    x, y = jnp.ones((4, 128)), jnp.ones((4, 1))

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p['hidden']) @ p['out'] - y) ** 2)

    results = {}
    for name, nu_dtype in [('float', None), ('factored', Factored())]:
        opt = adam_jax.adam(1e-3, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
        p, s = params, opt.init(params)
        for t in range(3):
            u, s = opt.update(jax.grad(loss)(p), s, p)
            if t == 0:  # the hidden layer's gradient is exactly 0 at the first step
                assert float(jnp.max(jnp.abs(u['hidden']))) == 0.0
            p = optax.apply_updates(p, u)
        results[name] = float(loss(p))
    assert np.isfinite(results['factored'])
    assert results['factored'] == pytest.approx(results['float'], rel=1e-3)


def test_adafactor_stays_finite_when_its_step_count_saturates():
    # The count saturates at 2^31 - 1; Adafactor's decay schedule took t + 1 in int32, which wrapped to a negative
    # t and gave NaN (optax.adafactor does the same).
    opt = adam_jax.adafactor(1e-2)
    params = {'w': jnp.ones((256, 300))}
    state = opt.init(params)
    state = jax.tree.map(lambda x: jnp.full_like(x, 2**31 - 3) if x.dtype == jnp.int32 else x, state)
    for _ in range(4):
        updates, state = opt.update({'w': jnp.full((256, 300), 0.1)}, state, params)
        assert bool(jnp.all(jnp.isfinite(updates['w'])))
    assert 2**31 - 1 in [int(x) for x in jax.tree.leaves(state) if x.dtype == jnp.int32]


def test_adafactor_steps_before_decay_offset_decay_like_its_first_step_not_nan():
    # A fresh state (count 0) for fine-tuning from step 1000: optax raises a negative base to -0.8 (NaN for good).
    # Here steps before the offset take decay 0, so each is optax's first step from the same params and gradient.
    params = {'w': jnp.linspace(0.5, 1.5, 256 * 130).reshape(256, 130), 'b': jnp.linspace(-1.0, 1.0, 7)}
    opt = adam_jax.adafactor(1e-2, decay_offset=1000)
    state = opt.init(params)
    for step in range(3):
        grads = jax.tree.map(lambda p, s=step: jnp.cos(p * (s + 1)), params)
        updates, state = opt.update(grads, state, params)
        reference = optax.adafactor(1e-2)
        expected, _ = reference.update(grads, reference.init(params), params)
        for k in params:
            np.testing.assert_allclose(updates[k], expected[k], rtol=2e-6, atol=1e-9)
        params = optax.apply_updates(params, updates)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))


def test_adafactor_takes_none_leaves_before_factored_ones_like_optax():
    # None leaves (frozen or filtered params) once misaligned the shape check with the factored state.
    params = {'a_bias': None, 'kernel': jnp.linspace(0.5, 1.5, 256 * 128).reshape(256, 128)}
    params['z_emb'] = jnp.linspace(-1.0, 1.0, 130 * 200).reshape(130, 200)
    grads = jax.tree.map(jnp.cos, params)
    ours, theirs = adam_jax.adafactor(1e-3), optax.adafactor(1e-3)
    u, _ = ours.update(grads, ours.init(params), params)
    v, _ = theirs.update(grads, theirs.init(params), params)
    assert u['a_bias'] is None
    for k in ('kernel', 'z_emb'):
        np.testing.assert_allclose(u[k], v[k], rtol=2e-6, atol=1e-12)
