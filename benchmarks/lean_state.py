"""Lean optimizer state: bytes and step time of fp32, bf16 and 8-bit Adam state.

Run: ``python -m benchmarks.lean_state [--params 16_000_000] [--leaves 16] [--rounds 31] [--back-to-back K]``.

"adam_jax" rows run the composed chain (``update`` + ``optax.apply_updates``); "adam_jax.fused" rows run
``adam_jax.fused.adam(...).step``, the fused CPU kernel where it is built (``adam_kernel.cc`` for float32,
``adam8_kernel.cc`` for 8-bit state), else the same chain; the "update + apply_updates" row runs its ``update``
(the 8-bit kernel writing the updates, what optax.chain, Flax's optimizers and ``TrainState`` call) and then
``optax.apply_updates``. Configurations are interleaved in rounds (one timed
step of each per round, in an order shuffled every round, after a warm-up) so that drift on a shared machine
hits them alike; steps are jitted with params and state donated.

The rows run in two groups, one after the other, each with both fp32 steps (composed and fused) timed in its own
rounds: first the steps that the issue's acceptance compares (fp32, bf16 and 8-bit on the kernel, optax fp32),
then the slow ones (the composed 8-bit chains, ``update`` + ``apply_updates``, optax with a bf16 first moment),
which allocate and fault in ~100 MiB of temporaries per step and slow down whatever step runs after them.
Prints a markdown table of medians and ratios to the fp32 steps of the same group, composed (``adam_jax.adam``)
and fused.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import optax

import adam_jax
from adam_jax import fused
from benchmarks.interleave import time_interleaved

CONFIGS = {
    'fp32 (adam_jax)': dict(),
    'bf16 (adam_jax)': dict(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    '8-bit (adam_jax)': dict(mu_dtype='int8', nu_dtype='uint8'),
    '8-bit m, factored v (adam_jax)': dict(mu_dtype='int8', nu_dtype=adam_jax.Factored()),
    'fp32 (adam_jax.fused)': ('fused', dict()),
    '8-bit (adam_jax.fused)': ('fused', dict(mu_dtype='int8', nu_dtype='uint8')),
    '8-bit, update + apply_updates (adam_jax.fused)': ('fused update', dict(mu_dtype='int8', nu_dtype='uint8')),
    'fp32 (optax)': None,
    'bf16 mu (optax)': 'optax_bf16',
}
BASELINES = ('fp32 (adam_jax)', 'fp32 (adam_jax.fused)')  # timed in every group, the ratios' denominators
GROUPS = (
    BASELINES + ('bf16 (adam_jax)', '8-bit (adam_jax.fused)', 'fp32 (optax)'),
    BASELINES
    + ('8-bit (adam_jax)', '8-bit m, factored v (adam_jax)', '8-bit, update + apply_updates (adam_jax.fused)')
    + ('bf16 mu (optax)',),
)


def make_opt(config):
    """(optimizer, its step or None for update + apply_updates)."""
    if config is None:
        return optax.adam(1e-3), None
    if config == 'optax_bf16':
        return optax.adam(1e-3, mu_dtype=jnp.bfloat16), None
    if isinstance(config, tuple):
        opt = fused.adam(1e-3, **config[1])
        return opt, (opt.step if config[0] == 'fused' else None)
    return adam_jax.adam(1e-3, **config), None


def make_params(n_params: int, n_leaves: int):
    cols = 1024
    rows = max(1, n_params // (n_leaves * cols))
    return {f'w{i}': jnp.full((rows, cols), 0.01 * (i + 1), jnp.float32) for i in range(n_leaves)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--params', type=int, default=16 * 2**20)
    parser.add_argument('--leaves', type=int, default=16)
    parser.add_argument('--rounds', type=int, default=31)
    parser.add_argument(
        '--back-to-back',
        type=int,
        default=0,
        metavar='K',
        help='also time bursts of K steps waited for once (on a GPU a step waited for alone times the round trip)',
    )
    args = parser.parse_args()
    if args.back_to_back < 0:
        parser.error(f'--back-to-back must be >= 0 (0: off), got {args.back_to_back}')

    params0 = make_params(args.params, args.leaves)
    n = sum(p.size for p in jax.tree.leaves(params0))
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params0)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params0)

    runs = {}
    for name, config in CONFIGS.items():
        opt, opt_step = make_opt(config)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, state, grads, opt=opt, opt_step=opt_step):
            if opt_step is not None:
                return opt_step(params, grads, state)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params = jax.tree.map(jnp.copy, params0)
        state = opt.init(params)
        for _ in range(3):  # compile and warm up
            params, state = step(params, state, grads)
        jax.block_until_ready((params, state))
        nbytes = adam_jax.state_nbytes(jax.eval_shape(opt.init, abstract)).total
        runs[name] = dict(step=step, params=params, state=state, times=[], nbytes=nbytes)

    rows = {}  # name -> (its timed run, the baseline runs of its group)
    for group in GROUPS:
        # A fresh list of times per group; params and state carry over (the last group's are current).
        timed = {name: dict(runs[name], times=[]) for name in group}
        time_interleaved(timed, args.rounds, grads, back_to_back=args.back_to_back)
        for name in group:
            runs[name].update(params=timed[name]['params'], state=timed[name]['state'])
            rows.setdefault(name, (timed[name], timed))

    device = jax.devices()[0]
    print(f'\n{n / 1e6:.1f}M params in {args.leaves} leaves, {args.rounds} interleaved rounds, {device.device_kind}')
    print(f'{fused.status()}')
    for i, group in enumerate(GROUPS, 1):
        print(f'group {i} (its own rounds; ratios to its own fp32 steps): ' + ', '.join(group[len(BASELINES) :]))
    print()
    b2b = args.back_to_back
    head = '| state | bytes | vs fp32 | step median (ms) | vs fp32 (adam_jax) | vs fp32 (adam_jax.fused) |'
    print(head + (f' back to back, {b2b} steps (ms) | vs fp32 (adam_jax) |' if b2b else ''))
    print('|---|---:|---:|---:|---:|---:|' + ('---:|---:|' if b2b else ''))
    base_bytes = runs[BASELINES[0]]['nbytes']
    for name in CONFIGS:
        run, group = rows[name]
        t = statistics.median(run['times'])
        base_t, fused_t = (statistics.median(group[b]['times']) for b in BASELINES)
        line = (
            f'| {name} | {runs[name]["nbytes"] / 2**20:.1f} MiB | {runs[name]["nbytes"] / base_bytes:.3f}x '
            f'| {t * 1e3:.2f} | {t / base_t:.2f}x | {t / fused_t:.2f}x |'
        )
        if b2b:
            burst = statistics.median(run['bursts'])
            line += f' {burst * 1e3:.3f} | {burst / statistics.median(group[BASELINES[0]]["bursts"]):.2f}x |'
        print(line)


if __name__ == '__main__':
    main()
