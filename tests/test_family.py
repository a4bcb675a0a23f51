"""The Adam family: each optimizer equals its optax namesake, the paper's variants their papers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import (
    bias_correct,
    max_second_moment,
    nesterov_momentum,
    scale_by_moments,
    scale_by_rectified_rms,
    scale_by_rms,
)
from adam_jax.presets import pytorch as torch_presets
from adam_jax.problems import OnlineLinearProblem, reddi_step_size
from tests.conftest import mixed_tree
from tests.reference import amsgrad_reference
from tests.test_optax_equivalence import assert_trees_close, run
from tests.test_reference import THETA0, _grad, _run_jax

LR = 3e-2
MASK = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)

# optax's name, and keyword arguments accepted by both optax's and ours (defaults, then others).
CASES = [
    ('amsgrad', {}),
    ('amsgrad', dict(b1=0.8, b2=0.95, eps=1e-6, eps_root=1e-9)),
    ('amsgrad', dict(bias_correction_mu=False, bias_correction_nu=False)),
    ('amsgrad', dict(bias_correction_nu=False)),
    ('nadam', {}),
    ('nadam', dict(b1=0.7, b2=0.95, eps=1e-5, eps_root=1e-8)),
    ('nadamw', {}),
    ('nadamw', dict(b1=0.8, b2=0.99, weight_decay=0.2, mask=MASK)),
    ('radam', {}),
    ('radam', dict(b1=0.8, b2=0.95, eps=1e-6, eps_root=1e-9, threshold=4.0, nesterov=True)),
    ('adabelief', {}),
    ('adabelief', dict(b1=0.8, b2=0.95, eps=1e-8, eps_root=1e-10, nesterov=True)),
    ('lamb', {}),
    ('lamb', dict(b1=0.8, b2=0.95, eps=1e-8, eps_root=1e-9, weight_decay=0.1, mask=MASK)),
    ('lion', {}),
    ('lion', dict(b1=0.8, b2=0.9, weight_decay=0.1, mask=MASK)),
    ('adamaxw', {}),
    ('adamaxw', dict(b1=0.8, b2=0.95, eps=1e-5, weight_decay=0.3, mask=MASK)),
]


def _two_leaves(dtype):
    """A matrix and a vector (LAMB's trust ratio and the masks see two leaves); few leaves compile fast."""
    tree = mixed_tree(dtype)['dense']
    return {'kernel': tree['kernel'], 'bias': tree['bias']}


@pytest.mark.parametrize('name,kwargs', CASES, ids=[f'{n}-{"-".join(k) or "defaults"}' for n, k in CASES])
def test_optimizer_equals_its_optax_namesake_in_float64(x64, name, kwargs):
    params = _two_leaves(jnp.float64)
    got = run(getattr(adam_jax, name)(LR, **kwargs), params, 80)
    want = run(getattr(optax, name)(LR, **kwargs), params, 80)
    assert_trees_close(got, want, atol=1e-9)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)))
    assert moved > 0.5


def test_amsgrad_without_bias_correction_is_reddi_algorithm_2(x64):
    hp = dict(alpha=5e-2, beta1=0.8, beta2=0.99, epsilon=1e-8)
    want = amsgrad_reference(THETA0, _grad, 200, **hp)
    opt = adam_jax.amsgrad(
        hp['alpha'], hp['beta1'], hp['beta2'], hp['epsilon'], bias_correction_mu=False, bias_correction_nu=False
    )
    got = _run_jax(opt, THETA0, 200)
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-12)


def _direction_after(stage, grads):
    tx = optax.chain(scale_by_moments(0.9, 0.99), *stage)
    state = tx.init(grads[0])
    for g in grads:
        d, state = tx.update(g, state)
    return np.asarray(d)


def test_the_order_of_max_and_correction_is_the_variant(x64):
    """max of raw v, then corrected (PyTorch) vs max of corrected v (optax), by hand."""
    grads = [jnp.asarray([3.0]), jnp.asarray([0.0]), jnp.asarray([0.0])]
    b2, t = 0.99, 3
    v = [0.01 * 9.0, 0.99 * 0.01 * 9.0, 0.99**2 * 0.01 * 9.0]  # v_1, v_2, v_3
    m3 = 0.9**2 * 0.1 * 3.0 / (1 - 0.9**3)
    torch_order = _direction_after([max_second_moment(), bias_correct(), scale_by_rms(0.0)], grads)
    optax_order = _direction_after([bias_correct(), max_second_moment(), scale_by_rms(0.0)], grads)
    np.testing.assert_allclose(torch_order, [m3 / np.sqrt(max(v) / (1 - b2**t))], rtol=1e-12)
    corrected = [v[i] / (1 - b2 ** (i + 1)) for i in range(3)]
    np.testing.assert_allclose(optax_order, [m3 / np.sqrt(max(corrected))], rtol=1e-12)
    assert abs(torch_order[0] - optax_order[0]) > 0.1


