"""adam_jax inside Flax: nnx.Optimizer and Linen's TrainState train a small model exactly as optax does."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
