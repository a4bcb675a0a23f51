r"""Lion (Chen et al. 2023) with a fused, in-place step: one pass over memory, 20 bytes per float32 parameter.

A Lion step reads :math:`\theta, g, m` and writes :math:`\theta, m`. XLA's CPU backend compiles the composed chain
(:func:`adam_jax.lion`, as ``optax.lion``) to two loops per leaf, and since both read the old momentum while one
overwrites it, it first copies the momentum into a fresh buffer: 36 B/param, and several times the kernel's time
(``python -m benchmarks.fusions --lion``). :func:`lion` is that chain plus a ``step``
that runs the float32 kernel's Lion loop (``adam_kernel.cc``, family 5) on CPU, bitwise the jitted chain: the
interpolation and the momentum are fused multiply-adds of the gradient's product, as XLA contracts them, and the
sign is XLA's (a zero or a NaN is its own sign).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from adam_jax import aliases
from adam_jax.decay import decay_rate
from adam_jax.fused.optimizer import (
    FusedTransformation,
    GradientParts,
    _check_state,
    _decay_flags,
    _Flat,
    _hyperparameters_fit,
    _kernel_call,
    _kernel_groups,
    _kernel_parts_call,
    _negative_rate,
    _on_cpu,
    _plan_step,
    _refuse_parts,
    _scalars,
    _with_chain_derivatives,
)
from adam_jax.sign import SignMomentumState

# Lion's chain: scale_by_sign_momentum, decoupled_decay, the learning rate.
_LAYOUT = _Flat(3, moments=SignMomentumState)


def _kernel_leaf(p: Any, g: Any, m: Any) -> bool:
    """Whether the kernel takes this leaf: float32 params, gradient and momentum of one shape."""
    f32 = jnp.dtype(jnp.float32)
    return all(getattr(x, 'dtype', None) == f32 and getattr(x, 'shape', None) == p.shape for x in (p, g, m))


def lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-3,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.lion` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2;
    ``optax.lion``) with a fused, in-place ``step``.

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \left(\operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
       + \lambda\theta_{t-1}\right), \quad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    ``init``, ``update`` and ``chain`` are the composed chain's; ``step(params, grads, state)`` returns ``(params,
    state)``, one C++ call per decay flag (and per 32 leaves) on CPU for float32 params with a float32 momentum
    (donate params and state: :func:`adam_jax.make_train_step`), bitwise the chain jitted on its own. Anywhere else
    (GPU/TPU, several CPU devices, another ``mu_dtype``, a mask of arrays, ``b1`` or ``b2`` given as exactly 0.5 or so
    small that ``1 - b`` rounds to 1, a float64 hyperparameter under ``jax_enable_x64``, a learning-rate schedule that
    closes over traced values, a traced ``weight_decay`` or a schedule of it, no kernel) ``step`` is the chain's update
    and ``optax.apply_updates`` under jit. A ``mask`` of Python booleans (or a function of the params returning one)
    splits the leaves into a decayed and an undecayed call. ``update`` is the chain's: a kernel that wrote the updates
    over the gradients (tried, bitwise the chain's ``update``) took 0.83-0.85x ``optax.lion``'s time in a jitted train
    step at 16M params whose gradient is computed in the same jit (where ``step`` took 0.60-0.62x), but 1.13-1.17x
    with the gradients passed into the jit (XLA then copies them into a fresh buffer to write over). Under ``jax.vmap``
    with an operand shared by the batch (``in_axes=None`` for the params, grads or state) XLA computes the vmapped
    chain's shared part once and rounds the rest otherwise; the kernel equals the chain run per example (as for the
    Adam family).
    """
    hyper = dict(learning_rate=learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
    traced = {key: value for key, value in hyper.items() if isinstance(value, jax.core.Tracer)}

    def make_tx(h=hyper):
        return aliases.lion(h['learning_rate'], h['b1'], h['b2'], mu_dtype, h['weight_decay'], mask)

    tx = make_tx()  # checks the arguments, naming them

    def chain_step(params, grads, state, h=None):
        if isinstance(grads, GradientParts):
            grads = grads.concatenated(params)
        updates, state = (make_tx({**hyper, **h}) if h else tx).update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def decay_plan(params, grads, state) -> list[bool] | None:
        """The decay flag of each leaf where the kernel can take this step; None where only the chain can."""
        trees = (params, grads, state[0].mu)
        if len({jax.tree.structure(tree) for tree in trees}) != 1:
            return None  # the chain's update names the mismatch
        if not all(_kernel_leaf(*leaves) for leaves in zip(*map(jax.tree.leaves, trees))):
            return None
        if not _hyperparameters_fit(learning_rate, b1, b2, weight_decay):
            return None
        # A weight decay unknown to XLA (traced: fused.lion built inside a jit with a traced value, or vmapped over a
        # grid of them; or a schedule's value): for leaves of shape (k, 3) or (k, 4) XLA then computes d + wd p with a
        # separate product in some columns and a fused multiply-add in others (found by review: up to 64 ulp at lr 1),
        # so no one kernel order matches.
        if isinstance(weight_decay, jax.core.Tracer) or callable(weight_decay):
            return None
        return _decay_flags(weight_decay, mask, params)

    def kernel_step(params, grads, state, h, flags):
        h = {**hyper, **h}
        momentum, decay_state, lr_state = state
        neg_lr, lr_state = _negative_rate(h['learning_rate'], lr_state)
        wd, decay_state = decay_rate(h['weight_decay'], decay_state)
        b1, b2 = h['b1'], h['b2']
        scalars = _scalars(one_minus_b1=1 - b1, b1=b1, one_minus_b2=1 - b2, b2=b2, weight_decay=wd, neg_lr=neg_lr)
        p, treedef = jax.tree.flatten(params)
        g, m = jax.tree.leaves(grads), jax.tree.leaves(momentum.mu)
        new_p, new_m = list(p), list(m)

        def call(decay, *operands):
            return _kernel_call(scalars, *operands, decay=decay, variant='lion')

        if isinstance(grads, GradientParts):  # one flat leaf: the kernel reads the pieces (see step)
            new_p[0], new_m[0] = _kernel_parts_call(scalars, p[0], grads.leaves, m[0], decay=flags[0], variant='lion')
        else:
            _kernel_groups(flags, [p, g, m], [new_p, new_m], call)
        mu = jax.tree.unflatten(jax.tree.structure(momentum.mu), new_m)
        return jax.tree.unflatten(treedef, new_p), (momentum._replace(mu=mu), decay_state, lr_state)

    def step(params, grads, state):
        _check_state(state, _LAYOUT, 'lion')
        grads, flags = _plan_step(params, grads, lambda p, g: decay_plan(p, g, state), lambda flags: True)
        if flags is None:
            return chain_step(params, grads, state)
        kernel = _with_chain_derivatives(lambda p, g, s, h: kernel_step(p, g, s, h, flags), chain_step)
        return _on_cpu((params, grads, state, traced), kernel, chain_step)

    def update(grads, state, params=None, **extra_args):
        _refuse_parts(grads)
        return tx.update(grads, state, params, **extra_args)

    return FusedTransformation(tx.init, update, step, tx)
