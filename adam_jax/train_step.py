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
import jax.extend.core as jex
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
        ratio, factored or block-quantized moments). With a fused optimizer, and an ``unravel`` that cuts the
        float32 vector into consecutive pieces unchanged (as ``ravel_pytree``'s does for a float32 tree; checked on
        its traced program), the loss is differentiated for the tree and the step gets the leaves' gradients as
        :class:`adam_jax.fused.GradientParts`; any other ``unravel`` is differentiated through.
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
    # (GradientParts) rather than a concatenated flat gradient: a fresh buffer each step (64 MiB at 16M params) whose
    # page faults took longer than the optimizer step on CPU.
    in_parts = unravel is not None and isinstance(optimizer, FusedTransformation)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, *batch):
        if in_parts and _cuts_into_pieces(unravel, params):
            value, grads = jax.value_and_grad(lambda tree: loss_fn(tree, *batch), has_aux=has_aux)(unravel(params))
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


def _cuts_into_pieces(unravel: Callable[[jax.Array], Any], params: Any) -> bool:
    """Whether ``unravel(params)`` provably cuts the float32 vector ``params`` into consecutive pieces, in order, each
    unchanged (as ``jax.flatten_util.ravel_pytree``'s unravel does for a float32 tree): then the gradients of its
    leaves are the pieces of the flat gradient. Read off the traced program (splits, slices, reshapes); anything else
    (a permutation, a scale, tied or extra leaves, another dtype) is not, and gets the flat gradient."""
    if getattr(params, 'dtype', None) != jnp.float32 or getattr(params, 'ndim', None) != 1:
        return False
    try:
        closed = jax.make_jaxpr(unravel)(jax.ShapeDtypeStruct(params.shape, params.dtype))
    except Exception:  # an unravel that does not trace on its own: the flat gradient's path says what is wrong
        return False
    jaxpr = closed.jaxpr
    ranges = {jaxpr.invars[0]: (0, params.shape[0])}  # variable -> (start, size) in the flat vector
    for eqn in jaxpr.eqns:
        if len(eqn.invars) != 1 or isinstance(eqn.invars[0], jex.Literal) or eqn.invars[0] not in ranges:
            return False
        start, size = ranges[eqn.invars[0]]
        name, attrs, one_dim = eqn.primitive.name, eqn.params, eqn.invars[0].aval.ndim == 1
        if name == 'split' and one_dim and attrs['axis'] == 0:
            for out, piece in zip(eqn.outvars, attrs['sizes']):
                ranges[out] = (start, piece)
                start += piece
        elif name == 'slice' and one_dim and attrs['strides'] in (None, (1,)):
            (a,), (b,) = attrs['start_indices'], attrs['limit_indices']
            ranges[eqn.outvars[0]] = (start + a, b - a)
        elif (name == 'reshape' and attrs['dimensions'] is None) or name in ('squeeze', 'expand_dims'):
            ranges[eqn.outvars[0]] = (start, size)  # row-major: the same elements in the same order
        elif name == 'convert_element_type' and attrs['new_dtype'] == jnp.float32:
            ranges[eqn.outvars[0]] = (start, size)  # float32 to float32: the same values
        else:
            return False
    end = 0
    for out in jaxpr.outvars:
        if isinstance(out, jex.Literal) or out not in ranges or out.aval.dtype != jnp.float32 or ranges[out][0] != end:
            return False
        end += ranges[out][1]
    return end == params.shape[0]
