"""A correctness sweep, not a timing: where a fused step differs from its composed chain, over leaf shapes.

Run: ``python -m benchmarks.shape_sweep [--optimizers adamw nadamw ...] [--steps 4]`` (``ADAM_JAX_FUSED_ISA=avx2``
for the AVX2 loops). For each optimizer and each leaf shape (1-D from 1 to 2^20 + 3 elements, (s, 1) and (s, 3) for
s = 1..40 and 65543, (700, c) for c = 1..40, 3-D and 4-D), ``--steps`` random steps of ``jax.jit(opt.step)`` against
the jitted chain (update + ``optax.apply_updates``) from the same params, grads and state; prints the shapes with
differing elements (params and state, NaN equal to NaN) and a total per optimizer. The tests check a subset of these
shapes; this is the wider sweep the README and the performance log quote.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import fused

OPTIMIZERS = {
    'adamw': lambda: fused.adamw(1e-2, weight_decay=0.1),
    'nadamw': lambda: fused.nadamw(1e-2, weight_decay=0.1),
    'adamaxw': lambda: fused.adamaxw(1e-2, weight_decay=0.1),
    'amsgrad': lambda: fused.amsgrad(1e-2),
    'adabelief': lambda: fused.adabelief(1e-2, eps_root=1e-9),
    'radam': lambda: fused.radam(1e-2, b2=0.8, threshold=4.0),  # tractable from the fifth step
    'radam-nesterov': lambda: fused.radam(1e-2, b2=0.8, threshold=4.0, nesterov=True),
    'lion': lambda: fused.lion(1e-3, weight_decay=0.1),
}
SHAPES = (
    [(n,) for n in (*range(1, 41), 1000, 65543, 2**20 + 3)]
    + [(s, c) for c in (1, 3) for s in (*range(1, 41), 65543)]
    + [(700, c) for c in range(1, 41)]
    + [(64, 64), (64, 64, 3), (5, 7, 11, 3), (2, 300, 10)]
)


def differing(a, b) -> int:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return sum(int(np.sum(~((np.asarray(x) == np.asarray(y)) | (np.isnan(x) & np.isnan(y))))) for x, y in pairs)


def sweep(opt, steps: int, seed: int = 0) -> int:
    def chain_step(params, grads, state):
        updates, state = opt.chain.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step, chain = jax.jit(opt.step), jax.jit(chain_step)
    rng = np.random.default_rng(seed)
    total = 0
    for shape in SHAPES:
        params = [jnp.asarray(rng.normal(size=shape), jnp.float32)]
        state = opt.init(params)
        count = 0
        for _ in range(steps):
            grads = [jnp.asarray(rng.normal(size=shape), jnp.float32)]
            got, want = step(params, grads, state), chain(params, grads, state)
            count += differing(got, want)
            params, state = want
        if count:
            print(f'  {shape}: {count} differing elements')
        total += count
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--optimizers', nargs='+', default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    parser.add_argument('--steps', type=int, default=4)
    args = parser.parse_args()
    print(f'{fused.status()}; {len(SHAPES)} leaf shapes, {args.steps} steps each')
    for name in args.optimizers:
        total = sweep(OPTIMIZERS[name](), args.steps)
        print(f'{name}: {total} differing elements')


if __name__ == '__main__':
    main()
