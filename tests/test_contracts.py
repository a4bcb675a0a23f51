"""Contracts every transform and optimizer keeps (the ones optax's own tests check)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import bias_correct, decoupled_decay, scale_by_moments, scale_by_rms
from tests.conftest import mixed_tree, noisy_quadratic_grad

FACTORIES = {
    'adam': lambda: adam_jax.adam(1e-2),
    'adamw': lambda: adam_jax.adamw(1e-2, weight_decay=0.1),
    'adamax': lambda: adam_jax.adamax(1e-2),
    'adam_bf16_state': lambda: adam_jax.adam(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    'lh_adamw': lambda: adam_jax.loshchilov_hutter_adamw(1e-2, optax.cosine_decay_schedule(1.0, 100)),
    'chain': lambda: optax.chain(
        scale_by_moments(), bias_correct(), scale_by_rms(), decoupled_decay(1e-3), optax.scale_by_learning_rate(1e-2)
    ),
}


def _state_classes(state):
    """Every NamedTuple class inside an optimizer state."""
    found = []

    def visit(node):
        if isinstance(node, tuple) and hasattr(node, '_fields'):
            found.append(type(node))
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(state)
    return found


@pytest.mark.parametrize('name', FACTORIES)
def test_state_types_are_module_level_namedtuples(name):
    opt = FACTORIES[name]()
    state = opt.init(mixed_tree())
    classes = _state_classes(state)
    assert adam_jax.MomentsState in classes
    for cls in classes:
        assert '<locals>' not in cls.__qualname__, cls
    # Building the optimizer again gives the same state types (inject_hyperparams relies on it).
    assert jax.tree.structure(FACTORIES[name]().init(mixed_tree())) == jax.tree.structure(state)


# A real mu_dtype cannot hold complex moments: that pair is refused (tested below).
@pytest.mark.parametrize(
    'name,dtype',
    [
        (name, dtype)
        for name in FACTORIES
        for dtype in ('float32', 'bfloat16', 'float16', 'complex64')
        if not (name == 'adam_bf16_state' and dtype == 'complex64')
    ],
)
def test_state_shapes_and_dtypes_never_change(name, dtype):
    params = mixed_tree(jnp.dtype(dtype))
    opt = FACTORIES[name]()
    state = opt.init(params)
    step = jax.jit(opt.update)
    before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for t in range(3):
        updates, state = step(noisy_quadratic_grad(params, t), state, params)
        params = optax.apply_updates(params, updates)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == before
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
            assert u.dtype == p.dtype == jnp.dtype(dtype)
            assert bool(jnp.all(jnp.isfinite(u)))


def test_complex_nu_is_stored_real():
    state = adam_jax.adam(1e-2).init(jnp.ones(3, jnp.complex64))
    assert optax.tree.get(state, 'mu').dtype == jnp.complex64
    assert optax.tree.get(state, 'nu').dtype == jnp.float32


def test_real_mu_dtype_for_complex_params_refuses_to_drop_the_imaginary_part():
    opt = adam_jax.adam(1e-2, mu_dtype=jnp.bfloat16)
    params = jnp.ones(3, jnp.complex64)
    state = opt.init(params)
    with pytest.raises(TypeError, match='mu_dtype=bfloat16 cannot hold'):
        opt.update(params, state, params)


@pytest.mark.parametrize('name', FACTORIES)
def test_init_accepts_shape_dtype_structs(name):
    params = mixed_tree()
    opt = FACTORIES[name]()
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    from_structs = opt.init(abstract)
    from_arrays = opt.init(params)
    assert jax.tree.structure(from_structs) == jax.tree.structure(from_arrays)
    for a, b in zip(jax.tree.leaves(from_structs), jax.tree.leaves(from_arrays)):
        assert a.shape == b.shape and a.dtype == b.dtype
    shapes = jax.eval_shape(opt.init, abstract)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == jax.tree.map(lambda x: (x.shape, x.dtype), from_arrays)


def test_inject_hyperparams_changes_values_without_recompiling():
    params = mixed_tree()
    opt = optax.inject_hyperparams(adam_jax.adam)(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8)
    plain = adam_jax.adam(1e-2)

    @jax.jit
    def step(params, state, t):
        updates, state = opt.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    state, p_inj = opt.init(params), params
    p_plain, s_plain = params, plain.init(params)
    for t in range(5):
        p_inj, state = step(p_inj, state, t)
        updates, s_plain = plain.update(noisy_quadratic_grad(p_plain, t), s_plain, p_plain)
        p_plain = optax.apply_updates(p_plain, updates)
    for a, b in zip(jax.tree.leaves(p_inj), jax.tree.leaves(p_plain)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Change lr and betas mid-run: same compiled step, different numbers.
    for name, value in (('learning_rate', 0.5), ('b1', 0.5), ('b2', 0.9)):
        state.hyperparams[name] = jnp.asarray(value, state.hyperparams[name].dtype)
    p_next, _ = step(p_inj, state, 5)
    assert step._cache_size() == 1
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p_next), jax.tree.leaves(p_inj)))
    assert moved > 0.1  # lr 0.5 moves each coordinate by about 0.5


def test_none_leaves_and_masked_nodes_are_tolerated():
    params = {'w': jnp.ones((2, 3)), 'skip': None, 'b': jnp.zeros(3)}
    opt = adam_jax.adamw(1e-2, weight_decay=0.1)
    state = opt.init(params)
    grads = {'w': jnp.ones((2, 3)), 'skip': None, 'b': jnp.ones(3)}
    updates, state = jax.jit(opt.update)(grads, state, params)
    assert updates['skip'] is None
    np.testing.assert_allclose(updates['b'], -1e-2 * np.ones(3), rtol=1e-5)

    masked = optax.masked(adam_jax.adam(1e-2), {'w': True, 'skip': False, 'b': False})
    state = masked.init(params)
    updates, state = jax.jit(masked.update)(grads, state, params)
    np.testing.assert_allclose(updates['w'], -1e-2 * np.ones((2, 3)), rtol=1e-5)
    np.testing.assert_array_equal(updates['b'], np.ones(3))  # passed through unchanged
    assert isinstance(optax.tree.get(state, 'mu')['b'], optax.MaskedNode)


@pytest.mark.parametrize('name', FACTORIES)
def test_unknown_extra_keyword_arguments_are_accepted(name):
    opt = FACTORIES[name]()
    params = mixed_tree()
    state = opt.init(params)
    updates, _ = opt.update(noisy_quadratic_grad(params, 0), state, params, some_loss_value=3.0, rng=None)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_complex_parameters_match_optax():
    params = {'z': jnp.asarray([1 + 2j, -0.5 + 0.1j, 3 - 1j], jnp.complex64)}
    target = jnp.asarray([0.2 - 1j, 1 + 1j, -2 + 0.5j], jnp.complex64)

    def grad(p):
        return {'z': jnp.conj(jax.grad(lambda z: jnp.sum(jnp.abs(z - target) ** 2))(p['z']))}

    def run(opt):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(grad(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), length=600))(params)
        return p['z']

    got, want = run(adam_jax.adam(5e-2)), run(optax.adam(5e-2))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, target, atol=5e-2)


@pytest.mark.parametrize('name', FACTORIES)
def test_jitted_step_does_not_recompile(name):
    opt = FACTORIES[name]()
    params = mixed_tree()

    @jax.jit
    def step(params, state, t):
        updates, state = opt.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for t in range(3):
        params, state = step(params, state, t)
    assert step._cache_size() == 1


def test_step_counter_saturates_instead_of_wrapping():
    opt = adam_jax.adam(1e-3)
    params = jnp.ones(3)
    state = opt.init(params)
    state = optax.tree.set(state, count=jnp.asarray(2**31 - 2, jnp.int32))
    step = jax.jit(opt.update)
    for expected in (2**31 - 1, 2**31 - 1, 2**31 - 1):
        updates, state = step(jnp.ones(3), state, params)
        assert int(optax.tree.get(state, 'count')) == expected
        assert bool(jnp.all(jnp.isfinite(updates)))
