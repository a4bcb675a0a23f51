"""adam_jax inside Flax: nnx.Optimizer and Linen's TrainState train a small model exactly as optax does."""

from __future__ import annotations

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training.train_state import TrainState

import adam_jax

STEPS = 25


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = np.sin(x @ rng.normal(size=(4, 1))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, 16, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _train_nnx(tx):
    x, y = _data()
    model = NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    trajectory, losses = [], []
    for _ in range(STEPS):
        losses.append(float(step(model, optimizer)))
        trajectory.append(jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    return optimizer, trajectory, losses


def test_nnx_optimizer_trains_like_optax_and_keeps_a_temporal_average():
    b2 = 0.9
    tx = optax.chain(adam_jax.adamw(0.05, weight_decay=1e-2), adam_jax.temporal_average(b2))
    optimizer, ours, losses = _train_nnx(tx)
    _, theirs, optax_losses = _train_nnx(optax.adamw(0.05, weight_decay=1e-2))
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(losses, optax_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours[-1]), jax.tree.leaves(theirs[-1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # Kingma & Ba 7.2 from the equation, over the recorded iterates.
    theta_bar = jax.tree.map(np.zeros_like, ours[0])
    for theta in ours:
        theta_bar = jax.tree.map(lambda bar, th: b2 * bar + (1 - b2) * th.astype(np.float64), theta_bar, theta)
    want = jax.tree.map(lambda bar: bar / (1 - b2**STEPS), theta_bar)
    got = nnx.to_pure_dict(adam_jax.averaged_params(optimizer.opt_state))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _mlp(p, x):
    return jnp.tanh(x @ p['hidden']['kernel'] + p['hidden']['bias']) @ p['out']['kernel'] + p['out']['bias']


@pytest.mark.parametrize(
    'tx',
    [
        adam_jax.adam(
            0.05, mu_dtype=adam_jax.BlockQuantized(True, 16, 0), nu_dtype=adam_jax.BlockQuantized(False, 16, 0)
        ),
        adam_jax.adam(0.05, nu_dtype=adam_jax.Factored(4)),
        adam_jax.adafactor(0.05, min_dim_size_to_factor=4),
        adam_jax.skip_nonfinite(adam_jax.adam(0.05, mu_dtype=adam_jax.BlockQuantized(True, 16, 0))),
        # update on the 8-bit kernel (where it is built): nnx.Optimizer calls update, not step
        adam_jax.fused.adamw(
            0.05, mu_dtype=adam_jax.BlockQuantized(True, 16, 0), nu_dtype=adam_jax.BlockQuantized(False, 16, 0)
        ),
    ],
    ids=['8-bit', 'factored', 'adafactor', 'skip_nonfinite(8-bit)', 'fused 8-bit'],
)
def test_nnx_optimizer_with_compressed_moments_trains_like_the_functional_loop(tx):
    # Moments that are pytrees (QuantizedArray, FactoredMoment) used to be built inside nnx's Param boxes and broke
    # nnx.Optimizer on its second update; init now builds them from the bare arrays.
    x, y = _data()
    _, nnx_trajectory, _ = _train_nnx(tx)
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(nnx.state(NnxMLP(nnx.Rngs(0)), nnx.Param)))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean((_mlp(p, x) - y) ** 2))(params)
        updates, state = getattr(tx, 'chain', tx).update(grads, state, params)  # fused: against the composed chain
        return optax.apply_updates(params, updates), state

    for _ in range(STEPS):
        params, state = step(params, state)
    for a, b in zip(jax.tree.leaves(nnx_trajectory[-1]), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(16)(x)))


def test_linen_train_state_trains_like_optax():
    x, y = _data()
    model = LinenMLP()
    params = model.init(jax.random.key(0), x)['params']

    def loss_fn(params):
        return jnp.mean((model.apply({'params': params}, x) - y) ** 2)

    @jax.jit
    def train(state):
        def body(state, _):
            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            return state.apply_gradients(grads=grads), loss

        return jax.lax.scan(body, state, length=STEPS)

    ours, losses = train(TrainState.create(apply_fn=model.apply, params=params, tx=adam_jax.adamw(0.05)))
    theirs, optax_losses = train(TrainState.create(apply_fn=model.apply, params=params, tx=optax.adamw(0.05)))
    assert float(losses[-1]) < 0.5 * float(losses[0])
    np.testing.assert_allclose(losses, optax_losses, rtol=1e-5)
    assert int(ours.step) == STEPS
    for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    'tx',
    [
        adam_jax.adam(1e-2, mu_dtype='int8', nu_dtype='uint8'),
        adam_jax.adafactor(1e-2),
        adam_jax.adam(1e-2, nu_dtype=adam_jax.Factored()),
    ],
    ids=['8-bit', 'adafactor', 'factored'],
)
def test_flax_serialization_round_trips_compressed_state_bitwise(tx):
    params = {'f': jnp.linspace(-1, 1, 256 * 128).reshape(256, 128), 'b': jnp.linspace(0, 1, 5000)}
    state = tx.init(params)
    for scale in (1.0, 2.0, 3.0):
        _, state = tx.update(jax.tree.map(lambda p, s=scale: jnp.cos(p * s), params), state, params)
    restored = flax.serialization.from_bytes(tx.init(params), flax.serialization.to_bytes(state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
