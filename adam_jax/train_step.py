"""A jitted train step that donates params and optimizer state, so the update happens in place.

Without donation every step allocates fresh params and moments (28 B/param of new memory for Adam in
float32) and copies into them: several times slower and up to twice the memory. ``make_train_step``
always donates; with a fused optimizer (:mod:`adam_jax.fused`) the step then runs the one-pass kernel
on the donated buffers.

Many leaves cost time twice: every leaf is an argument of the jitted step and one or more kernels per
leaf. Keeping the params as one flat vector (``jax.flatten_util.ravel_pytree``) and passing its
``unravel`` here makes the step see 1 leaf however many the model has: the loss gets the tree back
through ``unravel`` (slices of the vector). With a fused optimizer the gradient stays in the leaves the
backward pass computes (:class:`adam_jax.fused.GradientParts`), which the kernel reads in place; any other
optimizer gets it flat.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adam_jax import _checks
from adam_jax.fused.optimizer import FusedTransformation, GradientParts


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    unravel: Callable[[jax.Array], Any] | None = None,
    has_aux: bool = False,
) -> Callable[..., tuple]:
    r"""``step(params, opt_state, *batch) -> (params, opt_state, loss)``, jitted, params and state donated.

    One step of :math:`\theta_t = \theta_{t-1} + u_t`, with :math:`u_t` from ``optimizer`` and the
    gradient :math:`g_t = \nabla_\theta \mathcal{L}(\theta_{t-1}; \text{batch})`.

    Args:
      loss_fn: ``loss_fn(params, *batch)`` returning a scalar (or ``(scalar, aux)`` with ``has_aux``).
      optimizer: any optax transform; one with a ``step`` method (:func:`adam_jax.fused.adam`,
        :func:`adam_jax.fused.adamw`) applies its update in place through it.
      unravel: if given, ``params`` is a flat vector and ``loss_fn`` receives ``unravel(params)``
        (from ``flat, unravel = jax.flatten_util.ravel_pytree(params)``). The optimizer then sees one leaf:
        the same update for elementwise optimizers (Adam, AdamW), not for per-leaf statistics (LAMB's trust
        ratio, factored or block-quantized moments).
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns ``(params, state, loss, aux)``.

    The arguments ``params`` and ``opt_state`` are donated: do not use the arrays passed in after the
    call, use the ones it returns. ``params`` must be floating point (``jax.grad`` refuses integer leaves, even
    ones an ``optax.multi_transform`` would leave alone): keep integers out of the params tree. The batch is
    passed positionally.
    """
    if not callable(loss_fn):
        raise TypeError(f'loss_fn must be a function loss_fn(params, *batch), got {loss_fn!r}.')
    _checks.check_transformation('optimizer', optimizer)
    _checks.check_bool('has_aux', has_aux)
    if unravel is not None and not callable(unravel):
        raise TypeError(
            f'unravel must be None or the function from jax.flatten_util.ravel_pytree(params), got {unravel!r}.'
        )
    view = unravel if unravel is not None else (lambda params: params)
    fused_step = getattr(optimizer, 'step', None)

    # A fused step with flat params reads the gradients of the leaves where the backward pass leaves them
    # (GradientParts) rather than a concatenated flat gradient: a fresh buffer each step (64 MB at 16M params) whose
    # page faults took longer than the optimizer step on CPU.
    in_parts = unravel is not None and isinstance(optimizer, FusedTransformation)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, *batch):
        tree = view(params)
        if in_parts and all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(tree)):
            value, grads = jax.value_and_grad(lambda tree: loss_fn(tree, *batch), has_aux=has_aux)(tree)
            grads = GradientParts(jax.tree.leaves(grads))
        else:
            value, grads = jax.value_and_grad(lambda p: loss_fn(view(p), *batch), has_aux=has_aux)(params)
        if fused_step is not None:
            params, opt_state = fused_step(params, grads, opt_state)
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        if has_aux:
            loss, aux = value
            return params, opt_state, loss, aux
        return params, opt_state, value

    return step
