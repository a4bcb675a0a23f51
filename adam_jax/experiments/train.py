"""One compiled training loop per optimizer, run over a whole grid of hyperparameters at once.

``train_grid`` splits a Flax NNX model into its graph and its parameters, stacks the parameters
once per grid point, and jits ``vmap(scan(step))`` over one epoch: every grid point starts from the
same initial weights and sees the same minibatches and dropout masks (common random numbers), so
the curves differ only by the optimizer's settings. A tqdm bar advances once per epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from adam_jax.experiments import optimizers
from adam_jax.experiments.data import Dataset
from adam_jax.experiments.results import Curve

MODEL_HPARAMS = ('dropout_rate',)  # grid keys the model takes; every other key goes to the optimizer


@dataclasses.dataclass(frozen=True)
class Classification:
    """Softmax cross-entropy, plus :math:`\\frac{\\lambda}{2}\\|\\theta\\|^2` when ``l2 > 0``."""

    l2: float = 0.0

    def loss(self, model, x, y, key, hparams):
        logits = model(x, key=key, dropout_rate=hparams.get('dropout_rate', 0.0))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        if self.l2:
            squares = jax.tree.leaves(jax.tree.map(lambda p: jnp.sum(p**2), nnx.state(model, nnx.Param)))
            loss = loss + 0.5 * self.l2 * sum(squares)
        return loss

    def evaluate(self, model, x, y):
        logits = model(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """The VAE's negative evidence lower bound (nats per image); no accuracy."""

    def loss(self, model, x, y, key, hparams):
        return model.negative_elbo(x, key)

    def evaluate(self, model, x, y):
        return model.negative_elbo(x, jax.random.key(0)), jnp.nan


@dataclasses.dataclass
class GridRun:
    """Per grid point and epoch: mean minibatch training loss, test loss and test accuracy."""

    optimizer: str
    grid: dict[str, np.ndarray]
    train_loss: np.ndarray  # (G, epochs)
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    wall_time: float

    def point(self, i: int) -> dict[str, float]:
        # The shortest decimal that names the float32 value the run used (0.003, not 0.003000000026077032).
        return {k: float(str(np.float32(v[i]))) for k, v in self.grid.items()}

    def curve(self, i: int, label: str, group: str = '') -> Curve:
        """Grid point ``i`` as a :class:`Curve` (training cost and test accuracy per epoch)."""
        accuracy = self.test_accuracy[i]
        return Curve(
            label=label,
            x=list(range(1, self.train_loss.shape[1] + 1)),
            loss=[to_float(v) for v in self.train_loss[i]],
            accuracy=None if np.all(np.isnan(accuracy)) else [to_float(v) for v in accuracy],
            hparams={'optimizer': self.optimizer, **self.point(i)},
            wall_time=self.wall_time,
            group=group,
        )

    def best(self) -> int:
        """The grid point with the lowest final training loss (a diverged run counts as +inf)."""
        final = np.where(np.isfinite(self.train_loss[:, -1]), self.train_loss[:, -1], np.inf)
        return int(np.argmin(final))


