"""Every notebook in notebooks/ executes without error in quick mode (ADAM_JAX_QUICK=1)."""

from __future__ import annotations

import glob
import os

import pytest

nbformat = pytest.importorskip('nbformat', reason='needs the notebooks extra')  # in the test extra, so CI has it
nbclient = pytest.importorskip('nbclient', reason='needs the notebooks extra')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb')))


def test_there_is_a_notebook_per_experiment():
    from adam_jax.experiments import EXPERIMENTS

    text = ''.join(open(path).read() for path in NOTEBOOKS)
    for name in EXPERIMENTS:
        assert f"experiments.reproduce('{name}'" in text, name
    assert any(os.path.basename(p).startswith('00_') for p in NOTEBOOKS)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv('ADAM_JAX_QUICK', '1')
    monkeypatch.setenv('PYTHONPATH', ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': ROOT}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])]
    assert not [o for o in outputs if o.get('output_type') == 'error']
    if 'reproduce(' in open(path).read():
        text = ''.join(o.get('text', '') for o in outputs)
        assert 'verdict:' in text and 'claim:' in text
