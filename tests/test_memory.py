"""adam_jax.state_nbytes: bytes of optimizer state, and the lean-state acceptance ratios."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import adam_jax

# A 16M-parameter model whose leaves all have >= 4096 elements (as in the acceptance).
MODEL = {f'layer{i}': jax.ShapeDtypeStruct((1024, 1024), jnp.float32) for i in range(16)}
MODEL['embed'] = jax.ShapeDtypeStruct((64, 1024), jnp.float32)
N = 16 * 1024 * 1024 + 64 * 1024


def _nbytes(**storage):
    return adam_jax.state_nbytes(jax.eval_shape(adam_jax.adam(1e-3, **storage).init, MODEL))


def test_state_bytes_by_kind_for_a_16m_parameter_model():
    fp32, bf16, q8 = (
        _nbytes(),
        _nbytes(mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
        _nbytes(mu_dtype='int8', nu_dtype='uint8'),
    )
    assert fp32.by_kind == {'float32': 2 * 4 * N, 'int32': 4}
    assert bf16.by_kind == {'bfloat16': 2 * 2 * N, 'int32': 4}
    blocks = 16 * (1024 * 1024 // 256) + 64 * 1024 // 256
    assert q8.by_kind == {'absmax': 2 * 4 * blocks, 'int8 codes': N, 'uint8 codes': N, 'int32': 4}
    assert fp32.total == sum(fp32.by_kind.values())
    # Acceptance: 8-bit <= 0.27x, bf16 <= 0.51x of fp32 Adam state.
    assert q8.total / fp32.total <= 0.27
    assert bf16.total / fp32.total <= 0.51


def test_factored_state_and_concrete_arrays():
    params = {'w': jnp.zeros((256, 512)), 'b': jnp.zeros(512)}
    state = adam_jax.adam(1e-3, mu_dtype='int8', nu_dtype=adam_jax.Factored()).init(params)
    got = adam_jax.state_nbytes(state)
    assert got.by_kind == {
        'absmax': 4 * 512,  # 256 * 512 / 256 blocks
        'factored float32': 4 * (256 + 512),
        'float32': 2 * 4 * 512,  # the bias: too small to quantize or factor
        'int32': 4,
        'int8 codes': 256 * 512,
    }
    assert got.total == sum(got.by_kind.values())


def test_typed_prng_keys_and_python_numbers_are_counted():
    # optax.add_noise keeps a typed key (its dtype is no NumPy dtype), flax's TrainState starts with step=0.
    import optax

    opt = optax.chain(optax.add_noise(0.1, 0.55, 0), adam_jax.adam(1e-3))
    params = {'w': jnp.ones(3)}
    for state in (opt.init(params), jax.eval_shape(opt.init, params)):
        got = adam_jax.state_nbytes(state)
        assert got.by_kind == {'float32': 24, 'int32': 8, 'key<fry>': 8} and got.total == 40
    assert adam_jax.state_nbytes({'step': 0, 'x': jnp.ones(2)}).by_kind == {'float32': 8, 'int32': 4}
