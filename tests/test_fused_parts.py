"""The fused steps on a flat parameter vector whose gradient comes in pieces (``fused.GradientParts``).

``make_train_step(..., unravel=...)`` with a fused optimizer hands the step the gradients of the leaves the vector is
cut into, and the kernel reads them where they are instead of a concatenated gradient. Same arithmetic per element:
the step must be bitwise the kernel's step on the concatenated gradient (and so the chain's), whatever the pieces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import adam_jax
from adam_jax import fused
from adam_jax.fused import GradientParts, _library
from tests.test_fused import kernel_calls, leaves_equal, max_abs_diff, mlp_loss, mlp_problem, needs_kernel

pytestmark = pytest.mark.usefixtures('on_cpu')  # the kernel is a CPU kernel, also in a GPU process

OPTIMIZERS = {
    'adam': lambda: fused.adam(3e-2),
    'adamw': lambda: fused.adamw(optax.linear_schedule(3e-2, 1e-3, 10), weight_decay=0.1),
    'nadamw': lambda: fused.nadamw(3e-2, b1=0.8, eps_root=1e-9, weight_decay=0.1),
    'adamaxw': lambda: fused.adamaxw(3e-2, weight_decay=0.1),
    'amsgrad': lambda: fused.amsgrad(3e-2),
    'adabelief': lambda: fused.adabelief(3e-2, eps_root=1e-9),
    'radam': lambda: fused.radam(3e-2, b2=0.9, threshold=4.0),  # rho_t reaches 4 at the fifth step
    'lion': lambda: fused.lion(3e-3, weight_decay=0.1),
}
# 70 pieces (more than the 32 a call takes: three chained calls), sizes 1 to 300, 2-D ones among them.
SHAPES = [(int(s),) for s in np.random.default_rng(0).integers(1, 300, 64)]
SHAPES += [(3, 7), (5, 5), (1, 1), (9, 2), (4,), (2, 64)]


def pieces(seed: int, shapes=SHAPES, dtype=jnp.float32) -> list:
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s), dtype) for s in shapes]


def forms_flat_gradient(lowered_text: str, size: int) -> bool:
    """Whether the program concatenates anything into a vector of ``size`` floats."""
    return any('concatenate' in line and f'-> tensor<{size}xf32>' in line for line in lowered_text.splitlines())


def flat_of(parts: list) -> jax.Array:
    return jnp.concatenate([p.ravel() for p in parts])


@needs_kernel
@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_parts_step_is_bitwise_the_step_on_the_concatenated_gradient(name):
    opt = OPTIMIZERS[name]()
    flat = flat_of(pieces(0))
    state_a = state_b = opt.init(flat)
    params_a = params_b = flat
    step = jax.jit(opt.step)
    for t in range(6):
        grads = pieces(100 + t)
        if t == 3:  # special values pass through the pieces as through the flat gradient
            grads[5] = grads[5].at[0].set(jnp.nan).at[1].set(jnp.inf).at[2].set(-0.0)
        params_a, state_a = step(params_a, GradientParts(grads), state_a)
        params_b, state_b = step(params_b, flat_of(grads), state_b)
        assert np.array_equal(np.asarray(params_a), np.asarray(params_b), equal_nan=True), (name, t)
        assert all(
            np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
            for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b))
        ), (name, t)
    finite = jnp.isfinite(params_a)
    assert float(jnp.max(jnp.abs(jnp.where(finite, params_a - flat, 0.0)))) > 1e-3  # the params moved


@needs_kernel
def test_parts_are_read_in_place_by_chained_calls():
    opt = fused.adamw(1e-2, weight_decay=0.1)
    flat = flat_of(pieces(0))
    grads = GradientParts(pieces(1))
    assert kernel_calls(opt.step, flat, grads, opt.init(flat)) == 3  # 70 pieces, at most 32 a call
    assert not forms_flat_gradient(jax.jit(opt.step).lower(flat, grads, opt.init(flat)).as_text(), flat.size)
    chain = jax.jit(lambda p, g, s: opt.chain.update(g.concatenated(p), s, p)).lower(flat, grads, opt.init(flat))
    assert forms_flat_gradient(chain.as_text(), flat.size)  # what the check would see


def test_pieces_that_do_not_fit_are_concatenated_or_refused():
    opt = fused.adam(1e-2)
    flat = flat_of(pieces(0))
    want = jax.jit(opt.chain.update)(flat_of(pieces(1)).astype(jnp.float32), opt.init(flat), flat)
    # bfloat16 pieces: concatenated in the flat params' dtype (as the transpose of unravel forms the gradient)
    half = GradientParts([g.astype(jnp.bfloat16) for g in pieces(1)])
    params, _ = jax.jit(opt.step)(flat, half, opt.init(flat))
    cast = flat_of([g.astype(jnp.bfloat16).astype(jnp.float32) for g in pieces(1)])
    expected, _ = jax.jit(opt.step)(flat, cast, opt.init(flat))
    assert np.array_equal(np.asarray(params), np.asarray(expected))
    assert max_abs_diff(params, optax.apply_updates(flat, want[0])) < 1e-3
    with pytest.raises(ValueError, match=f'GradientParts hold {flat.size - 1} elements, the flat params {flat.size}'):
        opt.step(flat, GradientParts(pieces(1)[:-1] + [jnp.zeros(pieces(1)[-1].size - 1)]), opt.init(flat))
    with pytest.raises(TypeError, match=r'one flat \(1-D\) vector of params, got params: dict'):
        opt.step({'a': flat}, GradientParts(pieces(1)), opt.init({'a': flat}))


@needs_kernel
def test_parts_under_vmap_equal_each_problem_alone():
    opt = fused.adamw(1e-2, weight_decay=0.1)
    flats = jnp.stack([flat_of(pieces(0)), flat_of(pieces(7))])
    grads = GradientParts([jnp.stack([a, b]) for a, b in zip(pieces(1), pieces(2))])
    states = jax.vmap(opt.init)(flats)
    params, state = jax.jit(jax.vmap(opt.step))(flats, grads, states)
    for i, seed in enumerate((1, 2)):
        one, one_state = jax.jit(opt.step)(flats[i], flat_of(pieces(seed)), opt.init(flats[i]))
        assert np.array_equal(np.asarray(params[i]), np.asarray(one))
        assert leaves_equal(jax.tree.map(lambda x, i=i: x[i], state), one_state)


def test_flat_train_step_reads_parts_and_matches_the_tree_chain():
    params, x, y = mlp_problem(3)
    flat, unravel = ravel_pytree(params)
    opt = fused.lion(1e-3, weight_decay=0.1)
    step = adam_jax.make_train_step(mlp_loss, opt, unravel=unravel)
    state = opt.init(flat)
    if _library.available():
        assert not forms_flat_gradient(step.lower(flat, state, x, y).as_text(), flat.size)
    tree_step = adam_jax.make_train_step(mlp_loss, adam_jax.lion(1e-3, weight_decay=0.1))
    tree, tree_state = params, adam_jax.lion(1e-3, weight_decay=0.1).init(params)
    for _ in range(50):
        flat, state, loss = step(flat, state, x, y)
        tree, tree_state, tree_loss = tree_step(tree, tree_state, x, y)
    assert max_abs_diff(unravel(flat), tree) <= 1e-6
    assert float(loss) == pytest.approx(float(tree_loss), rel=1e-5)


UNRAVELS = {  # (unravel, flat params) pairs whose leaves are not the vector's consecutive, unchanged pieces
    'permuted': lambda p: (p[3:], p[:3]),
    'transposed': lambda p: p.reshape(2, 3).T,
    'scaled': lambda p: 10 * p,
    'tied': lambda p: {'a': p, 'b': p},
    'extra leaf': lambda p: {'params': p, 'stats': jnp.ones(3) * 2},
    'python number': lambda p: {'params': p, 'n': 3},
}


@pytest.mark.parametrize('name', list(UNRAVELS))
def test_an_unravel_that_is_not_a_cut_gets_the_flat_gradient(name):
    """The gradient's pieces are the leaves' gradients only for an unravel that cuts the vector in order, unchanged:
    any other one (found by review: silently wrong updates or errors) differentiates through it, as before."""
    unravel = UNRAVELS[name]

    def loss(tree):
        return sum(jnp.sum(jnp.sin(3.0 * x) * (i + 1)) for i, x in enumerate(jax.tree.leaves(tree)))

    opt = fused.adam(1e-1, eps=1.0)
    flat = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)
    step = adam_jax.make_train_step(loss, opt, unravel=unravel)
    params, state, value = step(jnp.copy(flat), opt.init(flat))  # (step donates its arguments)
    grad = jax.grad(lambda p: loss(unravel(p)))(flat)  # the old path: the gradient through unravel, then the step
    want, _ = jax.jit(opt.step)(flat, grad, opt.init(flat))
    np.testing.assert_allclose(np.asarray(params), np.asarray(want), rtol=0, atol=1e-7)
    assert float(jnp.max(jnp.abs(params - flat))) > 1e-2


def test_ravel_pytree_unravel_is_recognised_as_a_cut():
    from adam_jax.train_step import _cuts_into_pieces

    tree = {'a': jnp.ones((2, 3)), 'b': jnp.ones(4), 'c': jnp.ones(()), 'd': jnp.ones((1, 1)), 'e': jnp.ones(0)}
    flat, unravel = ravel_pytree(tree)
    assert _cuts_into_pieces(unravel, flat)
    assert _cuts_into_pieces(lambda p: (p[:2], p[2:]), flat)
    mixed, unravel_mixed = ravel_pytree({'a': jnp.ones(3), 'b': jnp.ones(2, jnp.bfloat16)})
    assert not _cuts_into_pieces(unravel_mixed, mixed)
    assert not any(_cuts_into_pieces(f, jnp.ones(6)) for f in UNRAVELS.values())


def test_update_and_malformed_parts_are_refused_by_name():
    for opt in (fused.adam(1e-2), fused.lion(1e-3)):
        flat = flat_of(pieces(0))
        with pytest.raises(TypeError, match='GradientParts .* are for step'):
            opt.update(GradientParts(pieces(1)), opt.init(flat), flat)
    with pytest.raises(TypeError, match='GradientParts.leaves must be a list of arrays'):
        GradientParts({'a': jnp.ones(3)}).concatenated(jnp.ones(3))
    with pytest.raises(TypeError, match=r'got params: ArrayImpl of shape \(2, 3\)'):
        GradientParts([jnp.ones(6)]).concatenated(jnp.ones((2, 3)))
