"""8-bit block-wise quantized moments (Dettmers et al. 2021) against references written here."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import quantization
from adam_jax.quantization import BlockQuantized, QuantizedArray


def _tree_value(bits: str) -> float:
    """The paper's dynamic tree data type, read bit by bit (magnitude bits only)."""
    if '1' not in bits:
        return 0.0
    e = bits.index('1')  # leading zeros: the decimal exponent
    fraction = bits[e + 1 :]  # after the indicator bit: a linear fraction
    k = len(fraction)
    f = int(fraction, 2) if k else 0
    low = 0.0 if e == len(bits) - 1 else 0.1
    return 10.0**-e * (low + (1 - low) * (f + 1) / 2**k)


def _reference_map(signed: bool) -> np.ndarray:
    """Value of each code: int8 codes -128..127 (sign and 7 magnitude bits) or uint8 codes 0..255."""
    if signed:
        return np.array([np.sign(c) * _tree_value(format(abs(c) % 128, '07b')) for c in range(-128, 128)])
    return np.array([_tree_value(format(c, '08b')) for c in range(256)])


@pytest.mark.parametrize('signed', [True, False])
def test_dynamic_map_is_the_papers_tree_type(signed):
    want = _reference_map(signed)
    got = quantization.dynamic_map(signed)
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=0)
    magnitudes = np.unique(np.abs(want))
    assert magnitudes[0] == 0 and magnitudes[-1] == 1.0
    assert magnitudes[1] == pytest.approx(1e-6 if signed else 1e-7)
    assert len(np.unique(want)) == (255 if signed else 256)


@pytest.mark.parametrize('signed', [True, False])
def test_quantize_picks_the_nearest_code_per_block(signed):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3 * 256 + 17) * np.exp(rng.uniform(-12, 0, size=3 * 256 + 17))
    x = x if signed else np.abs(x)
    x[:256] *= 1e-3  # blocks of very different scales
    table = _reference_map(signed)
    q = quantization.quantize(jnp.asarray(x, jnp.float32), BlockQuantized(signed=signed))
    assert q.codes.shape == x.shape and q.absmax.shape == (4,)
    padded = np.concatenate([x, np.zeros(4 * 256 - x.size)]).reshape(4, 256)
    absmax = np.abs(padded).max(axis=1)
    np.testing.assert_allclose(q.absmax, absmax, rtol=1e-6)
    normalized = (padded / absmax[:, None]).reshape(-1)[: x.size]
    dist = np.abs(table[None, :] - normalized[:, None])
    got_dist = dist[np.arange(x.size), np.asarray(q.codes).astype(np.int64) + (128 if signed else 0)]
    np.testing.assert_array_less(got_dist, dist.min(axis=1) + 1e-6)
    want = table[np.asarray(q.codes).astype(np.int64) + (128 if signed else 0)] * np.repeat(absmax, 256)[: x.size]
    np.testing.assert_allclose(quantization.dequantize(q), want, rtol=1e-6, atol=0)
    # The map's own values are fixed points: quantize(dequantize(q)) == q.
    again = quantization.quantize(quantization.dequantize(q), BlockQuantized(signed=signed))
    np.testing.assert_array_equal(again.codes, q.codes)


