"""skip_nonfinite: a step with a NaN/Inf gradient changes nothing, bit for bit, and is counted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from tests.conftest import mixed_tree, noisy_quadratic_grad

BAD = {'nan': float('nan'), 'inf': float('inf'), '-inf': float('-inf')}


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _run(tx, params, grads, step=None):
    step = step or jax.jit(tx.update)
    state = tx.init(params)
    history = []
    for g in grads:
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
        history.append((params, state))
    return history


def test_a_bad_step_is_skipped_and_later_steps_equal_a_run_without_it():
    params = mixed_tree()
    # Signed zeros too: x + 0.0 would turn -0.0 into +0.0, a skipped step must not.
    params['dense']['bias'] = jnp.asarray([0.0, -0.0, 1.0, -2.0, 3.0], jnp.float32)
    clean = [noisy_quadratic_grad(mixed_tree(seed=t), t) for t in range(6)]
    k = 3
    tx = adam_jax.skip_nonfinite(adam_jax.adamw(1e-2, weight_decay=0.1))
    step = jax.jit(tx.update)  # one compile for every run below
    want = _run(tx, params, clean, step)
    for bad in BAD.values():
        poisoned = jax.tree.map(lambda x, bad=bad: x.at[(0,) * x.ndim].set(bad), clean[k])
        got = _run(tx, params, clean[:k] + [poisoned] + clean[k:], step)

        # The bad step leaves params and every state leaf bitwise as they were.
        assert _bits(got[k][0]) == _bits(got[k - 1][0])
        assert _bits(got[k][1].inner_state) == _bits(got[k - 1][1].inner_state)
        assert bool(got[k][1].last_skipped) and not bool(got[k + 1][1].last_skipped)
        # Every later step equals the run that never saw the bad gradient, bitwise.
        for (p_got, s_got), (p_want, s_want) in zip(got[k + 1 :], want[k:]):
            assert _bits(p_got) == _bits(p_want)
            assert _bits(s_got.inner_state) == _bits(s_want.inner_state)
        assert int(optax.tree.get(got[-1][1], 'num_skipped')) == 1
        assert int(optax.tree.get(got[-1][1], 'count')) == len(clean)
    assert int(optax.tree.get(want[-1][1], 'num_skipped')) == 0
    assert step._cache_size() == 1


def test_skipped_steps_are_counted_and_state_dtypes_do_not_drift():
    params = {'w': jnp.ones(3, jnp.bfloat16)}
    tx = adam_jax.skip_nonfinite(adam_jax.adam(1e-2, mu_dtype=jnp.bfloat16))
    state = tx.init(params)
    before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    step = jax.jit(tx.update)
    grads = [jnp.ones(3), jnp.asarray([1.0, jnp.nan, 1.0]), jnp.full(3, jnp.inf), jnp.ones(3)]
    for g in grads:
        updates, state = step({'w': g.astype(jnp.bfloat16)}, state, params)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before
        assert updates['w'].dtype == jnp.bfloat16
    assert int(state.num_skipped) == 2
    assert int(optax.tree.get(state, 'count')) == 2
    assert step._cache_size() == 1


def test_agrees_with_optax_apply_if_finite_on_the_params():
    params = mixed_tree()
    grads = [noisy_quadratic_grad(params, t) for t in range(5)]
    grads[2] = jax.tree.map(lambda x: x * jnp.nan, grads[2])
    ours = _run(adam_jax.skip_nonfinite(adam_jax.adam(1e-2)), params, grads)[-1][0]
    theirs = _run(optax.apply_if_finite(optax.adam(1e-2), max_consecutive_errors=10), params, grads)[-1][0]
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_skipped_step_leaves_complex_params_bitwise_alone():
    # The "no move" update was -0 + 0j for complex params, which turned an imaginary -0.0 into +0.0.
    params = {'w': jax.lax.complex(jnp.array([1.0, -2.0]), jnp.array([-0.0, 0.0]))}
    opt = adam_jax.skip_nonfinite(adam_jax.adam(1e-2))
    updates, state = opt.update({'w': jnp.array([jnp.nan, 1.0], jnp.complex64)}, opt.init(params), params)
    new = optax.apply_updates(params, updates)['w']
    assert bool(state.last_skipped)
    np.testing.assert_array_equal(np.signbit(np.asarray(new).imag), [True, False])
    np.testing.assert_array_equal(np.signbit(np.asarray(new).real), [False, True])
