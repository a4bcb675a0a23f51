"""Adam step time: adam_jax against optax.adam and torch.optim.Adam(fused=True), interleaved.

Run from the repository root::

    python -m benchmarks.run            # 1M/4M/16M/64M params in 1/100/1000 leaves (6.5 min on an idle 2-core box)
    python -m benchmarks.run --quick    # 16M params in 1 and 1000 leaves (the acceptance cases, < 1 min)
    python -m benchmarks.run --quick --torch-device cuda --back-to-back 20   # on a GPU machine: torch's fused
                                        # Adam on CUDA too, and bursts of 20 steps waited for once
    python -m benchmarks.run --smoke    # 256K params in 10 leaves, 2 rounds (what the test runs)

Every (params, leaves, implementation) runs in its own worker process (so its peak RSS is its own);
the workers of one configuration stay alive together and take turns, a few steps each, for several
rounds, so machine noise hits them alike. Reported per implementation: the median step time, its
ratio to optax.adam's and torch's in the same configuration, the fastest step (what an idle machine
would give), the bandwidth at 28 B/param (read
params, grads, m, v; write params, m, v), that bandwidth as a share of a donated in-place JAX triad
(b = b + s*c, 12 B/element) measured in the same rounds, the first-call time (jit compile; for torch
its first step, which allocates its state) and the worker's peak RSS (host memory, also on a GPU).
With ``--back-to-back K`` every turn also issues K steps without waiting and then waits once: the time per
step of that burst is what a training loop sees where dispatch is asynchronous (a GPU), while a step that is
waited for on its own also times the host's round trip to the device (about 0.1-0.3 ms on a GPU).

Implementations:
  adam_jax        adam_jax.fused.adam(...).step on the params kept as one flat float32 vector (the
                  recipe of adam_jax.make_train_step(unravel=...)): one kernel call, in place.
  adam_jax 1 core the adam_jax step in a worker held to one CPU (quick and smoke modes, where JAX runs on
                  the CPU and the process may run on two or more CPUs): where it takes about as long as the
                  adam_jax row, the other cores added no memory bandwidth in those rounds (on the 2-vCPU machines
                  of this project that happens for minutes at a time), and the adam_jax row is at a one-core floor.
  adam_jax tree   the same step on the params as a tree of `leaves` arrays (kernel calls of up to 32
                  leaves; every leaf is an argument of the jitted step).
  adam_jax chain  adam_jax.adam, the composed chain, in pure XLA (the path without the kernel).
  optax.adam      update + apply_updates in one jitted step, params and state donated.
  torch fused     torch.optim.Adam(params, fused=True) on `leaves` tensors, when torch is installed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

BYTES_PER_PARAM = 28
LR = 1e-3
OPTAX = 'optax.adam'
TORCH = 'torch fused'
TRIAD = 'triad'
ONE_CORE = 'adam_jax 1 core'
# Idle time after every worker's turn: the threads of the runtime that just ran (XLA's intra-op pool, torch's OpenMP
# team) spin for a while after a step before they sleep, and would take a core from the next worker's first step.
# (benchmarks.interleave.PAUSE_S is the same pause between steps in one process; that module imports jax, which
# the parent and the torch worker here do not.)
TURN_PAUSE_S = 0.005
TORCH_DEVICE_ENV = 'ADAM_JAX_BENCH_TORCH_DEVICE'  # the parent's --torch-device, passed on to the torch worker
MODES = {
    'full': dict(sizes=(2**20, 2**22, 2**24, 2**26), leaves=(1, 100, 1000), rounds=5, steps=3),
    'quick': dict(sizes=(2**24,), leaves=(1, 1000), rounds=32, steps=2, one_core=True),
    'smoke': dict(sizes=(2**18,), leaves=(10,), rounds=2, steps=2, one_core=True),
}


def leaf_sizes(n: int, leaves: int) -> list[int]:
    base = n // leaves
    return [base + (n - base * leaves if i == 0 else 0) for i in range(leaves)]


# ----------------------------------------------------------------------------------------------- worker


def _jax_setup(name: str, n: int, leaves: int):
    import jax
    import jax.numpy as jnp
    import optax

    import adam_jax
    from adam_jax import fused

    rng = jax.random.key(0)
    sizes = [n] if name in ('adam_jax', TRIAD) else leaf_sizes(n, leaves)
    keys = jax.random.split(rng, len(sizes))
    params = [jnp.zeros(s, jnp.float32) for s in sizes]
    grads = [jax.random.normal(k, (s,), jnp.float32) for k, s in zip(keys, sizes)]
    if name == TRIAD:

        def triad(b, c):
            return b + 0.5 * c

        fn, args = jax.jit(triad, donate_argnums=0), (params[0], grads[0])
    else:
        if name in ('adam_jax', 'adam_jax tree'):
            opt = fused.adam(LR)

            def step(p, g, s):
                return opt.step(p, g, s)

        else:
            opt = adam_jax.adam(LR) if name == 'adam_jax chain' else optax.adam(LR)

            def step(p, g, s):
                updates, s = opt.update(g, s, p)
                return optax.apply_updates(p, updates), s

        params = params[0] if name == 'adam_jax' else params
        grads = grads[0] if name == 'adam_jax' else grads
        fn, args = jax.jit(step, donate_argnums=(0, 2)), (params, grads, opt.init(params))
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    first = time.perf_counter() - start
    state = list(args)

    def step() -> None:
        if name == TRIAD:
            state[0] = compiled(state[0], state[1])
        else:
            state[0], state[2] = compiled(*state)

    def sync() -> None:
        jax.block_until_ready(state[0])

    if name == TRIAD:
        device = jax.devices()[0]  # where the JAX rows ran
        note = device.platform if device.device_kind == device.platform else f'{device.platform}: {device.device_kind}'
    else:
        note = fused.status() if name.startswith('adam_jax') and name != 'adam_jax chain' else ''
    return step, sync, first, note


def torch_setup(n: int, leaves: int, amsgrad: bool = False):
    """torch.optim.Adam(fused=True) on n params in ``leaves`` tensors (on the device named by TORCH_DEVICE_ENV, CPU
    by default), after its first step: (step, sync, first-call seconds, a note naming torch and where it ran).
    ``amsgrad``: torch's AMSGrad, in the same fused kernel."""
    import torch

    device = os.environ.get(TORCH_DEVICE_ENV, 'cpu')
    gen = torch.Generator().manual_seed(0)
    params = [torch.zeros(s, requires_grad=True, device=device) for s in leaf_sizes(n, leaves)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    opt = torch.optim.Adam(params, lr=LR, fused=True, amsgrad=amsgrad)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    start = time.perf_counter()
    opt.step()  # allocates the state: torch's first-call cost
    sync()
    first = time.perf_counter() - start
    where = torch.cuda.get_device_name(device) if device.startswith('cuda') else f'{torch.get_num_threads()} threads'
    return opt.step, sync, first, f'torch {torch.__version__}, {where}'


def worker(name: str, n: int, leaves: int) -> None:
    """Answers 'run K' with K step times (each step waited for), 'burst K' with the time per step of K steps
    issued back to back and waited for once, and 'quit' with the peak RSS, one JSON line each."""
    if name == ONE_CORE:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before JAX starts its threads
    step, sync, first, note = (
        torch_setup(n, leaves) if name == TORCH else _jax_setup('adam_jax' if name == ONE_CORE else name, n, leaves)
    )

    def run() -> float:
        t = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t

    def burst(k: int) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(k):
            step()
        sync()
        return (time.perf_counter() - t) / k

    for _ in range(2):
        run()
    print(json.dumps({'first_call_s': first, 'note': note, 'cpus': usable_cpus()}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == 'run':
            print(json.dumps([run() for _ in range(int(command[1]))]), flush=True)
        elif command[0] == 'burst':
            print(json.dumps(burst(int(command[1]))), flush=True)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            print(json.dumps({'peak_rss_mib': peak}), flush=True)
            return


# ----------------------------------------------------------------------------------------------- parent


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class Worker:
    def __init__(self, name: str, n: int, leaves: int, torch_device: str = 'cpu'):
        root = pathlib.Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get('PYTHONPATH', '')]))
        env[TORCH_DEVICE_ENV] = torch_device
        # On a GPU every JAX worker would otherwise take most of its memory up front, and they all live at once.
        env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), '--worker', name, str(n), str(leaves)]
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()
        self.times: list[float] = []
        self.bursts: list[float] = []  # seconds per step of back-to-back bursts

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f'benchmark worker {self.name!r} exited early (exit code {self.process.wait()})')
        return json.loads(line)

    def run(self, steps: int) -> None:
        self.process.stdin.write(f'run {steps}\n')
        self.process.stdin.flush()
        self.times += self._read()

    def burst(self, steps: int) -> None:
        self.process.stdin.write(f'burst {steps}\n')
        self.process.stdin.flush()
        self.bursts.append(self._read())

    def finish(self) -> float:
        self.process.stdin.write('quit\n')
        self.process.stdin.flush()
        peak = self._read()['peak_rss_mib']
        self.process.wait()
        return peak


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def can_hold_to_one_core() -> bool:
    """Whether a worker can be held to one CPU, and that is a different machine from the one it has."""
    return hasattr(os, 'sched_setaffinity') and usable_cpus() > 1


