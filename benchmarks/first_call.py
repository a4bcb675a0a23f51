"""First-call cost of a many-leaf Adam step: tracing, lowering and XLA compilation, each timed apart.

    python -m benchmarks.first_call [--leaves 1000] [--params 16777216] [--rounds 3]

``benchmarks.run`` reports the whole first call; this splits it, because the parts scale differently: tracing
is Python work per leaf (each jnp operation of the update), lowering grows with the traced program, and XLA's
compile grows with the kernels it emits. Every (implementation, round) runs in a fresh process, so no JAX cache
is warm; rounds interleave the implementations, and the table shows medians and ratios to optax.adam.

  optax.adam      update + apply_updates on the tree of leaves
  adam_jax chain  adam_jax.adam, the composed chain (the path on GPU/TPU, and on CPU without the kernel)
  adam_jax tree   adam_jax.fused.adam(...).step on the tree (CPU kernel calls of up to 32 leaves)
  adam_jax flat   the same step on the params as one vector (``make_train_step(unravel=...)``)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

OPTAX = 'optax.adam'
ROOT = pathlib.Path(__file__).resolve().parent.parent  # the workers run `-m benchmarks.first_call` from here
IMPLEMENTATIONS = (OPTAX, 'adam_jax chain', 'adam_jax tree', 'adam_jax flat')


def measure(name: str, n: int, leaves: int) -> dict[str, float]:
    """Trace, lower and compile one donated step of ``name``; seconds of each."""
    import jax
    import jax.numpy as jnp
    import optax

    import adam_jax
    from adam_jax import fused
    from benchmarks.run import leaf_sizes

    sizes = [n] if name == 'adam_jax flat' else leaf_sizes(n, leaves)
    params = [jnp.zeros(s, jnp.float32) for s in sizes]
    if name.startswith('adam_jax') and name != 'adam_jax chain':
        opt = fused.adam(1e-3)
        step = opt.step
    else:
        opt = adam_jax.adam(1e-3) if name == 'adam_jax chain' else optax.adam(1e-3)

        def step(p, g, s):
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s

    args = (params, params, opt.init(params))
    jitted = jax.jit(step, donate_argnums=(0, 2))
    start = time.perf_counter()
    traced = jitted.trace(*args)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    return dict(trace=traced_at - start, lower=lowered_at - traced_at, compile=done - lowered_at, total=done - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--leaves', type=int, default=1000)
    parser.add_argument('--params', type=int, default=2**24)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.params, args.leaves)), flush=True)
        return {}
    for name, value, low in (
        ('--leaves', args.leaves, 1),
        ('--params', args.params, args.leaves),
        ('--rounds', args.rounds, 1),
    ):
        if value < low:
            parser.error(f'{name} must be >= {low}, got {value}')
    times: dict[str, list[dict[str, float]]] = {name: [] for name in IMPLEMENTATIONS}
    for r in range(args.rounds):
        for name in IMPLEMENTATIONS[r % 4 :] + IMPLEMENTATIONS[: r % 4]:
            command = [sys.executable, '-m', 'benchmarks.first_call', '--worker', name]
            command += ['--leaves', str(args.leaves), '--params', str(args.params)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            times[name].append(json.loads(out.strip().splitlines()[-1]))
    parts = ('trace', 'lower', 'compile', 'total')
    medians = {name: {k: statistics.median(t[k] for t in runs) for k in parts} for name, runs in times.items()}
    command = f'python -m benchmarks.first_call --leaves {args.leaves}'
    command += '' if args.params == 2**24 else f' --params {args.params}'
    command += '' if args.rounds == 3 else f' --rounds {args.rounds}'
    lines = [
        f'First call of a donated Adam step, {args.params / 2**20:g}M float32 params in {args.leaves} leaves, median '
        f'of {args.rounds} fresh processes per row. Command: `{command}`.',
        '',
        '| implementation | trace s | lower s | compile s | total s | total vs optax |',
        '|---|---:|---:|---:|---:|---:|',
    ]
    base = medians[OPTAX]['total']
    for name, m in medians.items():
        lines.append(
            f'| {name} | {m["trace"]:.2f} | {m["lower"]:.2f} | {m["compile"]:.2f} | {m["total"]:.2f} '
            f'| {m["total"] / base:.2f}x |'
        )
    print('\n'.join(lines))
    return dict(medians=medians, rounds=times)


if __name__ == '__main__':
    main()