def test_8bit_adam_tracks_fp32_adam_within_bitsandbytes_bounds():
    """bitsandbytes' protocol: each step, fp32 optax.adam starts from the 8-bit run's params and
    dequantized state, so the bounds measure one step of quantization error, 50 times."""
    shapes = [(1024, 32), (1024, 1024), (1024, 4097)]
    key = jax.random.key(0)
    params = {f'w{i}': 0.1 * jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(shapes)}
    ref, ours = optax.adam(1e-3), adam_jax.adam(1e-3, mu_dtype='int8', nu_dtype='uint8')

    def dequantized(state, moment):
        return jax.tree.map(lambda q: q.dequantize(), optax.tree.get(state, moment), is_leaf=quantization.is_quantized)

    def body(carry, t):
        p8, s8, s_free = carry
        s_ref = optax.tree.set(
            ref.init(p8), count=optax.tree.get(s8, 'count'), mu=dequantized(s8, 'mu'), nu=dequantized(s8, 'nu')
        )
        g = jax.tree.map(lambda p: 0.01 * jax.random.normal(jax.random.fold_in(key, 100 + t), p.shape), p8)
        u, s_ref = ref.update(g, s_ref, p8)
        p_ref = optax.apply_updates(p8, u)
        # A stronger check than bitsandbytes': an fp32 state that is never reset to the 8-bit one.
        u, s_free = ref.update(g, s_free, p8)
        p_free = optax.apply_updates(p8, u)
        u, s8 = ours.update(g, s8, p8)
        p8 = optax.apply_updates(p8, u)
        stats = {}
        for moment in ('mu', 'nu'):
            got, want = dequantized(s8, moment), optax.tree.get(s_ref, moment)
            stats[moment] = jax.tree.map(lambda a, b: jnp.sum(~jnp.isclose(a, b, atol=3e-3, rtol=1e-3)), got, want)
            stats[moment + '_max_err'] = jax.tree.map(
                lambda a, b: jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)), got, want
            )
        err = jax.tree.map(lambda a, b: jnp.abs(a - b), p8, p_ref)
        stats['err'] = jax.tree.map(jnp.mean, err)
        stats['relerr'] = jax.tree.map(lambda e, b: jnp.mean(e / (jnp.abs(b) + 1e-9)), err, p_ref)
        stats['free_err'] = jax.tree.map(lambda a, b: jnp.mean(jnp.abs(a - b)), p8, p_free)
        stats['free_mismatch'] = jax.tree.map(
            lambda a, b: jnp.sum(~jnp.isclose(a.dequantize(), b, atol=3e-3, rtol=1e-3)),
            optax.tree.get(s8, 'mu'),
            optax.tree.get(s_free, 'mu'),
            is_leaf=quantization.is_quantized,
        )
        return (p8, s8, s_free), stats

    scan = jax.jit(lambda p: jax.lax.scan(body, (p, ours.init(p), ref.init(p)), jnp.arange(50)))
    (_, s8, _), stats = scan(params)
    for name in params:
        for moment in ('mu', 'nu'):
            assert isinstance(optax.tree.get(s8, moment)[name], QuantizedArray)  # really quantized
            assert int(np.max(stats[moment][name])) < 20, (name, moment)
            # Much tighter than atol=3e-3 (which is ~30% of max |m|): one step stays within 1% of the max.
            assert float(np.max(stats[moment + '_max_err'][name])) < 0.01, (name, moment)
        assert float(np.max(stats['err'][name])) < 6e-5, name
        assert float(np.max(stats['relerr'][name])) < 6e-4, name
        assert float(np.max(stats['free_err'][name])) < 6e-5, name
        assert int(np.max(stats['free_mismatch'][name])) < 20, name


def test_save_and_restore_in_the_middle_of_training_is_bitwise(tmp_path):
    opt = adam_jax.adamw(1e-2, weight_decay=1e-2, mu_dtype='int8', nu_dtype='uint8')
    params = {'w': jnp.linspace(-1, 1, 64 * 128).reshape(64, 128), 'b': jnp.zeros(16)}
    target = jax.tree.map(lambda p: jnp.cos(3 * p) + 0.5, params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), target_leaves)))(
            params
        )
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    target_leaves = jax.tree.leaves(target)
    state = opt.init(params)
    for _ in range(7):
        params, state = step(params, state)
    path = tmp_path / 'state.pkl'
    leaves, treedef = jax.tree.flatten((params, state))
    path.write_bytes(pickle.dumps([np.asarray(x) for x in leaves]))

    restored = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in pickle.loads(path.read_bytes())])
    for a, b in zip(jax.tree.leaves(restored), leaves):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert isinstance(optax.tree.get(restored[1], 'mu')['w'], QuantizedArray)
    p_run, s_run = params, state
    p_res, s_res = restored
    for _ in range(5):
        p_run, s_run = step(p_run, s_run)
        p_res, s_res = step(p_res, s_res)
    for a, b in zip(jax.tree.leaves((p_run, s_run)), jax.tree.leaves((p_res, s_res))):
        np.testing.assert_array_equal(a, b)
    assert step._cache_size() == 1


