r"""Online problems on which the Adam family is known to succeed or fail.

Reddi, Kale & Kumar (2018), "On the Convergence of Adam and Beyond", Section 3:
on the feasible set :math:`\mathcal F = [-1, 1]`, the online linear losses

.. math::

   f_t(x) = \begin{cases} C x & t \bmod p = 1 \\ -x & \text{otherwise} \end{cases}

(Theorem 1 has :math:`p = 3`; their synthetic experiment, Section 5, scales it
to :math:`f_t(x) = 1010 x` for :math:`t \bmod 101 = 1`, else :math:`-10 x`)
are minimised in sum by :math:`x^* = -1`, yet Adam with :math:`\beta_1 = 0.9,
\beta_2 = 0.99` and :math:`\alpha_t = 0.5/\sqrt t` drifts to :math:`x = +1`:
the rare large gradient is forgotten by :math:`v_t` before it returns, so the
frequent small ones win. AMSGrad's non-decreasing :math:`\hat v_t` remembers it.

:class:`OnlineLinearProblem` runs any optimizer on it with one compiled
``jax.lax.scan``, projecting onto :math:`[-1, 1]` after every step.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OnlineLinearProblem:
    """:math:`f_t(x) = g_t x` on :math:`[-1, 1]` with :math:`g_t = ` ``big`` if
    :math:`t \\bmod` ``period`` :math:`= 1`, else ``small`` (:math:`t = 1, 2, \\dots`).

    The defaults are Reddi et al.'s synthetic experiment; ``period=3, big=C,
    small=-1`` is their Theorem 1.
    """

    period: int = 101
    big: float = 1010.0
    small: float = -10.0

    def gradient(self, t: chex.Array) -> chex.Array:
        """:math:`g_t = \\partial f_t / \\partial x`, constant in :math:`x`."""
        return jnp.where(t % self.period == 1, self.big, self.small)

    def loss(self, t: chex.Array, x: chex.Array) -> chex.Array:
        return self.gradient(t) * x

    @property
    def optimum(self) -> float:
        """The best fixed point in hindsight: the sign opposite to the period's summed gradient."""
        return -1.0 if self.big + (self.period - 1) * self.small > 0 else 1.0

    def run(
        self, optimizer: optax.GradientTransformation, steps: int, x0: float = 0.0, dtype: chex.ArrayDType = jnp.float32
    ) -> jax.Array:
        """The points after each step, :math:`x_2, \\dots, x_{T+1}` (shape ``[steps]``), of
        ``optimizer`` started at :math:`x_1 = ` ``x0``.

        Step :math:`t` plays :math:`x_t`, gets :math:`g_t` and sets :math:`x_{t+1} =
        \\Pi_{[-1,1]}(x_t + u_t)`, where :math:`u_t` is the optimizer's update.
        """

        def step(carry, t):
            x, state = carry
            updates, state = optimizer.update(self.gradient(t).astype(dtype), state, x)
            x = jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0)
            return (x, state), x

        @jax.jit
        def scan(x):
            return jax.lax.scan(step, (x, optimizer.init(x)), jnp.arange(1, steps + 1))[1]

        return scan(jnp.asarray(x0, dtype))

    def average_regret(self, xs: chex.Array, start: int = 2) -> jax.Array:
        r""":math:`\frac1n \sum_t f_t(x_t) - f_t(x^*)` over points ``xs`` played at steps
        :math:`t = ` ``start``, ``start + 1``, ... (``start=2`` for the output of :meth:`run`)."""
        t = jnp.arange(start, start + xs.shape[0])
        return jnp.mean(self.loss(t, xs) - self.loss(t, self.optimum))


def reddi_step_size(count: chex.Array) -> chex.Array:
    r""":math:`\alpha_t = 0.5 / \sqrt t` as an optax schedule (``count`` = t - 1)."""
    return 0.5 / jnp.sqrt(count + 1.0)
