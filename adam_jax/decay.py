r"""Decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax._tree import cast, check_same_structure, is_none
from adam_jax.moments import reject_moments


class DecoupledDecayState(NamedTuple):
    """State of :func:`decoupled_decay` with a schedule: the count of steps taken, at which it is evaluated next."""

    count: chex.Array


def is_no_decay(weight_decay: Any) -> bool:
    r"""Whether ``weight_decay`` is a Python number equal to 0: then :func:`decoupled_decay` leaves the direction as it
    is, as ``optax.add_decayed_weights`` does (adding :math:`0 \cdot \theta` would turn an infinite param into NaN).
    An array, even a zero one, is added as any rate is (``optax.inject_hyperparams`` passes arrays, traced under jit
    and not in eager calls: the two then agree)."""
    return isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool) and weight_decay == 0


def decay_rate(weight_decay: optax.ScalarOrSchedule, state: Any) -> tuple[Any, Any]:
    """(this step's rate, the next state) for the state of :func:`decoupled_decay` (``optax.masked``'s around it
    too): a schedule is evaluated at the state's count, which then advances; a number is itself, its state empty."""
    if not callable(weight_decay):
        return weight_decay, state
    if isinstance(state, optax.MaskedState):
        rate, inner = decay_rate(weight_decay, state.inner_state)
        return rate, state._replace(inner_state=inner)
    if not isinstance(state, DecoupledDecayState):
        raise TypeError(
            'decoupled_decay with a weight_decay schedule needs the state its init made (adam_jax.DecoupledDecayState, '
            f'the count of steps); got {type(state).__name__}. A state made with a number as weight_decay (an older '
            'checkpoint, say) has no count: initialize anew, or rebuild the state with DecoupledDecayState(count=t).'
        )
    return weight_decay(state.count), DecoupledDecayState(count=optax.safe_increment(state.count))


def decoupled_decay(
    weight_decay: optax.ScalarOrSchedule,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Add :math:`\lambda \theta_{t-1}` to the direction.

    .. math::

       d_t \leftarrow d_t + \lambda \theta_{t-1}

    Followed by ``optax.scale_by_learning_rate(lr)`` this is AdamW as optax
    and PyTorch write it: :math:`\theta_t = \theta_{t-1} - \eta_t (d_t +
    \lambda\theta_{t-1})`, i.e. the decay is scaled by the whole learning rate.
    Loshchilov & Hutter's Algorithm 2 scales the decay by the schedule
    multiplier :math:`\eta_t` only, :math:`\theta_t = \theta_{t-1} - \eta_t
    (\alpha d_t + \lambda\theta_{t-1})`; that form is
    :func:`adam_jax.loshchilov_hutter_adamw` (``optax.scale(alpha)`` before this
    transform, the schedule multiplier after it).

    Args:
      weight_decay: :math:`\lambda \ge 0`, or a schedule :math:`\lambda_t` (a function of the step count, as
        optax's schedules; the state then counts the steps). A Python number equal to 0 (an ``int`` or ``float``,
        ``np.float64`` included) leaves the direction unchanged; an array is added as any rate, 0 included.
      mask: a tree of booleans (or a function of the params returning one)
        choosing the leaves to decay; other leaves pass through unchanged.
    """
    _checks.check_rate_or_schedule('weight_decay', weight_decay)
    _checks.check_mask('mask', mask)
    skip = is_no_decay(weight_decay)  # known when the transform is made

    def init(params: optax.Params) -> optax.EmptyState | DecoupledDecayState:
        del params
        if callable(weight_decay):
            return DecoupledDecayState(count=jnp.zeros([], jnp.int32))
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        reject_moments(updates, 'decoupled_decay')
        if params is None:
            raise ValueError('decoupled_decay needs the params: call update(updates, state, params).')
        check_same_structure('updates', updates, 'params', params)  # named, instead of broadcasting wd * p

        rate, state = decay_rate(weight_decay, state)

        def add(u, p):
            # at least the params' precision: a bfloat16 update would round lambda p away next to the direction
            if u is None:
                return None
            return cast(u if skip else u + rate * p, jnp.result_type(u.dtype, p.dtype))

        return jax.tree.map(add, updates, params, is_leaf=is_none), state

    tx = optax.GradientTransformationExtraArgs(init, update)
    if mask is not None:
        return optax.masked(tx, mask)
    return tx
