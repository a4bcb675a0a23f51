r"""Skip an optimizer step whose gradients are not finite.

A NaN or Inf in :math:`g_t` would enter :math:`m_t` and :math:`v_t` and stay there for ever
(:math:`\beta \cdot \text{NaN} = \text{NaN}`). :func:`skip_nonfinite` drops such a step as if it had
never been taken: the inner state is kept bit for bit, the returned updates leave the params bit for
bit unchanged, and the number of skipped steps is counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._placement import replicated_zero
from adam_jax.moments import Moments, saturating_increment


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`."""

    inner_state: Any
    num_skipped: chex.Array  # int32, saturating: steps skipped so far
    last_skipped: chex.Array  # bool: whether the latest step was skipped


def all_finite(tree: Any) -> chex.Array:
    """True if every leaf of ``tree`` is free of NaN and Inf (a scalar bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _no_move(u: chex.Array) -> chex.Array:
    # x + (-0.0) == x bit for bit for every x (+0.0 included), unlike x + 0.0, which turns -0.0 into +0.0; for
    # complex x both parts need the -0.0 (a complex -0.0 alone is -0 + 0j, which turns an imaginary -0 into +0).
    if jnp.iscomplexobj(u):
        return jnp.full_like(u, jax.lax.complex(-0.0, -0.0))
    return jnp.full_like(u, -0.0)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    r"""Wrap ``inner`` so that a step with a non-finite gradient changes nothing.

    .. math::

       (u_t, s_t) = \begin{cases} \text{inner}(g_t, s_{t-1}) & g_t \text{ finite} \\
       (-0, s_{t-1}) & \text{otherwise} \end{cases}

    On a skipped step the updates are negative zeros, so ``optax.apply_updates`` returns the params
    bitwise unchanged (``x + (-0.0) == x`` for every ``x``, including ``+0.0``), and every leaf of the
    inner state (moments, step count, injected hyperparameters) is kept bitwise. The next finite step
    is therefore exactly the step a run without the bad gradient would have taken.

    Unlike ``optax.apply_if_finite`` there is no limit after which non-finite steps are applied, and
    the wrapped state counts all skipped steps in ``num_skipped`` (read it with
    ``optax.tree.get(state, 'num_skipped')``) and flags the latest in ``last_skipped``.

    Only the gradient is inspected; ``inner`` runs on every step (inside ``jit`` both branches are
    computed and one is selected, which keeps the step free of host synchronisation).
    """
    _checks.check_transformation('inner', inner)

    def init(params: optax.Params) -> SkipNonfiniteState:
        return SkipNonfiniteState(
            inner_state=inner.init(params),
            num_skipped=replicated_zero(params, jnp.int32),  # on the params' mesh or device, like the step count
            last_skipped=replicated_zero(params, jnp.bool_),
        )

    def update(updates, state, params=None, **extra_args):
        if isinstance(updates, Moments):
            raise TypeError(
                'skip_nonfinite wraps a whole optimizer (it takes the gradients), but it was placed inside the moment '
                'stage. Wrap the whole chain, e.g. skip_nonfinite(adam_jax.adam(1e-3)).'
            )
        finite = all_finite(updates)
        new_updates, new_inner = optax.with_extra_args_support(inner).update(
            updates, state.inner_state, params, **extra_args
        )
        if isinstance(new_updates, Moments):
            raise TypeError(
                'skip_nonfinite wraps a whole optimizer (its updates must be params-shaped), but the transform it '
                'wraps ends in the moment stage. Wrap the whole chain, e.g. skip_nonfinite(adam_jax.adam(1e-3)).'
            )
        new_updates = jax.tree.map(lambda u: jnp.where(finite, u, _no_move(u)), new_updates)
        new_inner = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state)
        num_skipped = jnp.where(finite, state.num_skipped, saturating_increment(state.num_skipped))
        return new_updates, SkipNonfiniteState(new_inner, num_skipped, jnp.logical_not(finite))

    return optax.GradientTransformationExtraArgs(init, update)
