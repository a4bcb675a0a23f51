"""examples/distributed_train.py on 2 processes x 2 CPU devices equals 1 process x 4 devices and 1 device.

The two processes join through jax.distributed on 127.0.0.1 (a free port) with gloo
collectives and partition the AdamW state over all 4 devices (ZeRO-1); the
single-process runs keep it replicated. All four processes run at once, under one
deadline, and are killed in the end whatever happened.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import once_per_session

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 110
TOL = 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['JAX_PLATFORMS'] = 'cpu'
    if devices > 1:
        env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
    return env


@pytest.fixture(scope='session')
def results(tmp_path_factory):
    return once_per_session(tmp_path_factory, 'distributed_train_runs', lambda: _run_all(tmp_path_factory))


def _run_all(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp('distributed')
    script = [sys.executable, '-m', 'examples.distributed_train', '--steps', '20']
    coordinator = f'127.0.0.1:{_free_port()}'
    multi = ['--num-processes', '2', '--coordinator', coordinator, '--timeout', '60', '--zero1']
    runs = {
        'two_processes': (script + multi + ['--process-id', '0', '--out', str(tmp / 'two.json')], 2),
        'two_processes_rank1': (script + multi + ['--process-id', '1'], 2),
        'four_devices': (script + ['--out', str(tmp / 'four.json')], 4),
        'one_device': (script + ['--out', str(tmp / 'one.json')], 1),
    }
    procs = {}
    try:
        for name, (cmd, devices) in runs.items():
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        end = time.monotonic() + DEADLINE_S
        outputs = {}
        for name, proc in procs.items():
            try:
                outputs[name] = proc.communicate(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f'{name} did not finish within {DEADLINE_S} s')
            assert proc.returncode == 0, f'{name} failed:\n{outputs[name][1][-3000:]}'
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return {name: json.loads((tmp / f'{name}.json').read_text()) for name in ('two', 'four', 'one')}


def test_topologies(results):
    assert [(r['process_count'], r['device_count'], r['zero1']) for r in results.values()] == [
        (2, 4, True),
        (1, 4, False),
        (1, 1, False),
    ]
    assert all(r['compiles'] == 1 for r in results.values())


def test_training_makes_progress(results):
    losses = results['one']['losses']
    assert len(losses) == 20
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize('a,b', [('two', 'four'), ('two', 'one'), ('four', 'one')])
def test_runs_agree(results, a, b):
    pa, pb = results[a]['params'], results[b]['params']
    assert sorted(pa) == sorted(pb) and len(pa) == 4
    for key in pa:
        assert np.max(np.abs(np.asarray(pa[key]) - np.asarray(pb[key]))) <= TOL, key
    assert np.max(np.abs(np.asarray(results[a]['losses']) - np.asarray(results[b]['losses']))) <= TOL


def test_zero1_across_processes_saves_state_memory(results):
    # MLP 16 -> 32 -> 4: kernels (16, 32) and (32, 4), biases 32 and 4: 676 float32 params.
    assert results['two']['param_bytes_per_device'] == results['one']['param_bytes_per_device'] == 676 * 4
    # Replicated: mu and nu of every parameter, plus the int32 count.
    assert results['four']['state_bytes_per_device'] == 2 * 676 * 4 + 4
    # ZeRO-1 over 4 devices (min_size=64): the kernels split 4 ways (128 and 32 elements per device),
    # the biases (32 < 64 elements, and 4) replicated.
    assert results['two']['state_bytes_per_device'] == 2 * (128 + 32 + 32 + 4) * 4 + 4
