"""The fused Lion step against the composed chain it executes (bitwise, one step) and against optax.lion (100 steps).

Lion's loop in the float32 kernel: d = sign(fma(1 - b1, g, b1 m)), m = fma(1 - b2, g, b2 m), p = fma(-lr, d [+ wd p],
p), the operations XLA compiles adam_jax.lion's chain to on this CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adam_jax import fused
from tests.conftest import mixed_tree
from tests.test_fused import (
    MASK,
    SPECIAL_VALUES,
    assert_100_steps_equal_the_chain_and_optax,
    chain_step,
    grad_fn,
    kernel_calls,
    leaves_equal,
    max_abs_diff,
    needs_kernel,
    same_bits,
    special_value_grid,
    sweep_against_the_chain,
)

pytestmark = pytest.mark.usefixtures('on_cpu')

CASES = {
    'lion': lambda: (fused.lion(3e-3), optax.lion(3e-3)),
    'lion-mask-schedule': lambda: (
        fused.lion(optax.cosine_decay_schedule(3e-3, 60), b1=0.8, b2=0.95, weight_decay=0.1, mask=MASK),
        optax.lion(optax.cosine_decay_schedule(3e-3, 60), b1=0.8, b2=0.95, weight_decay=0.1, mask=MASK),
    ),
    'lion-b1_0-wd_0': lambda: (fused.lion(1e-3, b1=0.0, weight_decay=0.0), optax.lion(1e-3, b1=0.0, weight_decay=0.0)),
}


def with_momentum(opt, params, mu):
    """opt's initial state with this momentum."""
    momentum, *rest = opt.init(params)
    return (momentum._replace(mu=mu), *rest)


@pytest.mark.parametrize('case', CASES)
def test_lion_step_equals_the_chain_and_optax_over_100_steps(case):
    assert_100_steps_equal_the_chain_and_optax(*CASES[case](), moved=0.05)


@needs_kernel
@pytest.mark.parametrize('case', CASES)
def test_one_lion_kernel_step_is_bitwise_the_jitted_chain(case):
    opt, _ = CASES[case]()
    params = mixed_tree(seed=1)
    rng = np.random.default_rng(1)
    state = with_momentum(opt, params, jax.tree.map(lambda p: jnp.asarray(0.1 * rng.normal(size=p.shape)), params))
    grads = grad_fn(params, 7)
    assert kernel_calls(opt.step, params, grads, state) >= 1
    assert leaves_equal(jax.jit(opt.step)(params, grads, state), jax.jit(chain_step(opt))(params, grads, state))


@needs_kernel
@pytest.mark.parametrize(
    'make',
    [
        lambda: fused.lion(1e-2, b1=0.8, b2=0.95, weight_decay=0.1, mask=lambda p: {'a': True, 'b': False}),
        lambda: fused.lion(optax.linear_schedule(3e-2, 1e-3, 5), weight_decay=0.0),
        lambda: fused.lion(1.0),  # a known lr of 1: the last product is a negation, exact either way
    ],
    ids=['mask', 'schedule-wd0', 'lr1'],
)
def test_lion_is_bitwise_the_chain_for_every_leaf_size_and_non_finite_gradients(make):
    # Leaves of 1-40 elements (every vector tail, and the one-element leaves Adam's kernel hands to the chain: Lion has
    # no division, and XLA compiles them as the others) and one over two work items; a NaN and an inf at one step.
    params, _ = sweep_against_the_chain(make(), seed=11, steps=6, non_finite_step=3)
    assert np.isnan(np.asarray(params['a'][5][0])).all() and not np.isnan(np.asarray(params['a'][5][1:-1])).any()


@needs_kernel
@pytest.mark.parametrize('weight_decay', [0.1, 0.0], ids=['decay', 'wd0'])
@pytest.mark.parametrize('mask', [None, False], ids=['decayed', 'undecayed'])
def test_lion_special_values_in_every_operand_are_bitwise_the_chain(weight_decay, mask):
    # Every combination of +-0, +-denormal, +-1, +-inf and NaN as gradient, param and momentum: 729 elements, signs of
    # zeros counted (the sign of +-0 is itself, of a NaN a NaN, as XLA's sign).
    g, p, m = special_value_grid(SPECIAL_VALUES, SPECIAL_VALUES, SPECIAL_VALUES)
    opt = fused.lion(1e-2, weight_decay=weight_decay, mask=mask)
    state = with_momentum(opt, p, m)
    assert kernel_calls(opt.step, p, g, state) == 1
    assert same_bits(jax.jit(opt.step)(p, g, state), jax.jit(chain_step(opt))(p, g, state))