def test_torch_momentum_schedule_by_hand(x64):
    """Two steps of Dozat's schedule, mu_t = b1 (1 - 0.5 * 0.96^(t psi)), written out."""
    b1, psi = 0.9, 0.1
    mu = [b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2, 3)]
    g1, g2 = 2.0, -1.0
    m2 = 0.9 * 0.1 * g1 + 0.1 * g2
    want = mu[2] * m2 / (1 - mu[0] * mu[1] * mu[2]) + (1 - mu[1]) * g2 / (1 - mu[0] * mu[1])
    tx = optax.chain(scale_by_moments(b1, 0.99), nesterov_momentum(psi))
    state = tx.init(jnp.zeros(1))
    for g in (g1, g2):
        moments, state = tx.update(jnp.asarray([g]), state)
    np.testing.assert_allclose(np.asarray(moments.mu), [want], rtol=1e-13)
    assert moments.mu_debiased and not moments.nu_debiased
    np.testing.assert_allclose(float(state[1].mu_product), mu[0] * mu[1], rtol=1e-14)


def test_nesterov_after_bias_correct_is_refused():
    tx = optax.chain(scale_by_moments(), bias_correct(), nesterov_momentum())
    with pytest.raises(TypeError, match=r'Put nesterov_momentum\(\) before bias_correct\(\)'):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def _rho(b2, t):
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf - 2 * t * b2**t / (1 - b2**t)


def _rho_as_jax_rounds_it(b2, t):
    """rho_t with the float64 operations the transform uses, so that rho_t == threshold exactly."""
    b2, t = jnp.asarray(b2, jnp.float64), jnp.asarray(t, jnp.int32)
    b2_t = b2**t
    return (2 / (1 - b2) - 1) - 2 * t * b2_t / (1 - b2_t)


@pytest.mark.parametrize('strict', [False, True])
def test_rectification_threshold_is_inclusive_unless_strict(x64, strict):
    """At rho_t == threshold, optax rectifies (>=) and PyTorch does not (>)."""
    b2, t = 0.95, 6
    grads = [jnp.asarray([1.0, -2.0]) * (k + 1) for k in range(t)]
    tx = optax.chain(
        scale_by_moments(0.9, b2),
        bias_correct(),
        scale_by_rectified_rms(0.0, threshold=_rho_as_jax_rounds_it(b2, t), strict=strict),
    )
    state = tx.init(grads[0])
    for g in grads:
        d, state = tx.update(g, state)
    m_hat = sum(0.1 * 0.9 ** (t - 1 - k) * np.asarray(g) for k, g in enumerate(grads)) / (1 - 0.9**t)
    v_hat = sum(0.05 * b2 ** (t - 1 - k) * np.asarray(g) ** 2 for k, g in enumerate(grads)) / (1 - b2**t)
    rho, rho_inf = _rho(b2, t), 2 / (1 - b2) - 1
    r_t = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    want = m_hat if strict else r_t * m_hat / np.sqrt(v_hat)  # SGD with momentum, or the rectified step
    np.testing.assert_allclose(np.asarray(d), want, rtol=1e-12)
    assert np.all(np.abs(m_hat - r_t * m_hat / np.sqrt(v_hat)) > 0.5)


def test_reddi_counterexample_adam_goes_to_plus_one_amsgrad_to_minus_one():
    """Reddi et al. (2018), Section 5: f_t(x) = 1010 x if t mod 101 == 1 else -10 x on [-1, 1].

    Adam reaches the wrong end only after ~10500 steps (its whole last period first exceeds 0.95
    between 10100 and 11110 steps; examples/reddi_counterexample.py prints the table), so 120
    periods is the shortest run with a margin: measured min of Adam's last period +0.974, max of
    AMSGrad's -0.921 (optax's form), -0.907 (PyTorch's), -0.807 (the paper's, v uncorrected), from
    x_1 = 0, the same in float32 and float64."""
    problem = OnlineLinearProblem()
    steps = 120 * problem.period
    last = slice(steps - problem.period, steps)
    adam = problem.run(adam_jax.adam(reddi_step_size, 0.9, 0.99), steps)
    assert float(jnp.min(adam[last])) > 0.95
    amsgrads = {
        'optax': (adam_jax.amsgrad(reddi_step_size, 0.9, 0.99), -0.85),
        'pytorch': (torch_presets.adam(reddi_step_size, (0.9, 0.99), amsgrad=True), -0.85),
        'paper': (
            adam_jax.amsgrad(reddi_step_size, 0.9, 0.99, bias_correction_mu=False, bias_correction_nu=False),
            -0.75,
        ),
    }
    for form, (opt, bound) in amsgrads.items():
        assert float(jnp.max(problem.run(opt, steps)[last])) < bound, form


