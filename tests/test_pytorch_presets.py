"""adam_jax.presets.pytorch equals torch.optim (2.13, CPU) in float64, option by option."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch  # the `test` extra pins torch==2.13.0 (the CPU build is enough)

from adam_jax.presets import pytorch as presets
from tests.test_reference import _run_jax

STEPS = 60
X0 = {'b': np.array([1.0, -1.0, 0.5, 2.0, 0.0]), 'w': np.linspace(-1.5, 1.5, 12).reshape(3, 4)}
TARGET = {'b': np.array([0.5, -2.0, 3.0, 0.0, 1e-3]), 'w': np.linspace(1.0, -1.0, 12).reshape(3, 4)}


def gradient(theta: dict, t: int) -> dict:
    """A noisy quadratic's gradient, with a step of no gradient at all and sparse coordinates."""
    rng = np.random.default_rng(t)
    g = {k: 2.0 * (theta[k] - TARGET[k]) + rng.normal(scale=0.3, size=theta[k].shape) for k in sorted(theta)}
    if t == 7:
        return {k: np.zeros_like(v) for k, v in g.items()}
    if t % 4:  # coordinates that only get a gradient every fourth step
        g['b'][3] = 0.0
        g['w'][1, :] = 0.0
    return g


def run_torch(name: str, kwargs: dict) -> list[dict]:
    cls = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW, 'nadam': torch.optim.NAdam}.get(name)
    cls = cls or {'radam': torch.optim.RAdam, 'adamax': torch.optim.Adamax}[name]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # NAdam's mu_product and the step counts in float64 too
    try:
        params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in X0.items()}
        opt = cls(list(params.values()), foreach=False, **kwargs)
        history = []
        for t in range(1, STEPS + 1):
            g = gradient({k: p.detach().numpy() for k, p in params.items()}, t)
            for k, p in params.items():
                p.grad = torch.tensor(g[k], dtype=torch.float64)
            opt.step()
            history.append({k: p.detach().numpy().copy() for k, p in params.items()})
        return history
    finally:
        torch.set_default_dtype(previous)


def run_jax(opt: optax.GradientTransformation) -> list[dict]:
    return _run_jax(opt, X0, STEPS, gradient)


def max_difference(a: list[dict], b: list[dict]) -> float:
    return max(float(np.max(np.abs(x[k] - y[k]))) for x, y in zip(a, b) for k in x)