def test_small_leaves_stay_float32_and_block_size_is_configurable():
    params = {
        'small': jnp.ones((63, 65), jnp.bfloat16),  # 4095 elements
        'big': jnp.ones((64, 64), jnp.bfloat16),  # 4096 elements
        'odd': jnp.ones(5000),
        'cplx': jnp.ones(5000, jnp.complex64),
    }
    state = adam_jax.adam(1e-3, mu_dtype='int8', nu_dtype='uint8').init(params)
    mu, nu = optax.tree.get(state, 'mu'), optax.tree.get(state, 'nu')
    assert mu['small'].dtype == nu['small'].dtype == jnp.float32
    assert mu['big'].codes.dtype == jnp.int8 and nu['big'].codes.dtype == jnp.uint8
    assert mu['big'].codes.shape == (64, 64) and mu['big'].absmax.shape == (16,)
    assert mu['odd'].absmax.shape == (20,)  # ceil(5000 / 256)
    assert mu['cplx'].dtype == jnp.complex64 and nu['cplx'].dtype == jnp.float32
    spec = BlockQuantized(signed=True, block_size=64, min_size=100)
    state = adam_jax.adam(1e-3, mu_dtype=spec).init({'w': jnp.ones((10, 20))})
    assert optax.tree.get(state, 'mu')['w'].absmax.shape == (4,)  # ceil(200 / 64)


def test_bad_storage_requests_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match=r"mu_dtype='uint8' does not fit this moment; use 'int8'"):
        adam_jax.adam(1e-3, mu_dtype='uint8')
    with pytest.raises(ValueError, match=r"nu_dtype='int8' does not fit this moment; use 'uint8'"):
        adam_jax.adam(1e-3, nu_dtype='int8')
    with pytest.raises(ValueError, match='nu_dtype=float16 cannot hold the second moment'):
        adam_jax.adam(1e-3, nu_dtype=jnp.float16)
    with pytest.raises(ValueError, match="mu_dtype='int16' is not a storage precision"):
        adam_jax.adam(1e-3, mu_dtype='int16')
    with pytest.raises(ValueError, match='block_size must be a positive int, got 0'):
        BlockQuantized(block_size=0)


def test_float16_params_keep_nu_in_float32_so_small_gradients_do_not_blow_up():
    params = jnp.zeros(8, jnp.float16)
    opt = adam_jax.adam(1e-3)
    state = opt.init(params)
    assert optax.tree.get(state, 'nu').dtype == jnp.float32
    assert optax.tree.get(state, 'mu').dtype == jnp.float16
    g = jnp.full(8, 1e-4, jnp.float16)  # g**2 = 1e-8 is below float16's smallest subnormal
    for _ in range(3):
        updates, state = opt.update(g, state, params)
    # Adam's step is about -lr * sign(g) whatever the scale of g.
    np.testing.assert_allclose(np.asarray(updates, np.float32), -1e-3, rtol=2e-2)


def test_amsgrad_keeps_its_running_maximum_in_float32_for_float16_params():
    # Its maximum of v is kept like v itself: in float16 a maximum of g^2 ~ 2.5e-8 flushed to 0 and AMSGrad quietly
    # became Adam (found by review).
    for opt in (adam_jax.amsgrad(1.0), adam_jax.presets.pytorch.adam(lr=1.0, betas=(0.9, 0.9), amsgrad=True)):
        params = jnp.zeros(1, jnp.float16)
        state = opt.init(params)
        assert optax.tree.get(state, 'nu_max').dtype == jnp.float32
        for t in range(11):
            g = jnp.full(1, 5e-4 if t == 0 else 1e-5, jnp.float16)
            updates, state = opt.update(g, state, params)
        assert float(optax.tree.get(state, 'nu_max')[0]) > 1e-9


