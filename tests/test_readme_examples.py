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
    assert len(blocks) == 4
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
