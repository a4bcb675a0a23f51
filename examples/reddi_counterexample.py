"""Reddi et al. (2018)'s online counterexample: how many steps until Adam and AMSGrad part ways.

f_t(x) = 1010 x if t mod 101 == 1 else -10 x on [-1, 1], b1 = 0.9, b2 = 0.99, alpha_t = 0.5 / sqrt(t).
Prints, for each run length, the min / mean / max of x over the last period (101 steps).

    python examples/reddi_counterexample.py [--x0 0.0] [--float64]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import adam_jax
from adam_jax.presets import pytorch as torch_presets
from adam_jax.problems import OnlineLinearProblem, reddi_step_size

OPTIMIZERS = {
    'adam': adam_jax.adam(reddi_step_size, 0.9, 0.99),
    'amsgrad (optax)': adam_jax.amsgrad(reddi_step_size, 0.9, 0.99),
    'amsgrad (pytorch)': torch_presets.adam(reddi_step_size, (0.9, 0.99), amsgrad=True),
    'amsgrad (paper)': adam_jax.amsgrad(reddi_step_size, 0.9, 0.99, bias_correction_mu=False, bias_correction_nu=False),
}
PERIODS = (40, 60, 80, 100, 110, 120, 150, 200, 400, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--x0', type=float, default=0.0)
    parser.add_argument('--float64', action='store_true')
    args = parser.parse_args()
    jax.config.update('jax_enable_x64', args.float64)
    dtype = jnp.float64 if args.float64 else jnp.float32
    problem = OnlineLinearProblem()
    runs = {name: problem.run(opt, PERIODS[-1] * problem.period, args.x0, dtype) for name, opt in OPTIMIZERS.items()}
    print(f'x over the last period (min / mean / max), x_1 = {args.x0}, {jnp.dtype(dtype).name}')
    print(f'{"steps":>7} ' + ' '.join(f'{name:>26}' for name in runs))
    for periods in PERIODS:
        end = periods * problem.period
        cells = []
        for xs in runs.values():
            last = xs[end - problem.period : end]
            cells.append(f'{float(last.min()):+.3f} / {float(last.mean()):+.3f} / {float(last.max()):+.3f}')
        print(f'{end:>7} ' + ' '.join(f'{c:>26}' for c in cells))


if __name__ == '__main__':
    main()
