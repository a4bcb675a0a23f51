"""Whole train steps: the flat layout (adam_jax) against a tree of leaves (optax), interleaved.

    python -m benchmarks.train_step [--params 16777216] [--leaves 1000]
    python -m benchmarks.train_step --eight-bit --leaves 16    # 8-bit moments: update against step
    python -m benchmarks.train_step --nnx --leaves 200         # a Flax NNX MLP: nnx.Optimizer against the rest

The Adam-step table (``python -m benchmarks.run``) times the optimizer alone. Keeping the params flat
moves work into the rest of the step: the loss reads its leaves as slices of the vector (a matrix
multiply copies its slice out first). This times whole steps of a toy loss,
:math:`\\mathcal{L} = \\sum_i \\operatorname{mean}(\\tanh(\\theta_i) \\odot x_i)` over the leaves
:math:`\\theta_i`, with ``adam_jax.make_train_step``:

  optax tree       optax.adam on the tree of leaves (what an optax user writes), params and state donated
  adam_jax tree    adam_jax.fused.adam on the same tree
  adam_jax flat    adam_jax.fused.adam on the params kept as one vector (``unravel=``)

With ``--eight-bit`` (moments stored as ``mu_dtype='int8', nu_dtype='uint8'``), on the tree:

  fp32 chain       adam_jax.adam with float32 moments, update + apply_updates (the baseline)
  8-bit chain      adam_jax.adam with 8-bit moments, update + apply_updates: the composed chain in XLA
  8-bit update     adam_jax.fused.adam's init and update alone (what optax.chain, flax.nnx.Optimizer and
                   TrainState call), then apply_updates: the 8-bit kernel writing the updates
  8-bit step       adam_jax.fused.adam with its step: the 8-bit kernel updating the params in place

With ``--nnx``, a Flax NNX MLP of ``leaves / 2`` square ``nnx.Linear`` layers (tanh between them, a mean squared
error on ``--batch`` rows) whose width makes ``--params`` parameters, trained with AdamW:

  nnx.Optimizer optax.adamw   what an NNX user writes: nnx.jit of value_and_grad and Optimizer.update (donated)
  optax.adamw tree            make_train_step(optax.adamw) on the params split from the model (nnx.split)
  adam_jax tree               make_train_step(adam_jax.fused.adamw) on that tree
  adam_jax flat               the same on the params as one vector (``unravel=``)

With a fused optimizer and ``unravel`` the gradient is not assembled into one vector: the kernel reads each
leaf's gradient where the backward pass wrote it (``adam_jax.fused.GradientParts``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import adam_jax
from adam_jax import fused
from benchmarks.run import leaf_sizes

Stepper = tuple[Callable[[], Any], float]  # one train step per call; the seconds its compilation took


def loss_fn(params, data):
    return sum(jnp.mean(jnp.tanh(p) * x) for p, x in zip(jax.tree.leaves(params), jax.tree.leaves(data)))


def _toy_steppers(args) -> dict[str, Stepper]:
    """The toy loss's setups (the default and ``--eight-bit`` modes): name -> a function running one step."""
    sizes = leaf_sizes(args.params, args.leaves)
    keys = jax.random.split(jax.random.key(0), 2 * len(sizes))
    tree = {f'w{i:04d}': 0.1 * jax.random.normal(k, (s,)) for i, (k, s) in enumerate(zip(keys, sizes))}
    data = {f'w{i:04d}': jax.random.normal(k, (s,)) for i, (k, s) in enumerate(zip(keys[len(sizes) :], sizes))}
    flat, unravel = ravel_pytree(tree)
    if args.eight_bit:
        eight_bit = dict(mu_dtype='int8', nu_dtype='uint8')
        kernel = fused.adam(1e-3, **eight_bit)
        optimizers = {
            'fp32 chain': adam_jax.adam(1e-3),
            '8-bit chain': adam_jax.adam(1e-3, **eight_bit),
            '8-bit update': optax.GradientTransformation(kernel.init, kernel.update),  # no step: update is used
            '8-bit step': kernel,
        }
        setups = {name: (opt, jax.tree.map(jnp.copy, tree), None) for name, opt in optimizers.items()}
    else:
        setups = {
            'optax tree': (optax.adam(1e-3), jax.tree.map(jnp.copy, tree), None),
            'adam_jax tree': (fused.adam(1e-3), jax.tree.map(jnp.copy, tree), None),
            'adam_jax flat': (fused.adam(1e-3), flat, unravel),
        }
    return {
        name: _make_train_step_stepper(loss_fn, opt, params, unravel_fn, (data,))
        for name, (opt, params, unravel_fn) in setups.items()
    }


