"""Hypothesis: finiteness and state invariance over random trees, dtypes and hyperparameters; the step-size bound.

Kingma & Ba (2014), Section 2.1, bound the effective step by alpha (1-b1)/sqrt(1-b2). That does not hold
for every gradient sequence. By Cauchy-Schwarz, with r = b1^2/b2 < 1,

    |m_hat_t / sqrt(v_hat_t)| <= (1-b1) sqrt((1-r^t)/(1-r)) sqrt(1-b2^t) / ((1-b1^t) sqrt(1-b2))
                              <= (1-b1) / sqrt((1-b2)(1-b1^2/b2)),

with equality in the first line for gradients growing by b2/b1 per step. With the default betas the
uniform bound is 7.270, the paper's 3.162.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import adam_jax
from adam_jax import bias_correct, scale_by_moments, scale_by_rms

DTYPES = ('float32', 'bfloat16', 'float16')
SHAPES = ((), (3,), (2, 3))


def cauchy_schwarz_bound(b1, b2, t=None):
    """The bound on |m_hat_t / sqrt(v_hat_t)|; at step t if given, else for all t."""
    r = b1 * b1 / b2
    if t is None:
        return (1 - b1) / np.sqrt((1 - b2) * (1 - r))
    return (1 - b1) * np.sqrt((1 - r**t) / (1 - r)) * np.sqrt(1 - b2**t) / ((1 - b1**t) * np.sqrt(1 - b2))


@st.composite
def trees(draw):
    """A dict tree of 1-4 leaves of random shapes and low/full precision float dtypes."""
    n = draw(st.integers(1, 4))
    return {f'leaf{i}': (draw(st.sampled_from(SHAPES)), draw(st.sampled_from(DTYPES))) for i in range(n)}


def _random_tree(spec, rng, scale):
    return {k: jnp.asarray(rng.normal(size=shape) * scale, dtype) for k, (shape, dtype) in spec.items()}


@settings(max_examples=10, deadline=None)
@given(
    spec=trees(),
    name=st.sampled_from(('adam', 'adamw', 'adamax')),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.5, 0.9999),
    eps=st.floats(1e-10, 1e-3),
    lr=st.floats(1e-5, 1.0),
    log_scales=st.lists(st.floats(-6.0, 4.0), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_update_is_finite_and_state_shapes_and_dtypes_are_invariant(spec, name, b1, b2, eps, lr, log_scales, seed):
    """For b1 < b2 (which gives b1^2 < b2) the direction is bounded, so finite inputs give finite updates."""
    assume(b1 <= 0.98 * b2)
    rng = np.random.default_rng(seed)
    tx = getattr(adam_jax, name)(lr, b1=b1, b2=b2, eps=eps)
    params = _random_tree(spec, rng, 1.0)
    state = tx.init(params)
    layout = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for i, log_scale in enumerate(log_scales):
        grads = _random_tree(spec, rng, 10.0**log_scale)
        if i == 1:  # a zero gradient too: m/(sqrt(v)+eps) must not become 0/0
            grads = jax.tree.map(jnp.zeros_like, grads)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == layout
        for u, p, (shape, dtype) in zip(jax.tree.leaves(updates), jax.tree.leaves(params), spec.values()):
            assert u.shape == p.shape == shape and u.dtype == p.dtype == jnp.dtype(dtype)
            assert bool(jnp.all(jnp.isfinite(u))) and bool(jnp.all(jnp.isfinite(p)))
        for leaf in jax.tree.leaves(state):
            assert bool(jnp.all(jnp.isfinite(leaf)))


@jax.jit
def _directions(b1, b2, grads):
    """d_t = m_hat_t / sqrt(v_hat_t) (eps = 0) for a [T, n] gradient sequence; betas traced: one compile."""
    tx = optax.chain(scale_by_moments(b1, b2), bias_correct(), scale_by_rms(0.0))

    def step(state, g):
        d, state = tx.update(g, state)
        return state, d

    return jax.lax.scan(step, tx.init(grads[0]), grads)[1]


def _sequence(kind, rng, b1, b2, steps=40, n=6):
    t = np.arange(steps)[:, None]
    if kind == 'normal':
        return rng.normal(size=(steps, n))
    if kind == 'heavy_tailed':
        return rng.standard_cauchy(size=(steps, n))
    if kind == 'growing':  # near the extremal sequence, with noise in the rate
        return np.exp(t * (np.log(b2 / b1) + 0.05 * rng.normal(size=(1, n)))) * rng.choice([-1, 1], size=(1, n))
    # 'spike then quiet'
    g = 1e-3 * rng.normal(size=(steps, n))
    g[rng.integers(0, steps)] = 1e3
    return g


@settings(max_examples=30, deadline=None)
@given(
    b1=st.floats(0.05, 0.99),
    b2=st.floats(0.05, 0.9999),
    kind=st.sampled_from(('normal', 'heavy_tailed', 'growing', 'spike')),
    seed=st.integers(0, 2**16),
)
def test_step_never_exceeds_the_cauchy_schwarz_bound(b1, b2, kind, seed):
    assume(b1 * b1 < 0.99 * b2)
    with jax.enable_x64(True):
        g = _sequence(kind, np.random.default_rng(seed), b1, b2)
        d = np.abs(np.asarray(_directions(jnp.float64(b1), jnp.float64(b2), jnp.asarray(g))))
        t = np.arange(1, len(g) + 1)[:, None]
        assert np.all(d <= cauchy_schwarz_bound(b1, b2, t) * (1 + 1e-9))
        assert np.all(d <= cauchy_schwarz_bound(b1, b2) * (1 + 1e-9))


def test_the_papers_bound_is_exceeded_by_gradients_growing_by_b2_over_b1():
    """Default betas: the extremal sequence reaches the Cauchy-Schwarz bound at every step, 7.25 > 3.16 at t=5000."""
    b1, b2, steps = 0.9, 0.999, 5000
    with jax.enable_x64(True):
        # g_t = 1e-150 (b2/b1)^t stays inside float64's range for g^2 over 5000 steps.
        g = 1e-150 * np.exp(np.arange(steps) * np.log(b2 / b1))[:, None]
        d = np.asarray(_directions(jnp.float64(b1), jnp.float64(b2), jnp.asarray(g)))[:, 0]
    t = np.arange(1, steps + 1)
    np.testing.assert_allclose(d, cauchy_schwarz_bound(b1, b2, t), rtol=1e-9)
    paper = (1 - b1) / np.sqrt(1 - b2)
    assert abs(paper - 3.1623) < 1e-4 and abs(cauchy_schwarz_bound(b1, b2) - 7.2703) < 1e-4
    assert d[-1] > 2 * paper
    assert d[-1] > 7.24  # 7.2703 * sqrt(1 - 0.999**5000)
