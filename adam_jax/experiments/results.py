"""What an experiment returns: its curves, a table row per optimizer, and the verdict on the paper's claim."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any


@dataclasses.dataclass
class Curve:
    """One measured run (or the best run of a learning-rate search).

    Attributes:
      label: the legend entry, e.g. ``'Adam'``.
      x: the abscissa (epochs, iterations or step sizes), one value per point.
      loss: the training cost at each point (NaN where the run diverged).
      accuracy: held-out accuracy at each point, if the task has one.
      hparams: the settings of this run (learning rate, betas, ...).
      wall_time: seconds spent in this run, compile included.
      group: experiments with several panels put each curve in one.
    """

    label: str
    x: list[float]
    loss: list[float]
    accuracy: list[float] | None = None
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0
    group: str = ''

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def best_loss(self) -> float:
        finite = [v for v in self.loss if math.isfinite(v)]
        return min(finite) if finite else math.nan

    @property
    def final_accuracy(self) -> float | None:
        return None if not self.accuracy else self.accuracy[-1]


@dataclasses.dataclass
class Verdict:
    """The paper's claim and whether the measured curves support it.

    ``holds`` is ``True`` (reproduced), ``False`` (not reproduced on our data)
    or ``None`` (the numbers cannot decide, e.g. a tie on a coarse grid).
    ``evidence`` gives the measured numbers the decision was made from. ``judged=False`` marks a finding
    with no claim to judge (``adam-jax compare``'s ranking): its word is ``MEASURED``.
    """

    claim: str
    holds: bool | None
    evidence: str
    judged: bool = True

    @property
    def word(self) -> str:
        if not self.judged:
            return 'MEASURED'
        return {True: 'REPRODUCED', False: 'NOT REPRODUCED', None: 'INCONCLUSIVE'}[self.holds]


@dataclasses.dataclass
class Result:
    """Everything one experiment measured.

    ``curves`` are the rows of the results table and the lines of the figure;
    ``grid`` holds the raw numbers of a hyperparameter grid (one dict per run),
    written to the CSV file; ``config`` records the settings the run used.
    """

    name: str
    title: str
    curves: list[Curve]
    verdict: Verdict
    config: dict[str, Any]
    grid: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    x_label: str = 'epoch'
    y_label: str = 'training cost'
    x_scale: str = 'linear'
    y_scale: str = 'linear'
    y_clip: float | None = None  # draw values above y_clip x the panel's lowest as diverged

    def table(self) -> str:
        """The results table as fixed-width text."""
        header = f'{"run":34s} {"final loss":>11s} {"best loss":>11s} {"accuracy":>9s} {"wall s":>7s}'
        lines = [self.title, header, '-' * len(header)]
        for c in self.curves:
            acc = '' if c.final_accuracy is None else f'{c.final_accuracy:.4f}'
            name = (f'[{c.group}] ' if c.group else '') + c.label
            lines.append(f'{name[:34]:34s} {c.final_loss:11.4g} {c.best_loss:11.4g} {acc:>9s} {c.wall_time:7.1f}')
        lines.append(f'claim: {self.verdict.claim}')
        lines.append(f'verdict: {self.verdict.word}: {self.verdict.evidence}')
        return '\n'.join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out['verdict']['word'] = self.verdict.word
        return _finite_or_none(out)

    def save(self, out_dir: str) -> dict[str, str]:
        """Writes ``NAME.json`` (everything), ``NAME.csv`` (one row per point) and ``NAME.png``."""
        from adam_jax.experiments import plotting

        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.join(out_dir, self.name)
        with open(stem + '.json', 'w') as f:
            json.dump(self.to_dict(), f, indent=1)
        rows = self.grid or [
            {'group': c.group, 'run': c.label, 'x': x, 'loss': loss, 'accuracy': None if c.accuracy is None else a}
            for c in self.curves
            for x, loss, a in zip(c.x, c.loss, c.accuracy or [None] * len(c.x))
        ]
        with open(stem + '.csv', 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plotting.save_figure(self, stem + '.png')
        return {'json': stem + '.json', 'csv': stem + '.csv', 'png': stem + '.png'}


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: a diverged run's loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value