def test_bf16_state_matches_a_numpy_reference_with_rounded_moments():
    import ml_dtypes

    b1, b2, lr, eps = 0.9, 0.999, 1e-2, 1e-8
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((6, 50)).astype(np.float32)
    opt = adam_jax.adam(lr, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    p = jnp.zeros(50)
    state = opt.init(p)
    m = v = np.zeros(50, np.float32)
    p_ref = np.zeros(50, np.float64)
    for t, g in enumerate(grads, start=1):
        # The moment is computed in float32, stored in bfloat16, and the step uses the stored value.
        m = (b1 * m + (1 - b1) * g).astype(ml_dtypes.bfloat16).astype(np.float32)
        v = (b2 * v + (1 - b2) * g * g).astype(ml_dtypes.bfloat16).astype(np.float32)
        p_ref -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        updates, state = opt.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
        np.testing.assert_array_equal(optax.tree.get(state, 'mu').astype(jnp.float32), m)
    np.testing.assert_allclose(p, p_ref, rtol=1e-5, atol=1e-7)


def _tiny_spec_opt():
    """8-bit on every leaf of a small tree (min_size=0, blocks of 4) to exercise the contracts cheaply."""
    return adam_jax.adam(
        1e-2,
        mu_dtype=BlockQuantized(True, block_size=4, min_size=0),
        nu_dtype=BlockQuantized(False, block_size=4, min_size=0),
    )


def test_quantized_state_keeps_optax_contracts():
    params = {'w': jnp.linspace(-1.0, 1.0, 10).reshape(2, 5), 'b': jnp.ones(3)}
    grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
    opt = _tiny_spec_opt()
    state = opt.init(params)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(opt.init, params))

    @jax.jit
    def step(params, state, flag):
        # lax.cond needs identical state types on both branches.
        return jax.lax.cond(flag, lambda: opt.update(grads, state, params), lambda: (grads, state))

    updates, new_state = step(params, state, True)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == shapes
    # MultiSteps keeps the quantized state through accumulation steps.
    multi = optax.MultiSteps(opt, every_k_schedule=2)
    multi_update = jax.jit(multi.update)
    ms = multi.init(params)
    for _ in range(4):
        _, ms = multi_update(grads, ms, params)
    assert int(optax.tree.get(ms.inner_opt_state, 'count')) == 2
    assert multi_update._cache_size() == 1


def test_quantized_update_runs_under_vmap():
    opt = _tiny_spec_opt()
    batch = jnp.stack([jnp.linspace(-1.0, 1.0, 12) * (i + 1) for i in range(3)])
    states = jax.vmap(opt.init)(batch)
    assert optax.tree.get(states, 'mu').codes.shape == (3, 12)
    updates, _ = jax.jit(jax.vmap(opt.update))(batch, states, batch)
    one_step = jax.jit(lambda p: opt.update(p, opt.init(p), p)[0])
    for i in range(3):
        np.testing.assert_allclose(updates[i], one_step(batch[i]), rtol=1e-6)


_SHARDED_STEP = """
import jax, jax.numpy as jnp, optax, adam_jax
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((2,), ('d',))
rows = NamedSharding(mesh, P('d'))
params = {'w': jax.device_put(jnp.ones((64, 256)), rows)}
opt = adam_jax.adam(1e-3, mu_dtype='int8', nu_dtype='uint8')
state = opt.init(params)
assert optax.tree.get(state, 'mu')['w'].codes.sharding.spec == P('d')  # codes follow the leaf
# absmax: one per 256 elements of the row-major flattening; 32 rows per device = 32 whole blocks, so the eager
# init splits it the same way.
assert optax.tree.get(state, 'nu')['w'].absmax.sharding.spec == P('d'), optax.tree.get(state, 'nu')['w'].absmax.sharding
step = jax.jit(lambda p, s: opt.update(jax.tree.map(lambda x: 0.1 * x, p), s, p))
_, new = step(params, state)
mu = optax.tree.get(new, 'mu')['w']
assert mu.codes.sharding.spec[0] == 'd' and mu.absmax.sharding.spec[0] == 'd', (mu.codes.sharding, mu.absmax.sharding)
hlo = step.lower(params, state).compile().as_text()
assert not any(op in hlo for op in ('all-gather', 'all-to-all', 'collective-permute', 'all-reduce')), 'communication'
# state_shardings places codes and absmax the same way for a jitted init.
shardings = adam_jax.state_shardings(opt, params)
mu_sh = optax.tree.get(shardings, 'mu')['w']
assert mu_sh.codes.spec == P('d') and mu_sh.absmax.spec == P('d'), mu_sh
state2 = jax.jit(opt.init, out_shardings=shardings)(params)
assert optax.tree.get(state2, 'nu')['w'].absmax.sharding.spec == P('d')
_, new2 = step(params, state2)
assert step._cache_size() == 1
# A leaf split along its second axis cannot keep whole blocks per device: absmax is replicated (written P(None),
# as jit hands it back on explicit axes).
cols = {'w': jax.device_put(jnp.ones((64, 256)), NamedSharding(mesh, P(None, 'd')))}
col_sh = optax.tree.get(adam_jax.state_shardings(opt, cols), 'mu')['w']
assert col_sh.codes.spec == P(None, 'd') and col_sh.absmax.spec == P(None), col_sh
print('OK')
"""


