"""Whole train steps: the flat layout (adam_jax) against a tree of leaves (optax), interleaved.

    python -m benchmarks.train_step [--params 16777216] [--leaves 1000]
    python -m benchmarks.train_step --eight-bit --leaves 16    # 8-bit moments: update against step

The Adam-step table (``python -m benchmarks.run``) times the optimizer alone. Keeping the params flat
moves work into the rest of the step: the loss reads its leaves as slices of the vector and the
gradient is assembled into one vector. This times whole steps of a toy loss,
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
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import adam_jax
from adam_jax import fused
from benchmarks.run import leaf_sizes


def loss_fn(params, data):
    return sum(jnp.mean(jnp.tanh(p) * x) for p, x in zip(jax.tree.leaves(params), jax.tree.leaves(data)))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints the table; returns the median step time (s) of each setup."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--params', type=int, default=2**24)
    parser.add_argument('--leaves', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--eight-bit', action='store_true', help='8-bit moments: chain, update and step')
    args = parser.parse_args(argv)
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
    runs, first = {}, {}
    for name, (opt, params, unravel_fn) in setups.items():
        step = adam_jax.make_train_step(loss_fn, opt, unravel=unravel_fn)
        state = opt.init(params)
        start = time.perf_counter()
        compiled = step.lower(params, state, data).compile()
        first[name] = time.perf_counter() - start
        runs[name] = [compiled, params, state, []]
    for r in range(args.rounds):
        names = list(runs)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run = runs[name]
            for _ in range(args.steps + (1 if r == 0 else 0)):
                t = time.perf_counter()
                run[1], run[2], loss = run[0](run[1], run[2], data)
                jax.block_until_ready(run[1])
                run[3].append(time.perf_counter() - t)
            if r == 0:
                run[3].pop(0)  # warm-up
    base_name = next(iter(runs))
    base = statistics.median(runs[base_name][3])
    print(f'{args.params / 2**20:g}M params in {args.leaves} leaves, median of {args.rounds * args.steps} steps')
    print(f'| train step | ms | vs {base_name} | compile s |')
    print('|---|---:|---:|---:|')
    for name, run in runs.items():
        t = statistics.median(run[3])
        print(f'| {name} | {1e3 * t:.1f} | {t / base:.2f}x | {first[name]:.2f} |')
    print(f'Kernel: {fused.status()}.')
    return {name: statistics.median(run[3]) for name, run in runs.items()}


if __name__ == '__main__':
    main()
