"""The `adam-jax` command line: outputs written, bad arguments answered with exit status 2 and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('mlxtend', reason='needs the examples extra')  # listed in the test extra, so CI has it

from adam_jax import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    'argv, message',
    [
        (['reproduce', 'nope'], "unknown experiment 'nope'"),
        (['reproduce', 'amsgrad', '--epochs', '-1'], 'must be a positive integer'),
        (['reproduce', 'amsgrad', '--epochs', 'x'], 'must be a positive integer'),
        (['reproduce', 'amsgrad', '--seed', '1.5'], 'must be an integer'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam,lion'], "--optimizers: unknown optimizer 'lion'"),
        (['compare', '--task', 'imagenet', '--optimizers', 'adam'], "--task: unknown task 'imagenet'"),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--epochs', '-2'], 'must be a positive integer'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--lr', 'sgd=0.1'], "'sgd' is not among"),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--lr', 'adam=-1'], 'must be a positive finite'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--lr', 'adam=inf'], 'must be a positive finite'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--lr', 'adam=1e-3,adam=5'], 'given twice'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam,adam'], 'a name is given twice'),
        # A bad --out is refused before any training (it used to fail with a traceback after the run).
        (['reproduce', 'amsgrad', '--out', __file__], 'argument --out: cannot use'),
        (['compare', '--task', 'digits-mlp', '--optimizers', 'adam', '--out', __file__ + '/sub'], 'argument --out'),
        (['compare', '--task', 'digits-mlp', '--optimizers', ','], 'at least one'),
        ([], 'required'),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert 'Traceback' not in err


def test_lr_names_are_stripped_like_optimizer_names():
    lrs = cli._parse_lrs(cli.build_parser(), ' adam=1e-3, adamw =2e-3', ['adam', 'adamw'])
    assert lrs == {'adam': 1e-3, 'adamw': 2e-3}


def test_compare_writes_table_figure_and_numbers(tmp_path, capsys):
    argv = ['compare', '--task', 'digits-mlp', '--optimizers', 'adam,sgd-nesterov', '--epochs', '2']
    assert cli.main([*argv, '--lr', 'adam=3e-3', '--out', str(tmp_path), '--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'Adam (lr=0.003)' in out and 'SGD Nesterov (lr=0.05)' in out
    assert 'claim: fastest on digits-mlp: ' in out and 'verdict: MEASURED: ' in out  # a ranking, no claim to judge
    data = json.loads((tmp_path / 'compare-digits-mlp.json').read_text())
    assert [c['hparams']['learning_rate'] for c in data['curves']] == [3e-3, 0.05]  # no float32 noise in the files
    assert '0.003,' in (tmp_path / 'compare-digits-mlp.csv').read_text()
    for c in data['curves']:
        assert len(c['loss']) == 2 and c['loss'][-1] < 2.3  # two epochs, below the uniform guess ln 10
    assert (tmp_path / 'compare-digits-mlp.png').stat().st_size > 10_000
    assert (tmp_path / 'compare-digits-mlp.csv').read_text().count('\n') == 3


def test_python_m_adam_jax_reproduce_runs_end_to_end(tmp_path):
    """The README's first command, minus the install: `python -m adam_jax reproduce amsgrad --quick`."""
    proc = subprocess.run(
        [sys.executable, '-m', 'adam_jax', 'reproduce', 'amsgrad', '--quick', '--out', str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'verdict: REPRODUCED' in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ['amsgrad.csv', 'amsgrad.json', 'amsgrad.png']
