"""Hardening: integer leaves, float16 with small gradients, and a long run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax


@pytest.mark.parametrize('dtype', ['int32', 'bool', 'uint8'])
def test_integer_and_boolean_leaves_are_rejected_naming_the_path(dtype):
    params = {'dense': {'w': jnp.ones(3), 'step': jnp.zeros(2, dtype)}}
    with pytest.raises(TypeError, match=rf"\['dense'\]\['step'\] has dtype {dtype}.*optax.masked"):
        adam_jax.adamw(1e-2).init(params)


def test_integer_leaves_can_be_left_out_with_multi_transform():
    params = {'w': jnp.ones(3), 'step': jnp.asarray(7, jnp.int32)}
    labels = {'w': 'train', 'step': 'frozen'}
    tx = optax.multi_transform({'train': adam_jax.adam(0.1), 'frozen': optax.set_to_zero()}, labels)
    state = tx.init(params)
    grads = {'w': jnp.ones(3), 'step': jnp.asarray(0, jnp.int32)}
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], np.full(3, 0.9), rtol=1e-6)
    assert params['step'].dtype == jnp.int32 and int(params['step']) == 7


def _small_then_zero_gradients(dtype, optimizer, steps=120):
    """|g| in [1e-4, 1e-2] for 40 steps, then 0: the run in which float16 storage of v fails."""
    g_small = jnp.asarray([1e-4, 1e-3, 3e-3, 1e-2], dtype)
    params = jnp.ones(4, dtype)
    state = optimizer.init(params)

    def body(t, carry):
        params, state = carry
        g = jnp.where(t < 40, g_small, jnp.zeros_like(g_small))
        updates, state = optimizer.update(g, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(lambda c: jax.lax.fori_loop(0, steps, body, c))((params, state))


def test_float16_with_small_gradients_stays_finite_where_float32_does():
    p32, _ = _small_then_zero_gradients(jnp.float32, adam_jax.adam(1e-3))
    p16, s16 = _small_then_zero_gradients(jnp.float16, adam_jax.adam(1e-3))
    assert bool(jnp.all(jnp.isfinite(p32)))
    assert p16.dtype == jnp.float16
    assert optax.tree.get(s16, 'mu').dtype == jnp.float16
    assert optax.tree.get(s16, 'nu').dtype == jnp.float32  # float16 cannot hold (1 - b2) g^2 for small g
    # Each step moves by about 1e-3, rounded to float16's spacing near 1 (4.9e-4): the runs drift apart a little.
    np.testing.assert_allclose(np.asarray(p16, np.float32), p32, atol=5e-3)
    assert float(jnp.min(1 - p32)) > 0.04
    # The failure mode is real: optax.adam stores v in float16, where it underflows to 0 under a non-zero m.
    p_bad, s_bad = _small_then_zero_gradients(jnp.float16, optax.adam(1e-3))
    assert float(optax.tree.get(s_bad, 'nu')[0]) == 0.0
    assert not bool(jnp.all(jnp.isfinite(p_bad)))
    # ... and so asking adam_jax for float16 v is refused rather than silently unstable.
    with pytest.raises(ValueError, match='nu_dtype=float16 cannot hold the second moment'):
        adam_jax.adam(1e-3, nu_dtype=jnp.float16)


def _is_moments(x):
    return isinstance(x, adam_jax.MomentsState)


def test_a_long_run_stays_finite():
    """1e5 steps in one compiled fori_loop, float32, bfloat16 and float16 leaves, gradients of all scales."""
    params = {
        'f32': jnp.linspace(-2.0, 2.0, 6, dtype=jnp.float32),
        'bf16': jnp.linspace(-2.0, 2.0, 6, dtype=jnp.bfloat16),
        'f16': jnp.linspace(-2.0, 2.0, 6, dtype=jnp.float16),
    }
    tx = adam_jax.adamw(optax.cosine_decay_schedule(1e-2, 100_000, alpha=0.1), weight_decay=1e-2)
    scales = jnp.asarray([1e-6, 1e-3, 1.0, 1e3, 0.0, 1e-2], jnp.float32)

    def body(t, carry):
        params, state = carry
        scale = scales[(t // 997) % scales.size]  # switch regime every 997 steps
        grads = jax.tree.map(lambda p: (scale * (p.astype(jnp.float32) + jnp.sin(0.01 * t))).astype(p.dtype), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    run = jax.jit(lambda c: jax.lax.fori_loop(0, 100_000, body, c))
    final, state = run((params, tx.init(params)))
    for leaf in jax.tree.leaves((final, state)):
        assert bool(jnp.all(jnp.isfinite(leaf))), leaf
    moments = [x for x in jax.tree.leaves(state, is_leaf=_is_moments) if _is_moments(x)]
    assert int(moments[0].count) == 100_000
    for name, p in final.items():
        assert p.dtype == params[name].dtype
        assert float(jnp.max(jnp.abs(p.astype(jnp.float32)))) < 2.0  # pulled towards the origin from |p| = 2
