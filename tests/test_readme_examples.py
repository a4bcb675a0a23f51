"""The python blocks of the README section "Using adam_jax with Flax, optax and Orbax" run, in order."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np

import adam_jax  # noqa: F401  (imported before the test changes directory, whatever sys.path holds)

SECTION = 'Using adam_jax with Flax, optax and Orbax'


def _blocks():
    text = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    start = text.index(f'## {SECTION}\n')
    end = text.find('\n## ', start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)


def test_readme_section_examples_run(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f'README:{SECTION}', 'exec'), namespace)
    # What the examples claim: the loss fell, nothing was skipped, the checkpoint round-tripped.
    assert float(namespace['loss']) < 0.5 * float(namespace['first'])
    assert namespace['skipped'] == 0
    assert int(namespace['state'].step) == 10
    assert namespace['group_params']['step'].dtype == np.int32 and int(namespace['group_params']['step']) == 0
    saved = namespace['tx'].init(namespace['params'])
    assert jax.tree.structure(namespace['opt_state']) == jax.tree.structure(saved)
    assert namespace['opt_state'][0][0].mu['w'].dtype == jax.numpy.bfloat16
    assert (tmp_path / 'checkpoints' / 'step_100').is_dir()
    _fast_path_matches_nnx_optimizer(namespace)


def _fast_path_matches_nnx_optimizer(namespace: dict) -> None:
    """The fused NNX recipe against nnx.Optimizer with the composed chain, from the same initial params."""
    import jax.numpy as jnp
    from flax import nnx

    x, y = namespace['x'], namespace['y']
    model = namespace['MLP'](nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, adam_jax.adamw(1e-2, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(30)]
    fast = jax.tree.leaves(nnx.state(namespace['fast_model'], nnx.Param))
    reference = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert len(fast) == len(reference) == 4
    for a, b in zip(fast, reference):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    # the fast step's loss is that of the params before its last update, as the reference's last one
    np.testing.assert_allclose(float(namespace['fast_loss']), losses[-1], rtol=1e-6)
    assert losses[-1] < 0.5 * losses[0]