def implementations(leaves: int, mode: str, with_torch: bool, jax_on_cpu: bool) -> list[str]:
    names = ['adam_jax', OPTAX]
    if MODES[mode].get('one_core') and jax_on_cpu and can_hold_to_one_core():  # (a GPU step is not the host's)
        names.append(ONE_CORE)
    if mode == 'full':
        names += ['adam_jax chain'] + (['adam_jax tree'] if leaves > 1 else [])
    return names + ([TORCH] if with_torch else [])


def measure(
    n: int, leaves: int, mode: str, with_torch: bool, torch_device: str = 'cpu', back_to_back: int = 0
) -> list[dict]:
    spec = MODES[mode]
    triad = Worker(TRIAD, n, leaves, torch_device)  # first: it says where JAX runs
    on_cpu = triad.ready['note'].startswith('cpu')
    names = implementations(leaves, mode, with_torch, on_cpu)
    workers = [triad, *(Worker(name, n, leaves, torch_device) for name in names)]
    for r in range(spec['rounds']):
        for w in workers[r % len(workers) :] + workers[: r % len(workers)]:
            w.run(spec['steps'])
            if back_to_back:
                w.burst(back_to_back)
            time.sleep(TURN_PAUSE_S)
    peaks = {w.name: w.finish() for w in workers}
    medians = {w.name: statistics.median(w.times) for w in workers}
    bursts = {w.name: statistics.median(w.bursts) for w in workers} if back_to_back else {}
    firsts = {w.name: w.ready['first_call_s'] for w in workers}
    triad_gbs = 12 * n / medians[TRIAD] / 1e9
    rows = []
    for w in workers[1:]:
        t = medians[w.name]
        gbs = BYTES_PER_PARAM * n / t / 1e9
        rows.append(
            dict(
                params=n,
                leaves=leaves,
                impl=w.name,
                step_ms=1e3 * t,
                best_ms=1e3 * min(w.times),
                vs_optax=t / medians[OPTAX],
                vs_torch=t / medians[TORCH] if TORCH in medians else None,
                gb_s=gbs,
                triad_share=gbs / triad_gbs,
                triad_gb_s=triad_gbs,
                first_call_s=firsts[w.name],
                first_call_vs_optax=firsts[w.name] / firsts[OPTAX],
                peak_rss_mib=peaks[w.name],
                cpus=w.ready['cpus'],  # the CPUs the worker could run on
                samples=len(w.times),
                b2b_ms=1e3 * bursts[w.name] if bursts else None,
                b2b_vs_optax=bursts[w.name] / bursts[OPTAX] if bursts else None,
                b2b_vs_torch=bursts[w.name] / bursts[TORCH] if TORCH in bursts else None,
                note=w.ready['note'],
                device=workers[0].ready['note'],
            )
        )
    return rows