CASES = [
    ('adam', {}),
    ('adam', dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ('adam', dict(lr=1e-2, amsgrad=True)),
    ('adam', dict(lr=1e-2, weight_decay=0.05, maximize=True)),
    ('adam', dict(lr=1e-2, weight_decay=0.1, amsgrad=True, decoupled_weight_decay=True)),
    ('adamw', {}),
    ('adamw', dict(lr=1e-2, betas=(0.5, 0.95), weight_decay=0.3, amsgrad=True, maximize=True)),
    ('nadam', {}),
    ('nadam', dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, momentum_decay=2e-2)),
    ('nadam', dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ('radam', {}),
    ('radam', dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1)),
    ('radam', dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ('adamax', {}),
    ('adamax', dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize('name,kwargs', CASES, ids=[f'{n}-{"-".join(k) or "defaults"}' for n, k in CASES])
def test_preset_equals_torch_optim_in_float64(x64, name, kwargs):
    want = run_torch(name, kwargs)
    got = run_jax(getattr(presets, name)(**kwargs))
    assert got[-1]['w'].dtype == np.float64
    assert max_difference(got, want) < 1e-10
    # The run moved the params, so equality is not trivially true.
    assert max_difference(want[-1:], [X0]) > 0.02


@pytest.mark.parametrize(
    'name,option',
    [
        ('adam', dict(amsgrad=True)),
        ('adam', dict(maximize=True)),
        ('adam', dict(weight_decay=0.5)),
        ('adam', dict(weight_decay=0.5, decoupled_weight_decay=True)),
        ('nadam', dict(momentum_decay=0.05)),
        ('nadam', dict(weight_decay=0.5, decoupled_weight_decay=True)),
        ('radam', dict(weight_decay=0.5, decoupled_weight_decay=True)),
        ('radam', dict(eps=1e-2)),
    ],
)
def test_each_option_changes_torchs_trajectory(name, option):
    """Every option checked above is one that matters on this gradient sequence (torch only: no compile)."""
    base = dict(lr=1e-2)
    without = {'weight_decay': option['weight_decay']} if 'decoupled_weight_decay' in option else {}
    assert max_difference(run_torch(name, {**base, **without}), run_torch(name, {**base, **option})) > 1e-4


def test_torch_semantics_differ_from_optax(x64):
    """PyTorch's AMSGrad, NAdam and RAdam are not optax's: the presets are needed."""
    pairs = [
        (presets.adam(1e-2, amsgrad=True), optax.amsgrad(1e-2)),
        (presets.nadam(1e-2), optax.nadam(1e-2)),
        (presets.radam(1e-2, eps=1e-3), optax.radam(1e-2, eps=1e-3)),
    ]
    for ours, theirs in pairs:
        assert max_difference(run_jax(ours), run_jax(theirs)) > 1e-6


@pytest.mark.parametrize(
    'build',
    [
        lambda: presets.adam(amsgrad=True, weight_decay=0.1, maximize=True),
        lambda: presets.adamw(),
        lambda: presets.nadam(weight_decay=0.1),
        lambda: presets.radam(weight_decay=0.1, decoupled_weight_decay=True),
        lambda: presets.adamax(weight_decay=0.1),
    ],
    ids=['adam', 'adamw', 'nadam', 'radam', 'adamax'],
)
def test_presets_keep_dtypes_and_state_shapes_in_bfloat16(build):
    opt = build()
    params = {k: jnp.asarray(v, jnp.bfloat16) for k, v in X0.items()}
    state = opt.init(params)
    before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    updates, state = jax.jit(opt.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before
    for u in jax.tree.leaves(updates):
        assert u.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(u)))


def test_inject_hyperparams_wraps_a_preset(x64):
    opt = optax.inject_hyperparams(presets.nadam)(lr=1e-2, weight_decay=0.1, momentum_decay=2e-2)
    kwargs = dict(lr=1e-2, weight_decay=0.1, momentum_decay=2e-2)
    assert max_difference(run_jax(opt), run_torch('nadam', kwargs)) < 1e-10


@pytest.mark.parametrize(
    'name,kwargs',
    [
        ('adam', dict(lr=1e-3, betas=(0.9, 0.99999))),
        ('adam', dict(lr=1e-3, betas=(0.9, 0.9999), amsgrad=True)),
        ('adamw', dict(lr=1e-3, betas=(0.9, 0.9999))),
        ('nadam', dict(lr=1e-3, betas=(0.9, 0.9999))),
        ('radam', dict(lr=1e-3)),
        ('radam', dict(lr=1e-3, betas=(0.9, 0.9999))),  # rho_t passes 5 at step 6, not at 2 (float32's 1 - b2^t)
        ('adamax', dict(lr=1e-2, betas=(0.9999, 0.999))),  # 1 - b1^t: 6e-6 off with float32's power (review)
    ],
)
def test_preset_equals_torch_optim_in_float32(name, kwargs):
    # torch forms 1 - beta^t (and RAdam's rho_t) in double; formed in float32 from a rounded beta they were off
    # by 1e-5 (beta2 = 0.999) to 7e-4 (0.99999) relative, and RAdam switched to the adaptive step 4 steps early
    # (params 69% off). The presets take log(beta) in double: what is left is float32 rounding.
    grads = np.random.default_rng(0).normal(size=(12, 1000)).astype(np.float32)
    cls = {
        'adam': torch.optim.Adam,
        'adamw': torch.optim.AdamW,
        'nadam': torch.optim.NAdam,
        'radam': torch.optim.RAdam,
        'adamax': torch.optim.Adamax,
    }
    p = torch.zeros(1000, requires_grad=True)
    opt = cls[name]([p], **kwargs)
    tx = getattr(presets, name)(**kwargs)
    x = jnp.zeros(1000, jnp.float32)
    state = tx.init(x)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        updates, state = tx.update(jnp.asarray(g), state, x)
        x = optax.apply_updates(x, updates)
        want = p.detach().numpy()
        assert np.max(np.abs(np.asarray(x) - want)) <= 3e-6 * np.max(np.abs(want))


@pytest.mark.parametrize('name', ['adam', 'adamw', 'nadam', 'radam', 'adamax'])
def test_complex_params_are_refused_with_torchs_real_view_as_the_way(name):
    # torch.optim keeps separate second moments for the real and imaginary parts (view_as_real); adam_jax keeps one
    # of |g|^2, so a preset would silently leave torch's trajectory (0.14-0.90 relative after 30 steps).
    with pytest.raises(TypeError, match=r"the leaf at \['z'\] is complex \(complex64\).*view_as_real"):
        getattr(presets, name)().init({'z': jnp.ones(3, jnp.complex64), 'w': jnp.ones(2)})


@pytest.mark.parametrize('name', ['adam', 'adamw', 'nadam', 'radam', 'adamax'])
def test_a_zero_weight_decay_leaves_an_infinite_param_infinite_as_torch(name):
    # torch skips weight_decay=0 (L2) or multiplies by 1 - lr * 0 (decoupled); the presets' decay adds nothing for a
    # Python 0 (before, 0 * inf made the param NaN).
    kwargs = dict(weight_decay=0.0, **({'decoupled_weight_decay': True} if name in ('nadam', 'radam') else {}))
    p0, g0 = np.array([np.inf, 1.0, -2.0], np.float32), np.array([0.5, 0.5, -1.0], np.float32)
    params = torch.tensor(p0, requires_grad=True)
    cls = {'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW, 'nadam': torch.optim.NAdam}.get(name)
    opt = (cls or {'radam': torch.optim.RAdam, 'adamax': torch.optim.Adamax}[name])([params], **kwargs)
    params.grad = torch.tensor(g0)
    opt.step()
    tx = getattr(presets, name)(**kwargs)
    theta = jnp.asarray(p0)
    updates, _ = tx.update(jnp.asarray(g0), tx.init(theta), theta)
    got = np.asarray(optax.apply_updates(theta, updates))
    want = params.detach().numpy()
    assert np.isinf(got[0]) and np.isinf(want[0])
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)
