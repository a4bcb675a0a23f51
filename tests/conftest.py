"""Shared fixtures: float64 on demand, and a mixed parameter tree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture
def x64():
    """Run a test with jax_enable_x64, restoring the previous setting after it."""
    with jax.enable_x64(True):
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


def pytest_terminal_summary(terminalreporter):
    """Says in the test log (also under -q) whether the fused kernel was built or the pure-XLA fallback ran."""
    from adam_jax import fused

    terminalreporter.write_line(f'adam_jax.fused: {fused.status()}')