def test_codes_and_absmax_of_a_sharded_leaf_stay_sharded_without_communication():
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', _SHARDED_STEP], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'OK', out.stderr[-3000:]


def test_one_overflowing_gradient_spoils_no_other_param_of_its_block():
    """An inf gradient, or a finite one whose square overflows float32 (v = inf), spoils only its own param, as
    with float32 state: the block's absmax is taken over its finite moments (an inf absmax made every code of
    the block 0, which dequantizes to 0 * inf = NaN for all 256 params)."""
    params = jnp.linspace(-1.0, 1.0, 4096, dtype=jnp.float32)
    grads = jnp.cos(3 * params)
    spoiled = {}
    for name, opt in [
        ('float32', adam_jax.adam(1e-2)),
        ('8-bit', adam_jax.adam(1e-2, mu_dtype='int8', nu_dtype='uint8')),
    ]:
        step = jax.jit(lambda p, s, g, opt=opt: (lambda u, s: (optax.apply_updates(p, u), s))(*opt.update(g, s, p)))
        p, s = params, opt.init(params)
        for t in range(4):
            p, s = step(p, s, grads.at[7].set(jnp.inf).at[300].set(1e20) if t == 1 else grads)
        spoiled[name] = np.flatnonzero(~np.isfinite(np.asarray(p)))
        if name == '8-bit':
            assert np.isfinite(np.asarray(s[0][0].nu.absmax)).all() and np.isfinite(np.asarray(s[0][0].mu.absmax)).all()
    assert spoiled['float32'].tolist() == [7]
    assert spoiled['8-bit'].tolist() == [7]


def test_derivatives_through_8bit_state_treat_it_as_a_constant():
    """jax.grad through several updates: 8-bit codes carry no derivative, so the state is a constant (what the
    same loop gives with stop_gradient on the state between steps), not a derivative through the scales alone."""
    w0 = jnp.linspace(-1, 1, 5000).reshape(50, 100) * 0.5
    x = jnp.linspace(0.1, 1, 100)

    def loss(w):
        return jnp.sum(jnp.sin(w @ x) ** 2)

    def meta(lr, stop):
        opt = adam_jax.adam(lr, mu_dtype='int8', nu_dtype='uint8')
        w, s = w0, opt.init(w0)
        for _ in range(3):
            u, s = opt.update(jax.grad(loss)(w), s, w)
            w, s = w + u, (jax.lax.stop_gradient(s) if stop else s)
        return loss(w)

    got, want = jax.grad(meta)(1e-2, False), jax.grad(meta)(1e-2, True)
    assert np.isfinite(float(got)) and float(got) == pytest.approx(float(want), rel=1e-6)
    one_step = jax.grad(
        lambda lr: loss(w0 + adam_jax.adam(lr).update(jax.grad(loss)(w0), adam_jax.adam(lr).init(w0), w0)[0])
    )
    eight_bit = adam_jax.adam(1.0, mu_dtype='int8', nu_dtype='uint8')
    one_step_8bit = jax.grad(lambda lr: loss(w0 + lr * eight_bit.update(jax.grad(loss)(w0), eight_bit.init(w0), w0)[0]))
    assert float(one_step_8bit(1e-2)) == pytest.approx(float(one_step(1e-2)), rel=1e-5)  # within a step: exact
