r"""Reddi, Kale & Kumar (2018), "On the Convergence of Adam and Beyond": Adam fails on a convex problem.

On :math:`\mathcal{F} = [-1, 1]` the losses are

.. math::

   f_t(x) = \begin{cases} 1010\,x & t \bmod 101 = 1 \\ -10\,x & \text{otherwise} \end{cases}

so the average gradient is :math:`10/101 > 0` and the best fixed point is :math:`x^* = -1`. With
:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.99` and :math:`\alpha_t = 0.5/\sqrt{t}`, Adam's rare large
gradient is forgotten by :math:`v_t` before it comes back, the many small ones dominate, and
:math:`x_t \to +1`; AMSGrad keeps :math:`\hat v_t = \max(\hat v_{t-1}, v_t)` and goes to :math:`-1`.
Each step is projected back onto :math:`[-1, 1]`. Adam is :func:`adam_jax.adam`; AMSGrad is
``optax.amsgrad`` (the maximum of the bias-corrected second moments).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_jax
from adam_jax.experiments.results import Curve, Result, Verdict

CLAIM = 'On the online problem of Reddi et al., Adam converges to x = +1 (the worst point), AMSGrad to x* = -1.'
B1, B2, PERIOD, BIG, SMALL = 0.9, 0.99, 101, 1010.0, -10.0


def gradient(t: jax.Array) -> jax.Array:
    """:math:`\\nabla f_t`, with t counted from 1."""
    return jnp.where(t % PERIOD == 1, BIG, SMALL)


def trajectory(tx: optax.GradientTransformation, steps: int, x0: float = 0.0) -> np.ndarray:
    """The projected iterates :math:`x_1, ..., x_T` of ``tx`` on the online problem."""

    def step(carry, t):
        x, state = carry
        updates, state = tx.update(gradient(t), state, x)
        x = jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0)
        return (x, state), x

    @jax.jit
    def run():
        x = jnp.asarray(x0, jnp.float32)
        return jax.lax.scan(step, (x, tx.init(x)), jnp.arange(1, steps + 1))[1]

    return np.asarray(run())


def average_regret(xs: np.ndarray) -> np.ndarray:
    r""":math:`R_t/t = \frac{1}{t}\sum_{s \le t} f_s(x_s) - f_s(x^*)`, with :math:`x^* = -1`."""
    t = np.arange(1, len(xs) + 1)
    g = np.where(t % PERIOD == 1, BIG, SMALL)
    return np.cumsum(g * (xs - (-1.0))) / t


def run(quick: bool = False, seed: int = 0, epochs: int | None = None, progress: bool = True) -> Result:
    """Runs both optimizers for 20,000 steps (quick) or 1,000,000 (``epochs`` overrides: steps / 1,000)."""
    del seed, progress  # deterministic, and a few seconds long
    steps = 1000 * epochs if epochs else (20_000 if quick else 1_000_000)
    schedule = lambda count: 0.5 / jnp.sqrt(count + 1.0)  # alpha_t = 0.5 / sqrt(t), t from 1
    every = max(1, steps // 200)
    curves, finals = [], {}
    for label, tx in (('Adam', adam_jax.adam(schedule, B1, B2)), ('AMSGrad', optax.amsgrad(schedule, B1, B2))):
        start = time.perf_counter()
        xs = trajectory(tx, steps)
        wall = time.perf_counter() - start
        regret = average_regret(xs)
        ts = list(range(every, steps + 1, every))
        finals[label] = float(np.mean(xs[-PERIOD:]))
        for group, values in (('iterate x_t', xs), ('average regret R_t / t', regret)):
            curves.append(
                Curve(
                    label=label,
                    x=ts,
                    loss=[float(values[t - 1]) for t in ts],
                    hparams={'b1': B1, 'b2': B2, 'alpha_t': '0.5/sqrt(t)'},
                    wall_time=wall,
                    group=group,
                )
            )
    holds = finals['Adam'] > 0.9 and finals['AMSGrad'] < -0.9
    evidence = (
        f'mean x over the last period after {steps} steps: Adam {finals["Adam"]:+.4f}, '
        f'AMSGrad {finals["AMSGrad"]:+.4f} (claim: > +0.9 and < -0.9).'
    )
    return Result(
        name='amsgrad',
        title='Reddi et al. counterexample: f_t = 1010x if t mod 101 = 1 else -10x' + (' [quick]' if quick else ''),
        curves=curves,
        verdict=Verdict(CLAIM, holds, evidence),
        config={'quick': quick, 'steps': steps, 'b1': B1, 'b2': B2, 'alpha_t': '0.5/sqrt(t)', 'x0': 0.0},
        x_label='iteration t',
        y_label='x_t  /  R_t / t',
        x_scale='log',
    )