def test_reddi_problem_matches_the_papers_amsgrad_in_numpy(x64):
    """The scanned, projected run equals Algorithm 2 written out in NumPy for the first periods."""
    problem = OnlineLinearProblem()
    opt = adam_jax.amsgrad(reddi_step_size, 0.9, 0.99, eps=0.0, bias_correction_mu=False, bias_correction_nu=False)
    got = np.asarray(problem.run(opt, 505, x0=0.0, dtype=jnp.float64))
    want = amsgrad_reference(
        np.array(0.0),
        lambda x, t: 1010.0 if t % 101 == 1 else -10.0,
        505,
        alpha=lambda t: 0.5 / np.sqrt(t),
        beta1=0.9,
        beta2=0.99,
        project=lambda x: np.clip(x, -1.0, 1.0),
    )
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-12)
    assert problem.optimum == -1.0
    # At x = +1 for a whole period the regret is (1010 * 2 - 100 * 10 * 2) / 101.
    np.testing.assert_allclose(float(problem.average_regret(jnp.ones(101), start=1)), 20 / 101, rtol=1e-6)
    np.testing.assert_array_equal(problem.gradient(jnp.asarray([1, 2, 101, 102, 203])), [1010, -10, -10, 1010, 1010])


NEW = {
    'amsgrad': lambda: adam_jax.amsgrad(1e-2),
    'nadam': lambda: adam_jax.nadam(1e-2),
    'nadamw': lambda: adam_jax.nadamw(1e-2),
    'radam': lambda: adam_jax.radam(1e-2),
    'adabelief': lambda: adam_jax.adabelief(1e-2),
    'lamb': lambda: adam_jax.lamb(1e-2, weight_decay=0.1),
    'lion': lambda: adam_jax.lion(1e-2),
    'adamaxw': lambda: adam_jax.adamaxw(1e-2),
    'torch_nadam': lambda: torch_presets.nadam(),
    'torch_adam_amsgrad': lambda: torch_presets.adam(amsgrad=True),
}


@pytest.mark.parametrize('name', NEW)
def test_state_is_module_level_and_inits_from_shape_dtype_structs(name):
    params = mixed_tree()
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    state = NEW[name]().init(abstract)
    concrete = NEW[name]().init(params)
    assert jax.tree.structure(state) == jax.tree.structure(concrete)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(concrete)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    types = []
    jax.tree.map(lambda x: None, state, is_leaf=lambda x: types.append(type(x)) or False)
    for cls in types:
        assert '<locals>' not in cls.__qualname__, cls


@pytest.mark.parametrize(
    'name',
    ['amsgrad', 'nadam', 'nadamw', 'radam', 'adabelief', 'lamb', 'adamaxw'],
)
def test_mu_dtype_and_nu_dtype_are_the_storage_dtypes(name):
    opt = getattr(adam_jax, name)(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    state = opt.init(mixed_tree())
    stored = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert stored and all(x.dtype == jnp.bfloat16 for x in stored)


def test_lion_mu_dtype():
    state = adam_jax.lion(1e-2, mu_dtype=jnp.bfloat16).init(mixed_tree())
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state) if x.ndim > 0)


@pytest.mark.parametrize('opt', [adam_jax.lamb(1e-2), adam_jax.lion(1e-2)])
def test_transforms_that_need_params_say_so(opt):
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match='needs the params'):
        opt.update(jnp.ones(2), state)


def test_float32_params_with_bfloat16_gradients_get_float32_updates_and_their_decay():
    # Gradients cast to bfloat16 (as for a cheaper all-reduce) used to give bfloat16 updates, in which
    # AdamW's and Lion's decay term lambda * p was rounded away next to a direction of about 1.
    theta0 = np.linspace(0.5, 2.0, 64)
    lr, wd, b1, b2, eps, steps = 1e-2, 1e-1, 0.9, 0.999, 1e-8, 20

    def grad_bf16(theta, t):
        return jnp.asarray(np.cos(3.0 * theta + t), jnp.bfloat16)

    def run(opt):
        params = {'w': jnp.asarray(theta0, jnp.float32)}
        state = opt.init(params)
        for t in range(1, steps + 1):
            grads = {'w': grad_bf16(np.asarray(params['w'], np.float64), t)}
            updates, state = opt.update(grads, state, params)
            assert updates['w'].dtype == jnp.float32
            params = optax.apply_updates(params, updates)
        return np.asarray(params['w'], np.float64)

    # NumPy float64 references on the same bfloat16 gradient values.
    theta, m, v = theta0.copy(), np.zeros(64), np.zeros(64)
    for t in range(1, steps + 1):  # AdamW (Loshchilov & Hutter, as optax and PyTorch scale it: lr * (d + wd p))
        g = np.asarray(grad_bf16(theta, t), np.float64)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        d = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        theta = theta - lr * (d + wd * theta)
    np.testing.assert_allclose(run(adam_jax.adamw(lr, b1, b2, eps, weight_decay=wd)), theta, rtol=2e-5)
    theta, m = theta0.copy(), np.zeros(64)
    for t in range(1, steps + 1):  # Lion (Chen et al. 2023, Algorithm 2)
        g = np.asarray(grad_bf16(theta, t), np.float64)
        theta = theta - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * theta)
        m = 0.99 * m + 0.01 * g
    np.testing.assert_allclose(run(adam_jax.lion(lr, b1=b1, b2=0.99, weight_decay=wd)), theta, rtol=2e-5)
