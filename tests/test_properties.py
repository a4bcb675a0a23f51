"""Properties of the update that follow from the paper's equations (hypothesis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

from adam_jax import bias_correct, scale_by_moments, scale_by_rms


def _direction(b1, b2, eps=0.0):
    return optax.chain(scale_by_moments(b1, b2), bias_correct(), scale_by_rms(eps))


def _directions(tx, grads):
    state = tx.init(grads[0])
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        d, state = step(g, state)
        out.append(np.asarray(d))
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(1e-3, 1e3),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.5, 0.9999),
)
def test_update_is_invariant_to_gradient_scale_when_eps_is_zero(seed, scale, b1, b2):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        grads = [jnp.asarray(rng.normal(size=6) + 0.1) for _ in range(8)]
        tx = _direction(b1, b2)
        plain = _directions(tx, grads)
        scaled = _directions(tx, [scale * g for g in grads])
        np.testing.assert_allclose(np.stack(scaled), np.stack(plain), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    zeros=st.integers(0, 30),
    g=st.floats(-1e3, 1e3).filter(lambda x: abs(x) > 1e-3),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.5, 0.9999),
)
def test_a_lone_gradient_after_zeros_moves_by_the_papers_ratio(zeros, g, b1, b2):
    """Zero gradients, then g at step t: |m_hat / sqrt(v_hat)| = (1-b1) sqrt(1-b2^t) / ((1-b1^t) sqrt(1-b2))."""
    with jax.enable_x64(True):
        grads = [jnp.zeros(1)] * zeros + [jnp.asarray([g])]
        last = _directions(_direction(b1, b2), grads)[-1]
        t = zeros + 1
        expected = (1 - b1) * np.sqrt(1 - b2**t) / ((1 - b1**t) * np.sqrt(1 - b2))
        np.testing.assert_allclose(np.abs(last), [expected], rtol=1e-10)
        assert np.sign(last[0]) == np.sign(g)
