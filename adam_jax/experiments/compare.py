"""Optimizers side by side on one task: each at the best step size of its own small grid.

Used by the paper's classification experiments and by ``adam-jax compare``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from flax import nnx

from adam_jax.experiments import data as datasets
from adam_jax.experiments import models, optimizers
from adam_jax.experiments.results import Curve, Result, Verdict
from adam_jax.experiments.train import Classification, GridRun, init_model, train_grid

# task name -> (data set, model factory(seed, quick)); the CLI's `compare --task`.
TASKS: dict[str, tuple[str, Callable[[int, bool], nnx.Module]]] = {
    'mnist-logreg': ('mnist', lambda seed, quick: models.LogisticRegression(784, 10, rngs=nnx.Rngs(seed))),
    'mnist-mlp': (
        'mnist',
        lambda seed, quick: models.MLP(784, (64, 64) if quick else (1000, 1000), 10, rngs=nnx.Rngs(seed)),
    ),
    'mnist-cnn': (
        'mnist',
        lambda seed, quick: (
            models.CNN((8, 8, 16), 64, rngs=nnx.Rngs(seed)) if quick else models.CNN(rngs=nnx.Rngs(seed))
        ),
    ),
    'digits-mlp': ('digits', lambda seed, quick: models.MLP(64, (100, 100), 10, rngs=nnx.Rngs(seed))),
    'mnist1d-mlp': ('mnist1d', lambda seed, quick: models.MLP(40, (100, 100), 10, rngs=nnx.Rngs(seed))),
}


def load_task_data(task: str, quick: bool) -> datasets.Dataset:
    data = datasets.load(TASKS[task][0])
    if quick:
        data = data.take(1024, 250 if task == 'mnist-cnn' else 500)
    return data.images() if task == 'mnist-cnn' else data


def search(
    task: str,
    names: Sequence[str],
    grids: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    epochs: int,
    quick: bool,
    seed: int = 0,
    batch_size: int = 128,
    l2: float = 0.0,
    schedule: str = 'constant',
    progress: bool = True,
    group: str = '',
    vectorize: bool = True,
) -> tuple[list[Curve], list[dict], dict[str, GridRun]]:
    """Trains every optimizer in ``names`` over its grid; returns the best curve of each, all grid rows, the runs."""
    data = load_task_data(task, quick)
    make_model = TASKS[task][1]
    model = init_model(lambda: make_model(seed, quick))
    curves, rows, runs = [], [], {}
    for name in names:
        grid = grids[name]
        run = train_grid(
            model,
            Classification(l2=l2),
            name,
            grid,
            data,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            schedule=schedule,
            progress=progress,
            desc=f'{task} {name}' + (f' {group}' if group else ''),
            vectorize=vectorize,
        )
        runs[name] = run
        best = run.best()
        curves.append(run.curve(best, f'{optimizers.label(name)} (lr={run.grid["learning_rate"][best]:g})', group))
        for i in range(len(run.grid['learning_rate'])):
            rows.append(
                {
                    'group': group,
                    'optimizer': name,
                    **run.point(i),
                    'final_train_loss': float(run.train_loss[i, -1]),
                    'mean_train_loss': float(np.mean(run.train_loss[i])),
                    'final_test_accuracy': float(run.test_accuracy[i, -1]),
                }
            )
    return curves, rows, runs


def speed(curve: Curve) -> float:
    """Mean training cost over the run (the area under the curve): lower means faster convergence."""
    return float(np.mean(curve.loss)) if np.all(np.isfinite(curve.loss)) else float('inf')


def compare(
    task: str,
    names: Sequence[str],
    *,
    epochs: int,
    learning_rates: Mapping[str, float] | None = None,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> Result:
    """``adam-jax compare``: each optimizer at its default (or given) learning rate on ``task``."""
    if task not in TASKS:
        raise ValueError(f'unknown task {task!r}; choose from: {", ".join(TASKS)}.')
    for name in names:
        optimizers.check_name(name)
    lrs = {name: (learning_rates or {}).get(name, optimizers.default_learning_rate(name)) for name in names}
    grids = {name: {'learning_rate': [lr]} for name, lr in lrs.items()}
    curves, rows, _ = search(task, names, grids, epochs=epochs, quick=quick, seed=seed, progress=progress)
    ranking = sorted(curves, key=speed)
    evidence = 'mean training cost over the run: ' + ', '.join(f'{c.label} {speed(c):.4f}' for c in ranking)
    return Result(
        name=f'compare-{task}',
        title=f'{task}: ' + ', '.join(names) + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(
            f'fastest on {task}: {ranking[0].label}'
            if np.isfinite(speed(ranking[0]))
            else f'no optimizer stayed finite on {task}',
            None,
            evidence,
            judged=False,
        ),
        config={'task': task, 'epochs': epochs, 'seed': seed, 'quick': quick, 'learning_rates': lrs},
        grid=rows,
        y_scale='log',
    )
