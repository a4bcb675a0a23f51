"""The kernels' narrower x86-64 loops, run on a wider CPU through ADAM_JAX_FUSED_ISA.

The kernels choose their loops at run time: AVX-512 where the CPU has it, else AVX2 + FMA. A machine runs only
its widest, so on an AVX-512 CI machine the AVX2 loops would go untested; capping the choice at AVX2 in a
subprocess runs the kernels' bitwise tests on them too.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from adam_jax.fused import _library

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The tests that compare kernel steps with the jitted chain bit for bit (and the non-finite cases).
BITWISE = 'bitwise or equals_the_chain or every_code or non_finite'


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    return env


@pytest.mark.skipif(not _library.available(), reason=_library.status())
@pytest.mark.skipif('avx2' not in _library.status() and 'avx512' not in _library.status(), reason='not x86-64 AVX2')
def test_the_avx2_loops_are_bitwise_the_chain_when_the_cpu_has_wider_ones():
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', BITWISE]
    files = [str(ROOT / 'tests' / name) for name in ('test_fused.py', 'test_fused_8bit.py', 'test_fused_lion.py')]
    result = subprocess.run(
        command + files, env=_env(ADAM_JAX_FUSED_ISA='avx2'), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert '(avx2+fma; 8-bit: avx2+fma; ADAM_JAX_FUSED_ISA=avx2)' in out, out[-2000:]
    passed = re.search(r'(\d+) passed', out)
    assert passed and int(passed.group(1)) >= 15, out[-2000:]
    assert 'skipped' not in out.splitlines()[-1], out[-2000:]


def test_an_unknown_isa_cap_is_refused_by_name():
    result = subprocess.run(
        [sys.executable, '-c', 'from adam_jax import fused; fused.status()'],
        env=_env(ADAM_JAX_FUSED_ISA='avx1024'),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ValueError: ADAM_JAX_FUSED_ISA='avx1024': expected one of avx512, avx2" in result.stderr
