"""The benchmark harness runs end to end in its smoke mode and writes consistent JSON and markdown.

Timings are not asserted (they are the harness's output, not a property of the code); the test checks
that every configuration was measured and that the derived columns follow from the measured ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from adam_jax import fused
from adam_jax.fused import _library
from benchmarks import run

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_module(*args: str, timeout: int = 240, cpu: bool = False) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root, output captured (``cpu``: with JAX_PLATFORMS=cpu)."""
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'} if cpu else None
    return subprocess.run(
        [sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_smoke_run_writes_table_and_json(tmp_path):
    done = run_module('benchmarks.run', '--smoke', '--no-torch', '--back-to-back', '3', '--out', str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / 'results-smoke.json').read_text())
    rows = {r['impl']: r for r in result['rows']}
    # a worker held to one CPU, where JAX runs on the CPU and there are two or more
    one_core = {run.ONE_CORE} if run.can_hold_to_one_core() and jax.devices()[0].platform == 'cpu' else set()
    assert run.ONE_CORE not in run.implementations(10, 'smoke', False, jax_on_cpu=False)
    assert set(rows) == {'adam_jax', 'optax.adam'} | one_core
    assert rows['adam_jax']['cpus'] == run.usable_cpus() and all(rows[k]['cpus'] == 1 for k in one_core)
    for r in rows.values():
        assert (r['params'], r['leaves'], r['samples']) == (2**18, 10, 4)
        assert r['step_ms'] > 0 and r['first_call_s'] > 0 and r['peak_rss_mib'] > 50
        assert abs(r['gb_s'] - 28 * r['params'] / (r['step_ms'] * 1e6)) < 1e-9 * r['gb_s']
        assert abs(r['triad_share'] - r['gb_s'] / r['triad_gb_s']) < 1e-12
        assert r['vs_torch'] is None and r['b2b_vs_torch'] is None
        assert r['b2b_ms'] > 0
    assert rows['optax.adam']['vs_optax'] == 1.0 and rows['optax.adam']['b2b_vs_optax'] == 1.0
    # (ratios of seconds against ratios of milliseconds: equal up to the rounding of the 1e3 factors)
    assert rows['adam_jax']['vs_optax'] == pytest.approx(rows['adam_jax']['step_ms'] / rows['optax.adam']['step_ms'])
    assert rows['adam_jax']['b2b_vs_optax'] == pytest.approx(rows['adam_jax']['b2b_ms'] / rows['optax.adam']['b2b_ms'])
    assert result['meta']['back_to_back'] == 3
    assert rows['adam_jax']['note'] == fused.status()  # the kernel, or the fallback and why
    table = (tmp_path / 'results-smoke.md').read_text()
    assert '| 0.25M | 10 | adam_jax |' in table and '| 0.25M | 10 | optax.adam |' in table
    assert ('| 0.25M | 10 | adam_jax 1 core |' in table) == bool(one_core)
    assert (f'\n\n{run.ONE_CORE}: the adam_jax step in a worker held to one CPU.' in table) == bool(one_core)
    assert 'python -m benchmarks.run --smoke --back-to-back 3' in table
    assert f'| {rows["adam_jax"]["b2b_ms"]:.3f} | {rows["adam_jax"]["b2b_vs_optax"]:.2f}x |  |' in table
    platform = jax.devices()[0].platform  # the workers run where this process's JAX runs
    assert f'JAX on {platform}' in table and rows['adam_jax']['device'].startswith(platform)


def test_fusions_report_names_what_each_step_compiles_to():
    families = ['--nadam', '--adamax', '--amsgrad', '--adabelief', '--radam']
    done = run_module('benchmarks.fusions', '--params', '65536', '--steps', '3', '--torch', *families, cpu=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    sections = out.split('\n\n')
    fused_section = next(s for s in sections if s.startswith('adam_jax.fused.adam(...).step:'))
    optax_section = next(s for s in sections if s.startswith('optax.adam:'))
    # On the CPU the fused step is one call of the kernel where it is built, and optax's step has no custom call.
    assert ('custom-call adam_jax_fused_adam' in fused_section) == _library.available()
    assert 'custom-call' not in optax_section and 'fusion, kind=kLoop' in optax_section
    for name in ('optax.adam', 'adam_jax.adam', 'adam_jax.fused.adam(...).step', 'torch.optim.Adam(fused=True)'):
        assert f'{name}: median ' in out
    for family in ('nadam', 'adamax', 'amsgrad', 'adabelief', 'radam'):  # every fused family member, one call each
        section = next(s for s in sections if s.startswith(f'adam_jax.fused.{family}(...).step:'))
        assert section.count('custom-call adam_jax_fused_adam') == _library.available(), section
    assert 'torch.optim.Adam(fused=True, amsgrad=True): median ' in out and 'at 36 B/param' in out


def test_shape_sweep_finds_no_differing_element():
    # The wide bitwise sweep (169 leaf shapes) for one optimizer, one step each: RAdam with the look-ahead (its first
    # step is on the momentum side of the switch; the tests above cross it).
    done = run_module('benchmarks.shape_sweep', '--optimizers', 'radam-nesterov', '--steps', '1', timeout=400, cpu=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'radam-nesterov: 0 differing elements' in done.stdout, done.stdout[-2000:]


def test_lean_state_prints_every_state_kind_with_bursts():
    done = run_module('benchmarks.lean_state', '--params', '131072', '--rounds', '2', '--back-to-back', '2')
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split('|')[1:-1] for line in done.stdout.splitlines() if line.startswith('| ') and 'MiB' in line]
    by_name = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}
    assert len(by_name) == 9 and all(len(r) == 7 for r in by_name.values())
    assert by_name['fp32 (adam_jax)'][1] == '1.000x' and by_name['fp32 (adam_jax)'][6] == '1.00x'
    assert by_name['bf16 (adam_jax)'][1] == '0.500x'
    assert by_name['8-bit, update + apply_updates (adam_jax.fused)'][1] == by_name['8-bit (adam_jax.fused)'][1]
    assert all(float(r[5]) > 0 for r in by_name.values())  # the burst's ms per step
    # The compared steps are timed apart from the slow composed 8-bit chains (their own group, own fp32 baselines).
    groups = [line for line in done.stdout.splitlines() if line.startswith('group ')]
    assert len(groups) == 2 and '8-bit (adam_jax.fused)' in groups[0] and '8-bit (adam_jax),' in groups[1]


def test_first_call_splits_trace_lower_and_compile_per_implementation():
    from benchmarks import first_call

    result = first_call.main(['--leaves', '4', '--params', '8192', '--rounds', '1'])
    medians = result['medians']
    assert list(medians) == list(first_call.IMPLEMENTATIONS)
    for name, m in medians.items():
        assert all(m[part] > 0 for part in ('trace', 'lower', 'compile')), name
        assert m['total'] == pytest.approx(m['trace'] + m['lower'] + m['compile'], rel=1e-9)
    assert len(result['rounds'][first_call.OPTAX]) == 1


def test_train_step_times_every_setup_of_its_three_modes(capsys):
    from benchmarks import train_step

    modes = (
        ([], ['optax tree', 'adam_jax tree', 'adam_jax flat']),
        (['--eight-bit'], ['fp32 chain', '8-bit chain', '8-bit update', '8-bit step']),
        (['--nnx'], ['nnx.Optimizer optax.adamw', 'optax.adamw tree', 'adam_jax tree', 'adam_jax flat']),
    )
    for mode, names in modes:
        medians = train_step.main([*mode, '--params', '32768', '--leaves', '4', '--rounds', '2', '--steps', '1'])
        assert list(medians) == names
        assert all(t > 0 for t in medians.values())
        out = capsys.readouterr().out
        assert f'| {names[0]} |' in out and f'| {names[-1]} |' in out
    assert 'NNX MLP of 2 layers' in out
    with pytest.raises(SystemExit):
        train_step.main(['--nnx', '--eight-bit'])
