"""The opening notebook executes without error, and every experiment has a notebook (executed in test_experiments)."""

from __future__ import annotations

import glob
import os

import pytest

pytest.importorskip('nbclient', reason='needs the notebooks extra')  # in the test extra, so CI has it

from tests.test_experiments import NOTEBOOKS, ROOT, execute_notebook  # noqa: E402


def test_every_experiment_and_notebook_are_paired():
    from adam_jax.experiments import EXPERIMENTS

    assert set(NOTEBOOKS) == set(EXPERIMENTS)
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb'))}
    assert on_disk == {*NOTEBOOKS.values(), '00_adam_from_transforms.ipynb'}
    for name, filename in NOTEBOOKS.items():
        assert f"experiments.reproduce('{name}'" in open(os.path.join(ROOT, 'notebooks', filename)).read()


def test_adam_from_transforms_notebook(tmp_path, monkeypatch):
    outputs = execute_notebook('00_adam_from_transforms.ipynb', tmp_path, monkeypatch)
    text = ''.join(o.get('text', '') for o in outputs)
    assert 'm_1 = 1, v_1 = 0.1, t = 1' in text  # (1 - b1) g_1 and (1 - b2) g_1^2 with g_1 = 10
    assert 'm_hat_1 = 10, v_hat_1 = 100' in text
    assert 'd_1 = 1 (without bias_correct: 3.162)' in text  # 1 / sqrt(0.1)
    assert 'theta_1 = 4.999' in text
    # theta^2 from 5 with alpha = 1e-3: Adam moves alpha per step, plain SGD alpha * g = 0.01
    for name in ('chain', 'adam_jax.adam', 'optax.adam'):
        assert f'{name:14s} [5.0, 4.999, 4.998]' in text
    assert f'{"sgd":14s} [5.0, 4.99, 4.98002]' in text