def init_model(make_model: Callable[[], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
    """The graph and the initial parameters of ``make_model()``, initialised in one compiled call.

    Building an NNX model eagerly compiles every initialiser separately (one XLA compile per
    layer shape); under ``jax.jit`` it is a single compile.
    """
    graphdef = nnx.graphdef(nnx.eval_shape(make_model))
    return graphdef, jax.jit(lambda: nnx.state(make_model()))()


def train_grid(
    model: tuple[nnx.GraphDef, nnx.State],
    task,
    optimizer: str,
    grid: Mapping[str, Sequence[float]],
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    schedule: str = 'constant',
    progress: bool = True,
    desc: str | None = None,
    vectorize: bool = True,
) -> GridRun:
    """Trains ``model`` with ``optimizer`` at every point of ``grid`` (equal-length lists of values).

    Args:
      model: ``init_model(make_model)``: the graph and initial weights (the common start of every run).
      task: :class:`Classification` or :class:`Reconstruction` (``loss`` and ``evaluate``).
      optimizer: a name from :data:`adam_jax.experiments.optimizers.OPTIMIZERS`.
      grid: e.g. ``{'learning_rate': [1e-3, 1e-2]}``; ``dropout_rate`` goes to the model.
      epochs, batch_size: passes over ``data.x_train`` and the minibatch size (the remainder of
        an epoch that does not fill a batch is skipped).
      seed: seeds the minibatch order and the dropout / VAE noise.
      schedule: ``'constant'`` or ``'inverse_sqrt'`` (:math:`\\alpha/\\sqrt{t}`).
      vectorize: ``jax.vmap`` over the grid, one compiled scan per epoch (default); ``False`` runs
        the points one after another, one jitted step at a time (for convolutions, which XLA's CPU
        backend runs slowly when batched over weights or inside a compiled loop).
    """
    from tqdm.auto import tqdm

    grid_np = {k: np.asarray(v, np.float32) for k, v in grid.items()}
    size = len(next(iter(grid_np.values())))
    hparams = {k: jnp.asarray(v) for k, v in grid_np.items()}
    graphdef, params = model
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    steps = len(data.x_train) // batch_size
    if steps < 1:
        raise ValueError(f'batch_size={batch_size} is larger than the training set ({len(data.x_train)} examples).')

    def make_tx(h):
        return optimizers.make(optimizer, {k: v for k, v in h.items() if k not in MODEL_HPARAMS}, schedule)

    def order_and_keys(key):
        key_order, key_noise = jax.random.split(key)
        order = jax.random.permutation(key_order, x_train.shape[0])[: steps * batch_size].reshape(steps, -1)
        return order, jax.random.split(key_noise, steps)

    def step(carry, inputs, h, x_train, y_train):
        params, opt_state = carry
        idx, k = inputs

        def loss_fn(p):
            return task.loss(nnx.merge(graphdef, p), x_train[idx], y_train[idx], k, h)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = make_tx(h).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def evaluate(params, x_test, y_test):
        return task.evaluate(nnx.merge(graphdef, params), x_test, y_test)

    def epoch(params, opt_state, h, key, x_train, y_train, x_test, y_test):
        (params, opt_state), losses = jax.lax.scan(
            lambda carry, inputs: step(carry, inputs, h, x_train, y_train), (params, opt_state), order_and_keys(key)
        )
        return params, opt_state, jnp.mean(losses), *evaluate(params, x_test, y_test)

    def stack_and_init(params, hparams):
        stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (size, *p.shape)), params)
        return stacked, jax.vmap(lambda h: make_tx(h).init(params))(hparams)

    if vectorize:
        run_epoch = jax.jit(jax.vmap(epoch, in_axes=(0, 0, 0, None, None, None, None, None)), donate_argnums=(0, 1))
    else:
        # One grid point after another, one jitted step at a time: XLA's CPU backend runs convolutions
        # inside a compiled loop (scan, lax.map) about 15x slower than the same step jitted on its own.
        jit_step = jax.jit(step, donate_argnums=(0,))
        jit_evaluate = jax.jit(evaluate)
        jit_order = jax.jit(order_and_keys)

        def run_epoch(stacked, opt_state, hparams, key, x_train, y_train, x_test, y_test):
            order, keys = jit_order(key)
            results = []
            for i in range(size):
                carry, h = jax.tree.map(lambda a, i=i: a[i], ((stacked, opt_state), hparams))
                losses = []
                for t in range(steps):
                    carry, loss = jit_step(carry, (order[t], keys[t]), h, x_train, y_train)
                    losses.append(loss)
                results.append((*carry, jnp.mean(jnp.stack(losses)), *jit_evaluate(carry[0], x_test, y_test)))
            return jax.tree.map(lambda *xs: jnp.stack(xs), *results)

    start = time.perf_counter()
    stacked, opt_state = jax.jit(stack_and_init)(params, hparams)  # one compile instead of one per eager op
    train_loss, test_loss, test_accuracy = [], [], []
    bar = tqdm(total=epochs, desc=desc or optimizer, disable=not progress, leave=True, unit='epoch')
    for key in jax.random.split(jax.random.key(seed), epochs):
        stacked, opt_state, loss, tl, ta = run_epoch(stacked, opt_state, hparams, key, x_train, y_train, x_test, y_test)
        train_loss.append(np.asarray(loss))
        test_loss.append(np.asarray(tl))
        test_accuracy.append(np.asarray(ta))
        finite = train_loss[-1][np.isfinite(train_loss[-1])]
        bar.set_postfix(loss=f'{finite.min():.4g}' if finite.size else 'nan')
        bar.update()
    bar.close()
    return GridRun(
        optimizer=optimizer,
        grid=grid_np,
        train_loss=np.stack(train_loss, 1),
        test_loss=np.stack(test_loss, 1),
        test_accuracy=np.stack(test_accuracy, 1),
        wall_time=time.perf_counter() - start,
    )


def to_float(x) -> float:
    """A Python float, NaN for anything non-finite (a diverged run)."""
    x = float(x)
    return x if math.isfinite(x) else math.nan
