"""What XLA compiles one Adam step to on the current device, and how long it takes.

Run: ``python -m benchmarks.fusions [--params 16777216] [--steps 50] [--torch] [--nadam] [--adamax] [--amsgrad]
[--adabelief] [--radam] [--lion]``.

For ``optax.adam``, ``adam_jax.adam`` (update + ``optax.apply_updates``) and ``adam_jax.fused.adam(...).step``
on one flat float32 leaf: the fusions and custom calls of the compiled entry computation (on a GPU XLA fuses
the whole step into one multi-output fusion; on a CPU it makes three loops, or one call of the fused kernel),
then the median and fastest of ``--steps`` interleaved, donated steps (in an order shuffled every round).

``--torch`` adds ``torch.optim.Adam(fused=True)`` on the CPU to the same rounds, in the same process: the
steps then share one process's memory and machine state, which ``benchmarks.run`` (a process per
implementation) cannot give. torch keeps its default OpenMP settings: its threads spin for a while after
each of its steps, which the pause after every step (``benchmarks.interleave.PAUSE_S``) lets run out.

``--nadam`` adds ``optax.nadam``, ``adam_jax.nadam`` and ``adam_jax.fused.nadam(...).step`` to the same rounds
(NAdam's look-ahead in the fused kernel's one pass; torch has no fused NAdam); ``--adamax`` the same three for
AdaMax (its infinity norm in the same pass); ``--amsgrad`` the same for AMSGrad (its running maximum is a fourth
array: 36 B/param), and with ``--torch`` torch's fused ``Adam(amsgrad=True)`` too; ``--adabelief`` and ``--radam`` the
same three for AdaBelief and RAdam; ``--lion`` the same three for Lion (one moment: 20 B/param in one pass; XLA's
two loops per leaf also copy the momentum first).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import optax

import adam_jax
from adam_jax import fused
from benchmarks.interleave import time_interleaved
from benchmarks.run import torch_setup


def _update_step(opt):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _fused_step(opt):
    def step(params, state, grads):
        return opt.step(params, grads, state)

    return step


def _torch_run(n: int, amsgrad: bool = False) -> dict:
    """torch's fused CPU Adam on n params in one tensor, as a run of time_interleaved (it ignores params/state)."""
    torch_step, _, _, _ = torch_setup(n, 1, amsgrad)  # on the CPU: a step returns when it is done

    def step(params, state, grads):
        torch_step()
        return params, state

    return dict(step=step, params=None, state=None, times=[])


def _summary(hlo_line: str) -> str:
    """'%name = <result shape> fusion, kind=...' or '... custom-call <target>' from one line of HLO text."""
    name, rest = hlo_line.strip().split(' = ', 1)
    shape = rest.split(' fusion(')[0].split(' custom-call(')[0]
    if ' custom-call(' in rest:
        target = rest.split('custom_call_target="', 1)[1].split('"', 1)[0] if 'custom_call_target="' in rest else '?'
        return f'{name} = {shape} custom-call {target}'
    kind = rest.split('kind=', 1)[1].split(',', 1)[0] if 'kind=' in rest else '?'
    return f'{name} = {shape} fusion, kind={kind}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--params', type=int, default=2**24)
    parser.add_argument('--steps', type=int, default=50)
    parser.add_argument('--torch', action='store_true', help="also time torch's fused CPU Adam in this process")
    parser.add_argument('--nadam', action='store_true', help='also time NAdam: optax, the chain and the fused step')
    parser.add_argument('--adamax', action='store_true', help='also time AdaMax: optax, the chain and the fused step')
    parser.add_argument(
        '--amsgrad', action='store_true', help="also time AMSGrad: optax, the chain, the fused step (and torch's)"
    )
    parser.add_argument(
        '--adabelief', action='store_true', help='also time AdaBelief: optax, the chain, the fused step'
    )
    parser.add_argument('--radam', action='store_true', help='also time RAdam: optax, the chain, the fused step')
    parser.add_argument('--lion', action='store_true', help='also time Lion: optax, the chain, the fused step')
    args = parser.parse_args()

    grads = jax.random.normal(jax.random.key(0), (args.params,), jnp.float32)
    # Each family: optax's optimizer, the composed chain (update + apply_updates) and the fused step, in one round.
    families = {
        'adam': True,
        'nadam': args.nadam,
        'adamax': args.adamax,
        'amsgrad': args.amsgrad,
        'adabelief': args.adabelief,
        'radam': args.radam,
        'lion': args.lion,
    }
    optimizers = {}
    for family in (name for name, wanted in families.items() if wanted):
        optimizers[f'optax.{family}'] = (getattr(optax, family)(1e-3), _update_step)
        optimizers[f'adam_jax.{family}'] = (getattr(adam_jax, family)(1e-3), _update_step)
        optimizers[f'adam_jax.fused.{family}(...).step'] = (getattr(fused, family)(1e-3), _fused_step)
    print(f'{args.params} params in one leaf on {jax.devices()[0].device_kind}')
    runs = {}
    for name, (opt, make_step) in optimizers.items():
        params = jnp.zeros((args.params,), jnp.float32)
        state = opt.init(params)
        compiled = jax.jit(make_step(opt), donate_argnums=(0, 1)).lower(params, state, grads).compile()
        entry = compiled.as_text().split('ENTRY')[1]
        ops = [_summary(line) for line in entry.splitlines() if ' fusion(' in line or 'custom-call(' in line]
        print(f'\n{name}: {len(ops)} fusions and custom calls')
        for op in ops:
            print('   ', op)
        runs[name] = dict(step=compiled, params=params, state=state, times=[])
    if args.torch:
        runs['torch.optim.Adam(fused=True)'] = _torch_run(args.params)
        if args.amsgrad:
            runs['torch.optim.Adam(fused=True, amsgrad=True)'] = _torch_run(args.params, amsgrad=True)
    time_interleaved(runs, args.steps, grads)
    print()
    for name, run in runs.items():
        median = statistics.median(run['times'])
        # AMSGrad reads and writes its running maximum too; Lion has one moment
        per_param = 36 if 'amsgrad' in name else 20 if 'lion' in name else 28
        print(
            f'{name}: median {1e3 * median:.3f} ms, fastest {1e3 * min(run["times"]):.3f} ms, '
            f'{per_param * args.params / median / 1e9:.0f} GB/s at {per_param} B/param'
        )


if __name__ == '__main__':
    main()