def _make_train_step_stepper(loss, opt, params, unravel_fn, batch: tuple) -> Stepper:
    """One step of ``adam_jax.make_train_step(loss, opt, unravel=unravel_fn)`` per call, compiled ahead."""
    step = adam_jax.make_train_step(loss, opt, unravel=unravel_fn)
    carry = [params, opt.init(params)]
    start = time.perf_counter()
    compiled = step.lower(*carry, *batch).compile()
    seconds = time.perf_counter() - start

    def run():
        carry[0], carry[1], loss_value = compiled(*carry, *batch)
        return carry[0], loss_value

    return run, seconds


def _nnx_steppers(args) -> dict[str, Stepper]:
    """``--nnx``: a deep Flax NNX MLP, ``args.leaves / 2`` ``nnx.Linear`` layers (kernel and bias) of a width that
    makes ``args.params`` parameters, tanh between them, a mean squared error on a batch of ``args.batch`` rows."""
    from flax import nnx

    layers = max(1, args.leaves // 2)
    width = max(1, round((args.params / layers) ** 0.5))

    class Deep(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers)])

        def __call__(self, x):
            for layer in self.layers:
                x = jnp.tanh(layer(x))
            return x

    x = jax.random.normal(jax.random.key(1), (args.batch, width))
    y = jnp.zeros((args.batch, width))

    def nnx_optimizer(tx):  # what an NNX user writes (donated, the peer at its best)
        model = Deep(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @functools.partial(nnx.jit, donate_argnums=(0, 1))
        def step(model, optimizer, x, y):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        start = time.perf_counter()
        jax.block_until_ready(step(model, optimizer, x, y))  # the first call: tracing, compiling and one step
        return (lambda: step(model, optimizer, x, y)), time.perf_counter() - start

    def train_step(opt, flat: bool) -> Stepper:
        graphdef, params, rest = nnx.split(Deep(nnx.Rngs(0)), nnx.Param, ...)

        def mse(params, rest, x, y):
            return jnp.mean((nnx.merge(graphdef, params, rest)(x) - y) ** 2)

        unravel = None
        if flat:
            params, unravel = ravel_pytree(params)
        return _make_train_step_stepper(mse, opt, params, unravel, (rest, x, y))

    return {
        'nnx.Optimizer optax.adamw': nnx_optimizer(optax.adamw(1e-3)),
        'optax.adamw tree': train_step(optax.adamw(1e-3), flat=False),
        'adam_jax tree': train_step(fused.adamw(1e-3), flat=False),
        'adam_jax flat': train_step(fused.adamw(1e-3), flat=True),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints the table; returns the median step time (s) of each setup."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--params', type=int, default=2**24)
    parser.add_argument('--leaves', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--eight-bit', action='store_true', help='8-bit moments: chain, update and step')
    parser.add_argument('--nnx', action='store_true', help='a deep Flax NNX MLP: nnx.Optimizer against make_train_step')
    parser.add_argument('--batch', type=int, default=8, help='--nnx: rows per batch')
    args = parser.parse_args(argv)
    if args.nnx and args.eight_bit:
        parser.error('--nnx and --eight-bit are separate modes')
    steppers = (_nnx_steppers if args.nnx else _toy_steppers)(args)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(args.rounds):
        names = list(steppers)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for k in range(args.steps + (1 if r == 0 else 0)):
                t = time.perf_counter()
                jax.block_until_ready(steppers[name][0]())
                if r > 0 or k > 0:  # each one's first timed call is a warm-up
                    times[name].append(time.perf_counter() - t)
    base_name = next(iter(times))
    base = statistics.median(times[base_name])
    model = f'an NNX MLP of {max(1, args.leaves // 2)} layers' if args.nnx else 'a toy loss'
    print(
        f'{args.params / 2**20:g}M params in {args.leaves} leaves ({model}), median of {args.rounds * args.steps} steps'
    )
    print(f'| train step | ms | vs {base_name} | compile s |')
    print('|---|---:|---:|---:|')
    for name, samples in times.items():
        t = statistics.median(samples)
        print(f'| {name} | {1e3 * t:.1f} | {t / base:.2f}x | {steppers[name][1]:.2f} |')
    print(f'Kernel: {fused.status()}.')
    return {name: statistics.median(samples) for name, samples in times.items()}


if __name__ == '__main__':
    main()
