"""Reproductions of the Adam paper's experiments (and of AMSGrad's and AdamW's), on data that ships with packages.

Each experiment module has ``run(quick=False, seed=0, epochs=None, progress=True) -> Result``:
the measured curves, a results table and a :class:`Verdict` on the paper's claim computed from
those curves. ``quick=True`` shrinks the run to seconds (the test suite and the notebooks use it).
Needs the ``examples`` extra: ``pip install "adam_jax[examples]"``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from adam_jax.experiments.results import Curve, Result, Verdict

# experiment name -> module (imported on first use: the models import Flax, the data sets pandas)
EXPERIMENTS: dict[str, str] = {
    'logreg': 'adam_jax.experiments.logreg',
    'mlp': 'adam_jax.experiments.mlp',
    'cnn': 'adam_jax.experiments.cnn',
    'bias-correction': 'adam_jax.experiments.bias_correction',
    'amsgrad': 'adam_jax.experiments.amsgrad',
    'adamw-vs-l2': 'adam_jax.experiments.adamw_l2',
}

QUICK_ENV = 'ADAM_JAX_QUICK'


def quick_from_env() -> bool:
    """True when the environment variable ``ADAM_JAX_QUICK`` is set to anything but ``''``/``'0'`` (notebooks)."""
    return os.environ.get(QUICK_ENV, '') not in ('', '0')


def get(name: str) -> Callable[..., Result]:
    """The ``run`` function of experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f'unknown experiment {name!r}; choose from: {", ".join(EXPERIMENTS)}.')
    return importlib.import_module(EXPERIMENTS[name]).run


def reproduce(
    name: str, quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True
) -> Result:
    """Runs experiment ``name`` and returns its :class:`Result`."""
    if epochs is not None and epochs < 1:
        raise ValueError(f'epochs must be a positive integer, got {epochs!r}.')
    return get(name)(quick=quick, seed=seed, epochs=epochs, progress=progress)


__all__ = ['EXPERIMENTS', 'QUICK_ENV', 'Curve', 'Result', 'Verdict', 'get', 'quick_from_env', 'reproduce']
