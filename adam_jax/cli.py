"""The ``adam-jax`` command line: reproduce the paper's experiments, or compare optimizers on a task.

    adam-jax reproduce NAME [--quick] [--out DIR] [--seed S] [--epochs N]
    adam-jax compare --task TASK --optimizers adam,adamw,sgd-nesterov [--epochs N] [--lr name=value,...]
    adam-jax list

Bad arguments print a one-line message and exit with status 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from adam_jax.experiments import EXPERIMENTS

EXPERIMENT_NAMES = tuple(EXPERIMENTS)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}')
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be an integer, got {text!r}') from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='adam-jax', description="Reproduce the Adam paper's experiments and compare optimizers."
    )
    sub = parser.add_subparsers(dest='command', required=True, metavar='{reproduce,compare,list}')

    rep = sub.add_parser('reproduce', help='run one of the paper experiments and judge its claim')
    rep.add_argument('name', help='one of: ' + ', '.join(EXPERIMENT_NAMES))
    rep.add_argument('--quick', action='store_true', help='a run of seconds (small data, narrow nets, few steps)')
    rep.add_argument('--out', default='runs', help='folder for NAME.png, NAME.json, NAME.csv (default: runs)')
    rep.add_argument(
        '--seed', type=_int, default=0, help='seed of the initial weights, minibatches, dropout (amsgrad has none)'
    )
    rep.add_argument(
        '--epochs', type=_positive_int, default=None, help='override the number of epochs (amsgrad: thousands of steps)'
    )
    rep.add_argument('--no-progress', action='store_true', help='hide the progress bars')

    cmp = sub.add_parser('compare', help='train one task with several optimizers side by side')
    cmp.add_argument('--task', required=True, help='one of the tasks listed by `adam-jax list`')
    cmp.add_argument('--optimizers', required=True, help='comma-separated names, e.g. adam,adamw,sgd-nesterov')
    cmp.add_argument('--epochs', type=_positive_int, default=5, help='epochs per optimizer (default 5)')
    cmp.add_argument('--lr', default='', help='learning rates, e.g. adam=3e-4,sgd-nesterov=0.1 (default: each default)')
    cmp.add_argument('--quick', action='store_true', help='small data (and narrower nets for the MNIST tasks)')
    cmp.add_argument('--out', default='runs', help='folder for the figure, JSON and CSV (default: runs)')
    cmp.add_argument('--seed', type=_int, default=0)
    cmp.add_argument('--no-progress', action='store_true', help='hide the progress bars')

    sub.add_parser('list', help='list experiments, tasks and optimizers')
    return parser


def _parse_lrs(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> dict[str, float]:
    lrs = {}
    for item in filter(None, text.split(',')):
        name, _, value = item.partition('=')
        name = name.strip()
        if name not in known:
            parser.error(f'--lr: {name!r} is not among --optimizers ({", ".join(known)})')
        if name in lrs:
            parser.error(f'--lr: {name} is given twice')
        try:
            lrs[name] = float(value)
        except ValueError:
            parser.error(f'--lr: the learning rate of {name} must be a number, got {value!r}')
        if not (lrs[name] > 0 and math.isfinite(lrs[name])):
            parser.error(f'--lr: the learning rate of {name} must be a positive finite number, got {value!r}')
    return lrs


def _check_out(parser: argparse.ArgumentParser, out: str) -> None:
    """--out must be a folder that exists or can be made: checked before a run of minutes, not after it."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        parser.error(f'argument --out: cannot use {out!r} as the output folder ({e.strerror or e})')


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'list':
        from adam_jax.experiments.compare import TASKS
        from adam_jax.experiments.optimizers import OPTIMIZERS

        print('experiments:', ', '.join(EXPERIMENT_NAMES))
        print('tasks:      ', ', '.join(TASKS))
        print('optimizers: ', ', '.join(OPTIMIZERS))
        return 0
    try:  # the experiments need the `examples` extra; say so instead of a traceback
        import matplotlib  # noqa: F401
        import tqdm  # noqa: F401

        from adam_jax import experiments
        from adam_jax.experiments import compare, optimizers
    except ImportError as e:
        print(f'adam-jax: {e}. Install the extra: pip install "adam_jax[examples]"', file=sys.stderr)
        return 1
    if args.command == 'reproduce':
        if args.name not in EXPERIMENT_NAMES:
            parser.error(f'unknown experiment {args.name!r}; choose from: {", ".join(EXPERIMENT_NAMES)}')
        _check_out(parser, args.out)
        result = experiments.reproduce(
            args.name, quick=args.quick, seed=args.seed, epochs=args.epochs, progress=not args.no_progress
        )
    else:
        names = [n.strip() for n in args.optimizers.split(',') if n.strip()]
        if not names:
            parser.error('--optimizers: give at least one name')
        if args.task not in compare.TASKS:
            parser.error(f'--task: unknown task {args.task!r}; choose from: {", ".join(compare.TASKS)}')
        unknown = [n for n in names if n not in optimizers.OPTIMIZERS]
        if unknown:
            parser.error(
                f'--optimizers: unknown optimizer {unknown[0]!r}; choose from: {", ".join(optimizers.OPTIMIZERS)}'
            )
        if len(set(names)) < len(names):
            parser.error(f'--optimizers: a name is given twice ({args.optimizers})')
        learning_rates = _parse_lrs(parser, args.lr, names)
        _check_out(parser, args.out)
        result = compare.compare(
            args.task,
            names,
            epochs=args.epochs,
            learning_rates=learning_rates,
            quick=args.quick,
            seed=args.seed,
            progress=not args.no_progress,
        )
    print(result.table())
    paths = result.save(args.out)
    print('wrote ' + ', '.join(paths.values()))
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
