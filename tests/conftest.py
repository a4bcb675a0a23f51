"""Shared fixtures: float64 on demand, a mixed parameter tree, and results computed once per session."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable

# Test workers (pytest -n) share one GPU where there is one: by default each would take 75% of its memory at start-up,
# and the workers after the first would fail with RESOURCE_EXHAUSTED. Read by JAX when it first sets up the GPU.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture
def x64():
    """Run a test with jax_enable_x64, restoring the previous setting after it."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def on_cpu():
    """Run a test on the CPU device, where the fused kernel runs.

    In a process with a GPU or TPU the default device is the accelerator, on which the fused step is the chain
    itself; the kernel tests pin their arrays and steps to the CPU so that they test the kernel there too.
    """
    with jax.default_device(jax.devices('cpu')[0]):
        yield


def mixed_tree(dtype=jnp.float32, seed=0):
    """A tree of several shapes and nesting kinds, as a model's params would be."""
    rng = np.random.default_rng(seed)
    return {
        'dense': {
            'kernel': jnp.asarray(rng.normal(size=(7, 5)), dtype),
            'bias': jnp.asarray(rng.normal(size=5), dtype),
        },
        'conv': [jnp.asarray(rng.normal(size=(3, 3, 2, 4)), dtype)],
        'scale': jnp.asarray(rng.normal(), dtype),
    }


def noisy_quadratic_grad(params, step):
    """Gradient of sum(0.5 * p**2) plus a deterministic wobble that changes sign."""
    return jax.tree.map(lambda p: p + 0.5 * jnp.sin(3.0 * p + 0.1 * step), params)


def once_per_session(tmp_path_factory, name: str, produce: Callable[[], dict]) -> dict:
    """``produce()`` run once per pytest session, even across xdist workers (which share it via a locked file).

    For expensive subprocess runs that several tests assert on; the result must be JSON.
    """
    if 'PYTEST_XDIST_WORKER' not in os.environ:
        return produce()
    path = tmp_path_factory.getbasetemp().parent / f'{name}.json'
    with open(path.with_suffix('.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return json.loads(path.read_text())
        result = produce()
        path.write_text(json.dumps(result))
        return result


def pytest_terminal_summary(terminalreporter):
    """Says in the test log (also under -q) whether the fused kernel was built or the pure-XLA fallback ran."""
    from adam_jax import fused

    terminalreporter.write_line(f'adam_jax.fused: {fused.status()}')
