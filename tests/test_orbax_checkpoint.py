"""Optimizer state saved with Orbax mid-training, restored (in this process or a new one) continues bitwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import adam_jax
from tests.conftest import mixed_tree, noisy_quadratic_grad

BEFORE, AFTER = 5, 10


def build(kind):
    """A freshly built optimizer of each kind; the restore target is derived from it, not from the saved state."""
    if kind == 'adamw':
        return adam_jax.adamw(1e-2, weight_decay=0.1)
    if kind == 'lean_bf16':  # bfloat16 moments, the lean-state option of the core
        return adam_jax.adamw(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    if kind == 'lean_8bit':  # 8-bit block-wise moments (codes and absmax in the checkpoint)
        return adam_jax.adamw(1e-2, weight_decay=0.1, mu_dtype='int8', nu_dtype='uint8')
    if kind == 'wrapped':  # every state type this package adds, nested in optax wrappers
        inner = optax.inject_hyperparams(adam_jax.adam)(learning_rate=optax.cosine_decay_schedule(1e-2, 50))
        return adam_jax.skip_nonfinite(optax.chain(optax.clip_by_global_norm(1.0), inner, adam_jax.temporal_average()))
    raise ValueError(kind)


KINDS = ('adamw', 'lean_bf16', 'lean_8bit', 'wrapped')


def _params(kind):
    params = mixed_tree(jnp.bfloat16 if kind == 'lean_bf16' else jnp.float32)
    if kind == 'lean_8bit':  # leaves of >= 4096 elements are the ones stored in 8 bits
        params['big'] = jnp.linspace(-1.0, 1.0, 64 * 128, dtype=jnp.float32).reshape(64, 128)
    return params


def _stepper(tx):
    @jax.jit
    def step(params, state, t):
        updates, state = tx.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    return step


def _steps(step, params, state, start, count):
    trajectory = []
    for t in range(start, start + count):
        params, state = step(params, state, t)
        trajectory.append(params)
    return trajectory, state


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _raw(leaf):
    """The bytes of a leaf, as uint8 (bfloat16 survives an npz file this way)."""
    return np.frombuffer(np.asarray(leaf).tobytes(), np.uint8)


def _abstract_target(kind):
    tx = build(kind)
    params = jax.eval_shape(lambda: _params(kind))
    return {'params': params, 'opt_state': jax.eval_shape(tx.init, params)}


def _save_mid_training(kind, directory):
    tx = build(kind)
    step = _stepper(tx)
    params = _params(kind)
    trajectory, state = _steps(step, params, tx.init(params), 0, BEFORE)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory, {'params': trajectory[-1], 'opt_state': state})
    return step, trajectory[-1], state


def resume(kind, directory):
    """Restore into a freshly built optimizer and take AFTER more steps: the params of each."""
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(directory, _abstract_target(kind))
    return _steps(_stepper(build(kind)), restored['params'], restored['opt_state'], BEFORE, AFTER)


FRESH_PROCESS_KINDS = ('adamw', 'lean_bf16', 'lean_8bit')


def resume_main(root, out):
    """Entry point of the fresh process: resume and write the params and state to an npz."""
    arrays = {}
    for kind in FRESH_PROCESS_KINDS:
        trajectory, state = resume(kind, os.path.join(root, kind))
        for i, leaf in enumerate(jax.tree.leaves((trajectory, state))):
            arrays[f'{kind}/{i}'] = _raw(leaf)
    np.savez(out, **arrays)


@pytest.mark.parametrize('kind', KINDS)
def test_restored_state_continues_bitwise_in_process(kind, tmp_path):
    step, params, state = _save_mid_training(kind, tmp_path / kind)
    want, want_state = _steps(step, params, state, BEFORE, AFTER)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / kind, _abstract_target(kind))
    assert jax.tree.structure(restored['opt_state']) == jax.tree.structure(state)
    assert _bits(restored) == _bits({'params': params, 'opt_state': state})
    got, got_state = resume(kind, tmp_path / kind)
    assert len(got) == AFTER
    for a, b in zip(got, want):
        assert _bits(a) == _bits(b)
    assert _bits(got_state) == _bits(want_state)
    assert jax.tree.map(lambda x: x.dtype, got_state) == jax.tree.map(lambda x: x.dtype, state)


def test_restored_state_continues_bitwise_in_a_fresh_process(tmp_path):
    expected = {}
    for kind in FRESH_PROCESS_KINDS:
        step, params, state = _save_mid_training(kind, tmp_path / kind)
        trajectory, final_state = _steps(step, params, state, BEFORE, AFTER)
        expected[kind] = [_raw(leaf) for leaf in jax.tree.leaves((trajectory, final_state))]
    out = tmp_path / 'resumed.npz'
    root = Path(__file__).resolve().parents[1]
    code = f'from tests.test_orbax_checkpoint import resume_main; resume_main({str(tmp_path)!r}, {str(out)!r})'
    subprocess.run([sys.executable, '-c', code], cwd=root, check=True, timeout=300)
    with np.load(out) as resumed:
        for kind, leaves in expected.items():
            assert len([k for k in resumed.files if k.startswith(kind + '/')]) == len(leaves)
            for i, leaf in enumerate(leaves):
                np.testing.assert_array_equal(resumed[f'{kind}/{i}'], leaf, err_msg=f'{kind} leaf {i}')
