r"""Loshchilov & Hutter (2019), Fig. 2: with AdamW the best weight decay depends less on the step size.

A learning-rate x weight-decay grid on a small MLP (40-100-100-10, ReLU) trained on MNIST-1D
(generated offline by ``mnist1d``): Adam on the L2-regularised loss
(:math:`g_t \leftarrow g_t + \lambda\theta`, then Adam) against AdamW in the paper's form
(:func:`adam_jax.loshchilov_hutter_adamw`: :math:`\theta_t = \theta_{t-1} - \alpha\,\hat m_t/
(\sqrt{\hat v_t}+\epsilon) - \lambda\theta_{t-1}`, the decay not scaled by :math:`\alpha`).
For each step size we find the weight decay with the lowest final test loss; the claim holds if
that best decay moves over fewer decades across step sizes with AdamW than with Adam + L2.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from flax import nnx

from adam_jax.experiments import data as datasets
from adam_jax.experiments import models
from adam_jax.experiments.results import Curve, Result, Verdict
from adam_jax.experiments.train import Classification, init_model, train_grid

CLAIM = 'The best weight decay depends less on the learning rate with AdamW than with Adam + L2.'
LOG_LRS = (-4.0, -3.5, -3.0, -2.5, -2.0)
LOG_WDS = {  # L2 coefficients and per-step decays span the usual ranges of each form
    'adam-l2': (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0),
    'adamw-lh': (-7.0, -6.0, -5.0, -4.0, -3.0, -2.0),
}
LABELS = {'adam-l2': 'Adam + L2', 'adamw-lh': 'AdamW'}


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs the grid; ``quick``: the 3 largest step sizes, 32-unit layers, 8 epochs of 4,000 examples."""
    data = datasets.load('mnist1d')
    epochs = epochs or (8 if quick else 60)
    log_lrs = LOG_LRS[2:] if quick else LOG_LRS
    hidden = (32, 32) if quick else (100, 100)
    curves, rows, spread = [], [], {}
    model = init_model(lambda: models.MLP(40, hidden, 10, rngs=nnx.Rngs(seed)))
    for name, log_wds in LOG_WDS.items():
        points = list(itertools.product(log_lrs, log_wds))
        grid = {'learning_rate': [10**a for a, _ in points], 'weight_decay': [10**w for _, w in points]}
        r = train_grid(
            model, Classification(), name, grid, data,
            epochs=epochs, batch_size=128, seed=seed, progress=progress, desc=f'{LABELS[name]} grid',
        )  # fmt: skip
        test = r.test_loss[:, -1].reshape(len(log_lrs), len(log_wds))
        test = np.where(np.isfinite(test), test, np.inf)
        best_wd = [log_wds[int(np.argmin(row))] for row in test]
        spread[name] = (max(best_wd) - min(best_wd), best_wd)
        for i, a in enumerate(log_lrs):
            curves.append(
                Curve(
                    label=f'lr=1e{a:g}',
                    x=list(log_wds),
                    loss=[float(v) if math.isfinite(v) else math.nan for v in test[i]],
                    accuracy=[float(v) for v in r.test_accuracy[:, -1].reshape(test.shape)[i]],
                    hparams={'optimizer': name, 'learning_rate': 10**a, 'best_log10_weight_decay': best_wd[i]},
                    wall_time=r.wall_time,
                    group=LABELS[name],
                )
            )
        for j, (a, w) in enumerate(points):
            rows.append(
                {
                    'optimizer': name,
                    'log10_lr': a,
                    'log10_weight_decay': w,
                    'final_test_loss': float(r.test_loss[j, -1]),
                    'final_test_accuracy': float(r.test_accuracy[j, -1]),
                    'final_train_loss': float(r.train_loss[j, -1]),
                }
            )
    l2, w = spread['adam-l2'][0], spread['adamw-lh'][0]
    holds = None if l2 == w else w < l2
    evidence = (
        f'best log10(weight decay) per step size {[f"1e{a:g}" for a in log_lrs]}: '
        f'Adam + L2 {spread["adam-l2"][1]} (spread {l2:g} decades), AdamW {spread["adamw-lh"][1]} '
        f'(spread {w:g} decades).'
    )
    return Result(
        name='adamw-vs-l2',
        title=f'MNIST-1D MLP, test loss after {epochs} epochs vs weight decay' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, holds, evidence),
        config={
            'quick': quick,
            'seed': seed,
            'epochs': epochs,
            'hidden': hidden,
            'log10_lr': log_lrs,
            'log10_wd': LOG_WDS,
        },
        grid=rows,
        x_label='log10(weight decay)',
        y_label='test loss',
    )