def _ratio(x: float | None) -> str:
    return '' if x is None else f'{x:.2f}x'


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        ('' if meta['complete'] else 'Partial run (interrupted). ')
        + f'Adam step, float32, median of {meta["samples"]} interleaved steps per row ({meta["mode"]} mode, '
        f'{meta["date"]}, {meta["cpu"]}, {meta["cores"]} cores, JAX on {meta["device"]}'
        + (f', torch on {meta["torch_device"]}' if meta['torch'] else '')
        + f'). Command: `{meta["command"]}`.',
        '',
        '| params | leaves | implementation | step ms | vs optax | vs torch | best ms | GB/s (28 B/param) '
        '| % of triad | first call s | vs optax | peak RSS MiB |',
        '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    b2b = meta.get('back_to_back', 0)
    if b2b:
        lines[0] += (
            f' "back to back": the time per step of {b2b} steps issued without waiting, then waited for once (how a'
            ' training loop runs them: dispatch overlaps the device), median of one burst per round.'
        )
        lines[2] += ' back to back ms | vs optax | vs torch |'
        lines[3] += '---:|---:|---:|'
    for r in rows:
        lines.append(
            f'| {r["params"] / 2**20:g}M | {r["leaves"]} | {r["impl"]} | {r["step_ms"]:.2f} | {_ratio(r["vs_optax"])} '
            f'| {_ratio(r["vs_torch"])} | {r["best_ms"]:.2f} | {r["gb_s"]:.1f} | {100 * r["triad_share"]:.0f}% '
            f'| {r["first_call_s"]:.2f} '
            f'| {_ratio(r["first_call_vs_optax"])} | {r["peak_rss_mib"]:.0f} |'
            + (
                f' {r["b2b_ms"]:.3f} | {_ratio(r["b2b_vs_optax"])} | {_ratio(r["b2b_vs_torch"])} |'
                if b2b and r.get('b2b_ms') is not None
                else ''
            )
        )
    on_cpu = meta['device'].startswith('cpu')
    kernel = 'Kernel' if on_cpu else 'CPU kernel (unused here: on this device the adam_jax rows run the composed chain)'
    lines += ['', f'{kernel}: {meta["kernel"]}.', '']
    if any(r['impl'] == ONE_CORE for r in rows):
        lines[-1:-1] = [
            '',
            f'{ONE_CORE}: the adam_jax step in a worker held to one CPU. Where it takes about as long as the adam_jax'
            ' row, the other cores added no memory bandwidth in those rounds, and the adam_jax row ran at a one-core'
            ' floor.',
        ]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_const', const='quick', dest='mode', default='full')
    parser.add_argument('--smoke', action='store_const', const='smoke', dest='mode')
    parser.add_argument('--no-torch', action='store_true', help='leave torch out even if it is installed')
    parser.add_argument(
        '--torch-device',
        default='cpu',
        choices=('cpu', 'cuda'),
        help="where torch's fused Adam runs: cpu (default) or cuda, beside JAX's GPU",
    )
    parser.add_argument(
        '--back-to-back',
        type=int,
        default=0,
        metavar='K',
        help='also time bursts of K steps issued back to back and waited for once (for GPUs: per-step waits '
        'there mostly time the host round trip)',
    )
    parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    parser.add_argument('--worker', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return {}
    if args.back_to_back < 0:
        parser.error(f'--back-to-back must be >= 0 (0: off), got {args.back_to_back}')
    with_torch = torch_available() and not args.no_torch
    spec = MODES[args.mode]
    stem = 'results' if args.mode == 'full' else f'results-{args.mode}'
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def write(complete: bool) -> tuple[dict, str]:
        """Rewritten after every configuration, so an interrupted run keeps what it measured."""
        meta = dict(
            mode=args.mode,
            complete=complete,
            date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            cpu=platform.processor() or platform.machine(),
            cores=os.cpu_count(),
            samples=spec['rounds'] * spec['steps'],
            command='python -m benchmarks.run'
            + ('' if args.mode == 'full' else f' --{args.mode}')
            + ('' if args.torch_device == 'cpu' or not with_torch else f' --torch-device {args.torch_device}')
            + (f' --back-to-back {args.back_to_back}' if args.back_to_back else ''),
            back_to_back=args.back_to_back,
            device=rows[0]['device'] if rows else 'unknown',
            torch_device=args.torch_device,
            kernel=next((r['note'] for r in rows if r['impl'] == 'adam_jax'), ''),
            torch=with_torch,
        )
        (args.out / f'{stem}.json').write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + '\n')
        table = markdown(rows, meta)
        (args.out / f'{stem}.md').write_text(table)
        return meta, table

    for n in spec['sizes']:
        for leaves in spec['leaves']:
            new = measure(n, leaves, args.mode, with_torch, args.torch_device, args.back_to_back)
            rows += new
            write(complete=False)
            for r in new:
                print(
                    f'{n / 2**20:5g}M {leaves:5d} {r["impl"]:15s} {r["step_ms"]:8.2f} ms  '
                    f'{_ratio(r["vs_optax"])} optax  {_ratio(r["vs_torch"])} torch  '
                    f'first call {r["first_call_s"]:.2f} s'
                    + (f'  back to back {r["b2b_ms"]:.3f} ms' if r['b2b_ms'] is not None else ''),
                    flush=True,
                )
    meta, table = write(complete=True)
    print(table)
    return dict(meta=meta, rows=rows)


if __name__ == '__main__':
    main()
