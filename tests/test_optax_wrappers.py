"""optax's wrappers around every adam_jax optimizer give what they give around optax's namesake.

Each test runs the wrapped adam_jax optimizer and the same wrapper around the optax optimizer it
must equal. To cover a new optimizer, add it to ``OPTIMIZERS`` with that optax optimizer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax

# adam_jax name -> the optax optimizer with the same arguments and the same numbers.
OPTIMIZERS = {
    'adam': optax.adam,
    'adamw': optax.adamw,
    'adamax': optax.adamax,
    'adamaxw': optax.adamaxw,
    'amsgrad': optax.amsgrad,
    'nadam': optax.nadam,
    'nadamw': optax.nadamw,
    'radam': optax.radam,
    'adabelief': optax.adabelief,
    'lamb': optax.lamb,
    'lion': optax.lion,
}
NAMES = tuple(OPTIMIZERS)
LR = 0.05
ATOL = 1e-6


def _params():
    rng = np.random.default_rng(0)
    return {'w': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), 'b': jnp.asarray(rng.normal(size=3), jnp.float32)}


def _data(seed, n=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 3)) + 0.1 * rng.normal(size=(n, 3))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def _loss(params, x, y):
    # float32 products (a GPU would otherwise multiply in TF32, which changes sums of micro-batch gradients)
    return jnp.mean((jnp.matmul(x, params['w'], precision='highest') + params['b'] - y) ** 2)


def _batches(seed, k=4):
    x, y = _data(seed, n=4 * k)
    return x.reshape(k, 4, 4), y.reshape(k, 4, 3)


def _grad(params, t):
    xs, ys = _batches(0)
    return jax.grad(_loss)(params, xs[t % 4] * (1 + t % 3), ys[t % 4])


def _trajectory(tx, steps, grad, poison):
    def body(carry, t):
        params, state = carry
        scale = jnp.where(jnp.isin(t, jnp.asarray(poison, jnp.int32)), jnp.nan, 1.0) if poison else 1.0
        updates, state = tx.update(jax.tree.map(lambda g: g * scale, grad(params, t)), state, params)
        return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (_params(), tx.init(_params())), jnp.arange(steps))[0]


def _run(tx, steps, grad=_grad, poison=()):
    """(params, state) after ``steps`` steps, all in one compiled scan; NaN gradients at the steps in ``poison``."""
    return jax.jit(lambda: _trajectory(tx, steps, grad, poison))()


def _run_both(ours, theirs, steps, grad=_grad, poison=()):
    """Both runs in one compiled program (one compile instead of two)."""
    return jax.jit(lambda: (_trajectory(ours, steps, grad, poison), _trajectory(theirs, steps, grad, poison)))()


def _assert_close(a, b, atol=ATOL, rtol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _moved(params):
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(_params())))


@pytest.mark.parametrize('name', NAMES)
def test_chain_with_clip_by_global_norm_and_a_warmup_cosine_schedule(name):
    assert float(optax.tree.norm(_grad(_params(), 0))) > 1.0  # clipping to 0.5 is active
    schedule = optax.warmup_cosine_decay_schedule(0.0, LR, warmup_steps=5, decay_steps=20, end_value=1e-3)
    (got, _), (want, _) = _run_both(
        optax.chain(optax.clip_by_global_norm(0.5), getattr(adam_jax, name)(schedule)),
        optax.chain(optax.clip_by_global_norm(0.5), OPTIMIZERS[name](schedule)),
        20,
    )
    _assert_close(got, want)
    assert _moved(got) > 0.02  # RAdam spends its first steps as clipped SGD with momentum: small moves


@pytest.mark.parametrize('name', NAMES)
def test_inject_hyperparams_changes_lr_and_betas_without_recompiling(name):
    def run(factory):
        tx = optax.inject_hyperparams(factory)(learning_rate=LR, b1=0.9, b2=0.999)
        params, state = _params(), tx.init(_params())

        @jax.jit
        def step(params, state, t):
            updates, state = tx.update(_grad(params, t), state, params)
            return optax.apply_updates(params, updates), state

        for t in range(12):
            if t == 6:  # mid-training: new values, same compiled step
                for key, value in (('learning_rate', 0.01), ('b1', 0.5), ('b2', 0.9)):
                    state.hyperparams[key] = jnp.asarray(value, state.hyperparams[key].dtype)
            params, state = step(params, state, t)
        # The injected values are used: the same compiled step with the old values goes elsewhere.
        initial = {'learning_rate': LR, 'b1': 0.9, 'b2': 0.999}
        old = state._replace(
            hyperparams={k: jnp.asarray(initial.get(k, v), v.dtype) for k, v in state.hyperparams.items()}
        )
        new_params, old_params = (jax.tree.leaves(step(params, s, 12)[0]) for s in (state, old))
        assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(new_params, old_params)) > 1e-3
        assert step._cache_size() == 1
        return params

    got, want = run(getattr(adam_jax, name)), run(OPTIMIZERS[name])
    _assert_close(got, want)


@pytest.mark.parametrize('name', NAMES)
def test_multi_steps_accumulation_equals_the_large_batch_step(name):
    k = 4
    xs, ys = _batches(1, k)

    def micro_grad(params, t):  # micro-batch t % k; equal sizes, so the mean of their losses is the full loss
        return jax.grad(_loss)(params, xs[t % k], ys[t % k])

    def full_grad(params, t):
        del t
        return jax.grad(_loss)(params, xs.reshape(-1, 4), ys.reshape(-1, 3))

    accumulated, state = _run(optax.MultiSteps(getattr(adam_jax, name)(LR), every_k_schedule=k), 3 * k, micro_grad)
    large_batch, _ = _run(OPTIMIZERS[name](LR), 3, full_grad)
    _assert_close(accumulated, large_batch)
    # Three optimizer steps were taken; had the params moved between boundaries, the micro-batch
    # gradients would be taken at other points and the runs would differ.
    assert int(state.gradient_step) == 3
    assert _moved(accumulated) > 0.1


@pytest.mark.parametrize('name', NAMES)
def test_masked_and_multi_transform_give_groups_their_own_optimizer(name):
    mask = {'w': True, 'b': False}
    (got, _), (want, _) = _run_both(
        optax.masked(getattr(adam_jax, name)(LR), mask), optax.masked(OPTIMIZERS[name](LR), mask), 8
    )
    # 'b' is left out of the mask: optax.masked passes its raw gradient through, which apply_updates adds every
    # step, so it grows to ~160, where float32's spacing is 1.5e-5; its gradient depends on 'w', where the two
    # optimizers may differ by an ulp, and on an AVX-512 CPU (Zen 5) 'b' then differed by 1 ulp of 160 after 8
    # steps. Hence a relative bound as well there (1e-6: a few ulps); 'w' keeps the absolute one.
    assert float(jnp.max(jnp.abs(want['b']))) > 100
    _assert_close(got['w'], want['w'])
    _assert_close(got['b'], want['b'], rtol=1e-6)

    labels = {'w': 'main', 'b': 'other'}
    ours = optax.multi_transform({'main': getattr(adam_jax, name)(LR), 'other': adam_jax.adamw(0.2, b1=0.5)}, labels)
    theirs = optax.multi_transform({'main': OPTIMIZERS[name](LR), 'other': optax.adamw(0.2, b1=0.5)}, labels)
    (got, _), (want, _) = _run_both(ours, theirs, 8)
    _assert_close(got, want)
    assert _moved(got) > 0.1


@pytest.mark.parametrize('name', NAMES)
def test_apply_if_finite_skips_the_nan_step(name):
    (got, state), (want, _) = _run_both(
        optax.apply_if_finite(getattr(adam_jax, name)(LR), 3),
        optax.apply_if_finite(OPTIMIZERS[name](LR), 3),
        10,
        poison=(4,),
    )
    _assert_close(got, want)
    assert int(state.total_notfinite) == 1
    for leaf in jax.tree.leaves((got, state.inner_state)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
