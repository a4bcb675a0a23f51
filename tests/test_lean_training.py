"""Training parity: an MLP on scikit-learn's digits with fp32, bf16 and 8-bit Adam state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import adam_jax
from adam_jax.quantization import QuantizedArray

EPOCHS, BATCH, HIDDEN = 3, 64, 512  # 64*512 and 512*10 weights: both >= 4096, so both quantized


def _data():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32) / 16.0, y[order]
    return (x[:1440], y[:1440]), (x[1440:], y[1440:])


def _loss(params, x, y):
    h = jnp.tanh(x @ params['w1'] + params['b1'])
    logits = h @ params['w2'] + params['b2']
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def _train(opt):
    (x, y), (x_test, y_test) = _data()
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        'w1': jax.random.normal(k1, (64, HIDDEN)) / 8.0,
        'b1': jnp.zeros(HIDDEN),
        'w2': jax.random.normal(k2, (HIDDEN, 10)) / np.sqrt(HIDDEN),
        'b2': jnp.zeros(10),
    }
    perms = np.stack([np.random.default_rng(e).permutation(len(y)) for e in range(EPOCHS)])
    batches = perms[:, : len(y) // BATCH * BATCH].reshape(-1, BATCH)

    @jax.jit
    def run(params, x, y):
        def step(carry, idx):
            params, state = carry
            grads = jax.grad(lambda p: _loss(p, x[idx], y[idx])[0])(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), batches)
        return params, state, _loss(params, x, y)[0]

    params, state, train_loss = run(params, jnp.asarray(x), jnp.asarray(y))
    accuracy = float(np.mean(np.argmax(_loss(params, x_test, y_test)[1], axis=1) == y_test))
    return float(train_loss), accuracy, state


def test_lean_state_trains_like_fp32_on_digits():
    loss32, acc32, _ = _train(adam_jax.adam(1e-2))
    assert acc32 > 0.95  # the baseline really learned
    for storage in (dict(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16), dict(mu_dtype='int8', nu_dtype='uint8')):
        loss, acc, state = _train(adam_jax.adam(1e-2, **storage))
        if storage['mu_dtype'] == 'int8':
            mu = optax.tree.get(state, 'mu')
            assert isinstance(mu['w1'], QuantizedArray) and isinstance(mu['w2'], QuantizedArray)
        assert abs(acc - acc32) <= 0.01, (storage, acc, acc32)
        assert abs(loss - loss32) <= 0.05 * loss32, (storage, loss, loss32)