@needs_kernel
def test_lion_takes_the_chain_where_the_kernel_cannot_mirror_it_and_refuses_a_foreign_state():
    rng = np.random.default_rng(12)
    params = {'w': jnp.asarray(rng.normal(size=3000), jnp.float32), 'b': jnp.asarray(rng.normal(size=30), jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.cos(3 * p), params)
    chain_only = [
        fused.lion(1e-2, mu_dtype='bfloat16'),  # the kernel keeps a float32 momentum
        fused.lion(1e-2, b1=0.5),  # XLA factors (1 - b) x + b y into 0.5 (x + y)
        fused.lion(1e-2, b2=1e-8),  # 1 - b rounds to 1: XLA drops the multiply
        fused.lion(1e-2, mask={'w': jnp.bool_(True), 'b': jnp.bool_(False)}),  # a mask of arrays
        fused.lion(1e-2, weight_decay=optax.linear_schedule(0.3, 0.0, 4)),  # a rate unknown to XLA, as traced below
    ]
    for opt in chain_only:
        state = opt.init(params)
        assert kernel_calls(opt.step, params, grads, state) == 0
        assert leaves_equal(jax.jit(opt.step)(params, grads, state), jax.jit(chain_step(opt))(params, grads, state))
    # a traced weight decay (review finding: on (k, 3) and (k, 4) leaves XLA fuses wd p in some columns only)
    wide = {'w': jnp.asarray(rng.normal(size=(4096, 3)), jnp.float32)}
    wide_grads = jax.tree.map(lambda p: jnp.cos(3 * p), wide)

    def traced(wd, p, g, s, kernel):
        opt = fused.lion(1.0, weight_decay=wd)
        return (opt.step if kernel else chain_step(opt))(p, g, s)

    run = jax.jit(traced, static_argnums=4)
    state = fused.lion(1.0).init(wide)
    assert run.lower(0.1, wide, wide_grads, state, True).as_text().count('custom_call') == 0
    assert leaves_equal(run(0.1, wide, wide_grads, state, True), run(0.1, wide, wide_grads, state, False))
    opt = fused.lion(1e-2)
    assert kernel_calls(opt.step, params, grads, opt.init(params)) == 1
    with pytest.raises(TypeError, match=r'fused\.lion\(\.\.\.\)\.step needs the state .*adam_jax\.SignMomentumState'):
        opt.step(params, grads, fused.adam(1e-2).init(params))
    with pytest.raises(ValueError, match='b1'):
        fused.lion(1e-2, b1=1.0)


@needs_kernel
def test_lion_many_leaves_donated_in_place_and_under_vmap():
    rng = np.random.default_rng(13)
    params = {f'w{i:02d}': jnp.asarray(rng.normal(size=(i % 7) * 50 + 3), jnp.float32) for i in range(40)}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    opt = fused.lion(1e-2, weight_decay=0.1, mask=lambda p: {k: int(k[1:]) % 2 == 0 for k in p})
    state = opt.init(params)
    assert kernel_calls(opt.step, params, grads, state) == 2  # 20 decayed and 20 undecayed leaves
    want = jax.jit(chain_step(opt))(params, grads, state)
    params = jax.tree.map(lambda p: p + 0, params)  # buffers no NumPy view refers to
    pointers = [p.unsafe_buffer_pointer() for p in jax.tree.leaves(params)]
    got = jax.jit(opt.step, donate_argnums=(0, 2))(params, grads, state)
    assert [p.unsafe_buffer_pointer() for p in jax.tree.leaves(got[0])] == pointers
    assert leaves_equal(got, want)
    # Three independent problems in one call (vmapped over every operand): each is its own chain's step.
    batch = jax.tree.map(lambda x: jnp.stack([x, -x, 2 * x]), (want[0], grads))  # (params were donated)
    states = jax.vmap(opt.init)(batch[0])
    got = jax.jit(jax.vmap(opt.step))(batch[0], batch[1], states)
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], (batch, states))
        assert leaves_equal(jax.tree.map(lambda x, i=i: x[i], got), jax.jit(chain_step(opt))(*one[0], one[1]))


def test_lion_derivatives_are_the_chains_and_it_is_the_chain_for_optax():
    params = mixed_tree()
    grads = grad_fn(params, 0)
    opt = fused.lion(1e-2)
    state = opt.init(params)

    def loss(step, p):
        new, _ = step(p, jax.tree.map(lambda x: 2 * x, p), state)
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(new))

    got = jax.jit(jax.grad(lambda p: loss(opt.step, p)))(params)
    want = jax.jit(jax.grad(lambda p: loss(chain_step(opt), p)))(params)
    assert max_abs_diff(got, want) <= 1e-6
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(got)) > 0.1  # a derivative that is not trivial
    # update and init are the chain's: it drops into optax.chain, and its updates there are optax.lion's
    chained = optax.chain(optax.clip_by_global_norm(1.0), opt)
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.lion(1e-2))
    warm = jax.tree.map(lambda p: 0.3 * jnp.cos(p), params)  # a momentum that is not zero, in both states
    state = chained.init(params)
    state = (state[0], (state[1][0]._replace(mu=warm), *state[1][1:]))
    ref_state = reference.init(params)
    ref_state = (ref_state[0], (ref_state[1][0]._replace(mu=warm), *ref_state[1][1:]))
    got, _ = jax.jit(chained.update)(grads, state, params)
    want, _ = jax.jit(reference.update)(grads, ref_state, params)
    assert max_abs_diff(got, want) <= 1e-9 and max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(got)) > 0
