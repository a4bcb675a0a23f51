r"""The Adam family (Adam(W), NAdam(W), AdaMax(W), AMSGrad, AdaBelief, RAdam) with a fused, in-place step.

An Adam step reads :math:`\theta, g, m, v` and writes :math:`\theta, m, v`: 28 bytes per float32
parameter. XLA's CPU backend splits the composed chain into three loops per leaf (about 40 B/param) and
launches them for every leaf. :func:`adam` and :func:`adamw` here return the same optimizers as
:func:`adam_jax.adam` and :func:`adam_jax.adamw` (``init`` is the composed chain's, ``update`` returns
its updates and state, and ``chain`` is the chain itself), plus a ``step(params, grads, state) -> (params,
state)`` that applies the update too. On CPU, with the kernels built, ``step`` is one C++ call per group of
leaves that updates params and moments in the buffers it was given (donate them, see
:func:`adam_jax.make_train_step`):

- float32 params with float32 moments: ``adam_kernel.cc``, 28 B/param;
- float32 params with 8-bit moments (``mu_dtype='int8', nu_dtype='uint8'``, or signed/unsigned
  :class:`~adam_jax.BlockQuantized` specs of one block size): ``adam8_kernel.cc``, which dequantizes,
  updates and requantizes each block in cache, 16 B/param (leaves below ``min_size`` keep float32
  moments and take the first kernel).

``update`` (what ``optax.chain``, ``flax.nnx.Optimizer`` and ``TrainState`` call) takes the 8-bit kernel too,
for the 8-bit leaves: it writes the update :math:`-\alpha_t d_t` over each leaf's gradient buffer instead of
updating the params (a whole train step with the composed 8-bit chain in XLA took 2.5x as long on a 2-core CPU,
``python -m benchmarks.train_step --eight-bit --leaves 16``); its other leaves are the chain's. Float32 leaves
stay on the chain in ``update``: a kernel that writes updates moves as many bytes as XLA's code does.
Derivatives through ``step`` and ``update`` (``jax.grad``, for the params, the grads or hyperparameters traced
by ``optax.inject_hyperparams``) are the chain's: each kernel call is a ``custom_jvp`` whose rule is the chain's.

Anywhere else (GPU/TPU, a process with several CPU devices, other dtypes, bf16 or factored moments, a mask of
arrays, ``eps=0``, ``b1`` or ``b2`` given as exactly 0.5, a float64 hyperparameter under ``jax_enable_x64``, no
kernel) ``step`` is ``update`` followed by ``optax.apply_updates``, the composed chain under jit, and ``update`` is
the chain's; with NAdam's look-ahead (``nesterov=True``), and for AdaMax and RAdam, 8-bit leaves take the chain
inside the kernels' step (the 8-bit kernel has Adam's direction only). AMSGrad's running maximum is a fifth operand
group of the float32 kernel (36 B/param); AdaBelief with the look-ahead runs the chain.

The kernels perform the chain's float32 operations in the order XLA compiles them (``x / c`` as
``x * (1/c)``, ``a*b + c`` as a fused multiply-add where the CPU has one, and for 8-bit state the same
per-decade constants of the dynamic map, from :func:`adam_jax.quantization.kernel_constants`), so one
step is bitwise the chain's jitted on its own, with the gradients computed before it, and ``update`` under jit is
bitwise the chain's jitted ``update`` (checked in the tests; called eagerly, the step's scalars are formed op by op
and can differ from the jitted ones by an ulp, as the eager chain's do).
Compiled inside a larger program (the step in a ``lax.scan``, or fused with a gradient that XLA can simplify
into the update, such as that of ``sum(3 * p**2)``) XLA may contract the chain's products into
fused multiply-adds differently, and the two then differ by rounding (2.4e-7 at most, on params of order 1, after
three steps of lr 1e-2 in a scan).
A float32 leaf of one element is the exception
XLA makes: it divides such a leaf by :math:`1 - \beta^t` instead of multiplying by the reciprocal, so
``step`` updates one-element leaves with the chain itself, inside the same jitted step, and 8-bit leaves of fewer
than ``MIN_8BIT_KERNEL_SIZE`` (64) elements too (see there: XLA's code for a 9-element leaf fused other products).
For 8-bit leaves of more than one dimension the kernel is bitwise the chain run on the leaf flattened to one
dimension: XLA's loop over some shapes ((k, 3), (k, 10), (k, 12), (k, 14), (64, 64, 3) in a sweep of widths 1-40)
rounds some elements otherwise than its loop over the same numbers in one dimension, and there the kernel's update
is a few ulp of its scale off the leaf-shaped chain's (the tests
``test_8bit_kernel_is_bitwise_the_chain_on_the_flattened_leaf`` and
``test_8bit_leaves_of_some_2d_shapes_are_within_rounding_of_the_chain_on_their_shape``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adam_jax import _checks, aliases, factored, quantization
from adam_jax.correction import (
    MaxSecondMomentState,
    check_correctable,
    correction_dtype,
    nesterov_coefficients,
    one_minus_power,
)
from adam_jax.decay import decay_rate, is_no_decay
from adam_jax.fused import _library
from adam_jax.moments import MomentsState, is_compressed, saturating_increment
from adam_jax.normalize import rectifier

# Under jax.vmap the kernels get every operand with the batch axis in front and treat each batch element as
# its own problem (its own scalars: step count, learning rate), in the same single pass.
VMAP_METHOD = 'broadcast_all'
MAX_LEAVES_PER_CALL = 32  # compile time of one call grows faster than linearly in its operand count


class FusedTransformation(optax.GradientTransformationExtraArgs):
    """An optax transform (``init``, ``update``) with a fused ``step``, and the composed ``chain`` it computes.

    It is an ``optax.GradientTransformationExtraArgs`` like every other optimizer of the library (so
    ``init, update = fused.adam(1e-3)`` unpacks as optax's do) with two more attributes, read-only:
    ``step(params, grads, state)`` returns ``(new_params, new_state)``, equal to ``update`` then
    ``optax.apply_updates``; for one flat vector of params ``grads`` may be a :class:`GradientParts`, the gradients
    of its pieces (as :func:`adam_jax.make_train_step` passes them with ``unravel``). ``update`` is ``chain.update``,
    with the 8-bit leaves on the CPU kernel where it applies (the same updates and state); ``chain`` is the pure-XLA
    definition (``adam_jax.adam``, ``adamw``, ...). ``_replace`` gives a plain ``GradientTransformationExtraArgs``:
    a step that goes with another ``init`` or ``update`` is not known.
    """

    step: Callable[[optax.Params, optax.Updates, optax.OptState], tuple[optax.Params, optax.OptState]]
    chain: optax.GradientTransformation
    _ALL_FIELDS = ('init', 'update', 'step', 'chain')  # the tuple's two fields and the two attributes

    def __new__(
        cls,
        init: optax.TransformInitFn,
        update: optax.TransformUpdateExtraArgsFn,
        step: Callable[[optax.Params, optax.Updates, optax.OptState], tuple[optax.Params, optax.OptState]],
        chain: optax.GradientTransformation,
    ) -> FusedTransformation:
        self = super().__new__(cls, init, update)
        object.__setattr__(self, 'step', step)
        object.__setattr__(self, 'chain', chain)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f'FusedTransformation is immutable: cannot set {name!r}')

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f'FusedTransformation is immutable: cannot delete {name!r}')

    def _all_fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self._ALL_FIELDS)

    def __getnewargs__(self) -> tuple:  # copy, deepcopy and cloudpickle rebuild it through __new__
        return self._all_fields()

    def __eq__(self, other: object) -> bool:  # a plain transform with the same init and update is not this one
        return type(other) is type(self) and self._all_fields() == other._all_fields()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._all_fields())

    def __repr__(self) -> str:
        return f'FusedTransformation(init={self.init!r}, update={self.update!r}, step={self.step!r}, chain=...)'

    @classmethod
    def _make(cls, iterable: Any) -> FusedTransformation:
        return cls(*iterable)

    def _replace(self, **fields: Any) -> optax.GradientTransformationExtraArgs:
        return optax.GradientTransformationExtraArgs(**{'init': self.init, 'update': self.update, **fields})


# A pytree of its four functions under their names, as when it was a four-field tuple (jax would rebuild a tuple
# subclass from its two tuple fields).
jax.tree_util.register_pytree_with_keys(
    FusedTransformation,
    lambda t: (tuple((jax.tree_util.GetAttrKey(name), getattr(t, name)) for name in t._ALL_FIELDS), None),
    lambda _, children: FusedTransformation(*children),
    lambda t: (t._all_fields(), None),
)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _concrete_bools(tree: Any) -> list[bool] | None:
    leaves = jax.tree.leaves(tree)
    if all(isinstance(m, (bool, np.bool_)) for m in leaves):
        return [bool(m) for m in leaves]
    return None


# The float32 kernel's `family` attribute: the index of the variant here is kernel_common.h's Family value.
FAMILIES = ('adam', 'adamax', 'amsgrad', 'adabelief', 'radam', 'lion')


def _kernel_call(scalars, p, g, *moments, decay: bool, nesterov: bool = False, variant: str = 'adam'):
    """One FFI call over lists of float32 leaves; results aliased to params and the ``moments`` lists: mu, nu [, w]
    (Lion's: mu alone). ``variant``: one of ``FAMILIES`` (AdaMax: u_t as nu; AdaBelief: s_t as nu; RAdam: r_t and its
    switch in ``scalars``); ``w`` (one more list, AMSGrad's): the running maximum of the corrected nu. ``nesterov``:
    NAdam's look-ahead first moment (its coefficients in ``scalars``)."""
    k = len(p)
    arrays = (p, g, *moments)
    results = [group for group in range(len(arrays)) if group != 1]  # updated in place: all but the grads
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for group in results for x in arrays[group]]
    aliases = {1 + group * k + i: r * k + i for r, group in enumerate(results) for i in range(k)}
    call = jax.ffi.ffi_call(_library.TARGET, shapes, input_output_aliases=aliases, vmap_method=VMAP_METHOD)
    out = call(scalars, *(x for group in arrays for x in group), **_family_attributes(decay, nesterov, variant))
    return tuple(out[r * k : (r + 1) * k] for r in range(len(results)))


def _family_attributes(decay: bool, nesterov: bool, variant: str, offset: int = -1) -> dict:
    """The float32 kernel's attributes; ``offset`` >= 0: parts mode (see ``_kernel_parts_call``)."""
    flags = dict(decay=decay, nesterov=nesterov, family=FAMILIES.index(variant))
    return {**{key: np.int32(on) for key, on in flags.items()}, 'offset': np.int64(offset)}


class GradientParts(NamedTuple):
    """The gradient of a flat parameter vector given as the gradients of its consecutive pieces, in order: the leaves
    that ``jax.flatten_util.ravel_pytree``'s ``unravel`` cuts the vector into. :func:`adam_jax.make_train_step` passes
    it to a fused ``step`` (with ``unravel``), whose kernel reads the pieces where the backward pass wrote them instead
    of a concatenated gradient: on CPU that is a fresh buffer each step (64 MiB at 16M params), whose page faults cost
    more than the optimizer step. Anywhere the kernel does not take the step, the pieces are concatenated."""

    leaves: list

    def _checked_leaves(self) -> list:
        if not isinstance(self.leaves, (list, tuple)) or not all(hasattr(g, 'dtype') for g in self.leaves):
            kinds = type(self.leaves).__name__ if not isinstance(self.leaves, (list, tuple)) else 'a non-array'
            raise TypeError(f'GradientParts.leaves must be a list of arrays (the pieces, in order), got {kinds}.')
        return list(self.leaves)

    def fit(self, params: Any) -> bool:
        """Whether the kernel can read these pieces for ``params``: one 1-D float32 array, float32 pieces of its
        size in all."""
        f32 = jnp.dtype(jnp.float32)
        leaves = self._checked_leaves()
        return (
            getattr(params, 'dtype', None) == f32
            and getattr(params, 'ndim', None) == 1
            and all(g.dtype == f32 for g in leaves)
            and sum(int(np.size(g)) for g in leaves) == params.shape[0]
        )

    def concatenated(self, params: Any) -> jax.Array:
        """The flat gradient, in the dtype of the flat ``params`` (as the transpose of ``unravel`` forms it)."""
        leaves = self._checked_leaves()
        if getattr(params, 'ndim', None) != 1:
            shape = getattr(params, 'shape', None)
            got = f'{type(params).__name__} of shape {shape}' if shape is not None else type(params).__name__
            raise TypeError(f'GradientParts are the gradient of one flat (1-D) vector of params, got params: {got}.')
        total = sum(int(np.size(g)) for g in leaves)
        if total != params.shape[0]:
            raise ValueError(f'GradientParts hold {total} elements, the flat params {params.shape[0]}.')
        if not leaves:
            return jnp.zeros_like(params)
        return jnp.concatenate([jnp.ravel(g).astype(params.dtype) for g in leaves])


def _plan_step(params: Any, grads: Any, plan: Callable, takes_parts: Callable[[Any], bool]) -> tuple[Any, Any]:
    """``(grads, plan(params, grads))`` for a fused step. ``GradientParts`` stay pieces where ``plan`` (run with the
    params standing in for the grads) finds the kernel and ``takes_parts`` accepts what it found; otherwise they are
    concatenated into the flat gradient first."""
    if isinstance(grads, GradientParts):
        found = plan(params, params) if grads.fit(params) else None
        if found is not None and takes_parts(found):
            return grads, found
        grads = grads.concatenated(params)
    return grads, plan(params, grads)


def _refuse_parts(grads: Any) -> None:
    """``update`` takes the gradient as a tree shaped like the params; GradientParts are for ``step``."""
    if isinstance(grads, GradientParts):
        raise TypeError(
            'update takes the gradient as a tree shaped like the params; GradientParts (the pieces of a flat '
            "vector's gradient) are for step(params, grads, state), or pass GradientParts.concatenated(params)."
        )


def _kernel_parts_call(scalars, p, parts: list, *moments, decay: bool, nesterov: bool = False, variant: str = 'adam'):
    """The float32 kernel on one flat params vector and its flat moments (``moments``: as for ``_kernel_call``), whose
    gradient comes as ``parts`` (``GradientParts.leaves``), read in place. At most MAX_LEAVES_PER_CALL parts a call;
    each call updates its pieces of the flat buffers and passes them on. Returns the new params and moments."""
    flats = [p, *moments]
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flats]
    call = jax.ffi.ffi_call(
        _library.TARGET,
        shapes,
        input_output_aliases={1 + k: k for k in range(len(flats))},
        vmap_method='sequential',  # the kernel's parts mode takes one problem
    )
    pieces = [jnp.ravel(g) for g in parts if np.size(g)]
    offset = 0
    for start in range(0, len(pieces), MAX_LEAVES_PER_CALL):
        chunk = pieces[start : start + MAX_LEAVES_PER_CALL]
        flats = call(scalars, *flats, *chunk, **_family_attributes(decay, nesterov, variant, offset))
        offset += sum(x.size for x in chunk)
    return tuple(flats)


def _kernel8_call(scalars, p, g, m, v, decay: bool, updates: bool = False):
    """One FFI call over lists of leaves with 8-bit moments (int8 mu, uint8 nu, one block size).

    Returns new params, mu and nu; with ``updates`` the chain's updates in place of the params (which are then
    only read, and only for the decay).
    """
    k = len(p)
    block_size = m[0].block_size
    operands = [*p, *g, *(q.codes for q in m), *(q.absmax for q in m), *(q.codes for q in v), *(q.absmax for q in v)]
    # Results: params (or updates), mu codes, mu absmax, nu codes, nu absmax; operand j of group i is 2 + i * k + j.
    groups = [0, 2, 3, 4, 5]
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for i in groups for x in operands[i * k : (i + 1) * k]]
    aliases = {2 + i * k + j: r * k + j for r, i in enumerate(groups) for j in range(k) if not (updates and i == 0)}
    if updates:  # each update overwrites its gradient, read just before (no buffer of its own to allocate)...
        # ...unless the grads stand in for params not given: XLA would copy them first.
        aliases.update({2 + k + j: j for j in range(k) if g[j] is not p[j]})
    call = jax.ffi.ffi_call(_library.TARGET_8BIT, shapes, input_output_aliases=aliases, vmap_method=VMAP_METHOD)
    maps = jnp.asarray(quantization.kernel_constants())
    out = call(
        scalars,
        maps,
        *operands,
        decay=np.int32(decay),
        block_size=np.int32(block_size),
        updates=np.int32(updates),
    )
    new_p, mc, ma, vc, va = (out[r * k : (r + 1) * k] for r in range(5))
    new_m = [dataclasses.replace(q, codes=c, absmax=a) for q, c, a in zip(m, mc, ma)]
    new_v = [dataclasses.replace(q, codes=c, absmax=a) for q, c, a in zip(v, vc, va)]
    return new_p, new_m, new_v


# 8-bit leaves of fewer elements take the chain, inside the same jitted step. XLA compiles such tiny loops partly as
# straight-line scalar code, where LLVM chooses case by case which product of a sum to fuse: for an 8-bit leaf of
# 9 elements (block size 16) it fused b1 m_old and b2 v_old in the ninth element's moments instead of the gradient
# terms, 1 ulp from the kernel in 47 of 200 random steps (found by a review on an AVX-512 Zen 5 CPU; every other
# size it tried matched). They cost nothing to leave to XLA.
MIN_8BIT_KERNEL_SIZE = 64


def _leaf_kind(p, g, m, v, *w, nesterov: bool, variant: str) -> tuple | None:
    """Which kernel updates this leaf: ('f32',), ('8bit', block_size), ('chain',) (the chain, inside a kernel step), or
    None (only a step of the chain alone can). ``w``: AMSGrad's running maximum of this leaf's nu."""
    kind = _kernel_kind(p, g, m, v)
    if kind is None:
        return None
    if w and not (kind == ('f32',) and getattr(w[0], 'dtype', None) == jnp.float32 and w[0].shape == p.shape):
        return None
    if variant != 'adam' and kind[0] == '8bit':  # the 8-bit kernel has Adam's direction only
        return ('chain',)
    # NAdam's look-ahead c_m m_t + c_g g_t: XLA fuses one of the two products into an fma, c_m m_t in the float32
    # chain (every shape tried by the tests and a review), but in the 8-bit chain the one it fuses depends on the
    # leaf's shape (c_g g_t for 1-D leaves, c_m m_t for a single block or for (16, 256) but not (16, 512): found by
    # a review). The float32 kernel has the look-ahead; 8-bit NAdam leaves take the chain.
    if nesterov and kind[0] == '8bit':
        return ('chain',)
    # XLA divides a one-element leaf by 1 - b^t where it multiplies larger ones by the reciprocal (it rewrites
    # x / broadcast(c) only): the chain's own step updates such a leaf, in the same jitted step.
    if p.size == 1 or (kind[0] == '8bit' and p.size < MIN_8BIT_KERNEL_SIZE):
        return ('chain',)
    return kind


def _kernel_kind(p, g, m, v) -> tuple | None:
    """The kernel whose operands this leaf's params, grads and moments are: ('f32',), ('8bit', block_size) or None."""
    f32 = jnp.dtype(jnp.float32)
    if not (getattr(p, 'dtype', None) == f32 and getattr(g, 'dtype', None) == f32 and p.shape == g.shape):
        return None
    if tuple(getattr(m, 'shape', ())) != p.shape or tuple(getattr(v, 'shape', ())) != p.shape:
        return None  # not the state of these params: the chain's update says so
    if quantization.is_quantized(m) and quantization.is_quantized(v):
        if m.signed and not v.signed and m.block_size == v.block_size:
            return ('8bit', m.block_size)
        return None
    if quantization.is_quantized(m) or quantization.is_quantized(v) or factored.is_factored(v):
        return None
    if not (m.dtype == f32 and v.dtype == f32):
        return None
    return ('f32',)


class _Flat(NamedTuple):
    """The state of a flat chain (AdaBelief's, AMSGrad's, Lion's): ``length`` states, the moments (of type
    ``moments``) first, the learning rate's last, and AMSGrad's running maximum at ``running_max_at``. Adam's family
    nests its direction's chain instead: its layout is the pair of lengths ``(outer, direction)``."""

    length: int
    running_max_at: int | None = None
    moments: type = MomentsState


def _is_state(state: Any, layout: tuple[int, int] | _Flat) -> bool:
    """Whether ``state`` has the structure of this optimizer's: for ``(outer, direction)``, a chain of ``outer``
    states whose first, the direction's, is a chain of ``direction`` beginning with the moments (3 for Adam's, 4
    with NAdam's look-ahead); for a ``_Flat`` layout, a chain of its length beginning with the moments."""
    if isinstance(layout, _Flat):
        ok = isinstance(state, tuple) and len(state) == layout.length and isinstance(state[0], layout.moments)
        at = layout.running_max_at
        maxima = [i for i, s in enumerate(state) if isinstance(s, MaxSecondMomentState)] if ok else []
        return ok and maxima == ([] if at is None else [at])
    outer, direction = layout
    ok = isinstance(state, tuple) and len(state) == outer and isinstance(state[0], tuple) and len(state[0]) == direction
    return bool(ok) and isinstance(state[0][0], MomentsState)


def _check_state(state: Any, layout: tuple[int, int] | _Flat, name: str) -> None:
    """A clear TypeError for a state that is not this optimizer's (optax's, or another chain's)."""
    if not _is_state(state, layout):
        if isinstance(layout, _Flat):
            expected = f'a chain of {layout.length} states beginning with adam_jax.{layout.moments.__name__}'
            if layout.running_max_at is not None:
                expected += f', adam_jax.MaxSecondMomentState at index {layout.running_max_at}'
        else:
            expected = (
                f'a chain of {layout[0]} states beginning with a chain of {layout[1]} that begins with '
                'adam_jax.MomentsState'
            )
        raise TypeError(
            f"fused.{name}(...).step needs the state made by the same optimizer's init ({expected}); got "
            f'{type(state).__name__}'
            + (f' of {len(state)}' if isinstance(state, tuple) else '')
            + ". A state of another optimizer (optax.adam's, or fused.adam's for fused.adamw, fused.nadam, "
            'fused.amsgrad or fused.lion, or the reverse) does not fit. (Chains whose states have the same '
            "structure, such as fused.adam's and fused.adamax's, or fused.adabelief's and fused.radam's, cannot be "
            'told apart: as for the chains themselves, such a state is taken as it is.)'
        )


def _one_cpu_device() -> bool:
    """Whether the CPU platform has a single device (in all processes).

    XLA's SPMD partitioner knows nothing of a custom call, so on a mesh of several CPU devices it would gather a
    sharded leaf onto every device and return it replicated; there the step runs the composed chain, which XLA
    partitions like any elementwise computation.
    """
    try:
        return len(jax.devices('cpu')) == 1
    except RuntimeError:
        return False


@functools.cache
def _cpu_only() -> bool:
    """Whether this process has no GPU or TPU backend: then the CPU kernel is the only branch to trace.

    Elsewhere ``step`` is a ``lax.platform_dependent`` of the kernel (CPU) and the chain (other platforms);
    tracing the chain branch too costs most of the tracing time of a many-leaf step (with 1000 8-bit leaves,
    39 s against 1.4 s). Exporting a CPU-only trace (``jax.export``) for other platforms is therefore not
    possible; use ``update`` and ``optax.apply_updates`` for that.
    """
    for platform in ('gpu', 'tpu'):
        try:
            jax.devices(platform)
        except RuntimeError:
            continue
        return False
    return True


def _is_known_half(value: Any) -> bool:
    """Whether a decay rate is a concrete 0.5 in float32, where 1 - b equals b."""
    array = _checks.concrete(value)
    return array is not None and array.ndim == 0 and np.float32(array) == np.float32(0.5)


def _is_unit_rate(learning_rate: Any, lr_state: Any) -> bool:
    """Whether the learning rate of this step is a known +-1: a number, or a schedule that returns a concrete value
    (``optax.constant_schedule(1.0)``) at the step's count."""
    if callable(learning_rate):
        try:
            learning_rate = learning_rate(lr_state.count)
        except Exception:  # a schedule the chain will call anyway: let it raise there
            return False
    array = _checks.concrete(learning_rate)
    return array is not None and array.ndim == 0 and abs(float(array)) == 1


def _one_minus_rounds_to_one(value: Any) -> bool:
    """Whether a concrete decay rate b > 0 is so small that 1 - b is 1 in float32 (b below about 3e-8): XLA then drops
    the multiply by 1 - b and fuses another product than the kernels do (found by review: AdaBelief's s_t, Adam's
    m_t)."""
    array = _checks.concrete(value)
    if array is None or array.ndim or not float(array) > 0:
        return False
    return np.float32(1.0 - float(array)) == 1 or np.float32(1) - np.float32(array) == 1


_UNTRACEABLE = object()


def _abstract_value(value: Any) -> Any:
    """A hyperparameter as the step sees it: for a schedule, the abstract value it returns at a step count
    (``jax.eval_shape``), or ``_UNTRACEABLE`` for one that cannot be traced on its own; anything else as it is."""
    if not callable(value):
        return value
    try:
        return jax.eval_shape(value, jnp.zeros((), jnp.int32))
    except Exception:
        return _UNTRACEABLE


def _not_scalar(value: Any) -> bool:
    """Whether a hyperparameter (for a schedule, the value it returns) is not one number: the chain broadcasts a
    learning rate of shape (1,) into the updates, the kernels take one number per hyperparameter (a review found a
    schedule returning ``jnp.array([1e-3])`` crashing ``step`` where ``update`` ran)."""
    value = _abstract_value(value)
    return value is _UNTRACEABLE or len(getattr(value, 'shape', ())) != 0


def _widens_to_float64(value: Any) -> bool:
    """Whether a hyperparameter makes the chain compute in float64: with ``jax_enable_x64`` on, a strongly typed
    float64 value (a NumPy float64, a float64 array that is not weakly typed; for a schedule, the value it returns)
    promotes the float32 arithmetic of the chain, which the float32 kernels cannot mirror. Python floats are weakly
    typed and do not. (A review found a weight-decay schedule returning ``np.float64`` 14 elements off the chain.)"""
    if not jax.config.jax_enable_x64:
        return False
    value = _abstract_value(value)
    if value is _UNTRACEABLE:  # leave it to the chain
        return True
    if getattr(value, 'weak_type', False):
        return False
    dtype = getattr(value, 'dtype', None)
    return dtype is not None and jnp.dtype(dtype) in (jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128))


def _captures_tracers(schedule: Any) -> bool:
    """Whether a schedule (of the learning rate or the weight decay) closes over traced values (a peak rate being
    meta-learned): derivatives with respect to those could not reach the kernels' custom_jvp rule, so such a step runs
    the chain."""
    if not callable(schedule):
        return False
    try:
        return bool(jax.closure_convert(schedule, jnp.zeros((), jnp.int32))[1])
    except Exception:  # a schedule that cannot be traced on its own: leave it to the chain
        return True


# The scalars operand of the float32 kernels, in the order of kernel_common.h's Scalar enum; 1 - b^t are 1 where the
# chain does not correct (m * (1 / 1) is m exactly), every other scalar 0 where a family does not use it.
SCALARS = (
    'one_minus_b1',
    'b1',
    'one_minus_b2',
    'b2',
    'c1',
    'c2',
    'eps_root',
    'eps',
    'weight_decay',
    'neg_lr',
    'nesterov_m',
    'nesterov_g',
    'belief_eps',
    'rectification',
    'tractable',
)


def _scalars(**values: Any) -> jax.Array:
    """The kernels' f32[15] scalars operand from values named as in ``SCALARS`` (``c1``, ``c2`` default to 1, the
    others to 0)."""
    unknown = set(values) - set(SCALARS)
    if unknown:
        raise ValueError(f'unknown kernel scalars {sorted(unknown)}; the kernels take {SCALARS}')
    defaults = dict(c1=1.0, c2=1.0)
    return jnp.stack([_f32(values.get(name, defaults.get(name, 0.0))) for name in SCALARS])


def _negative_rate(learning_rate: Any, lr_state: Any) -> tuple[Any, Any]:
    """(-lr_t, the learning rate's next state) as the chain's last transform forms them: a schedule is called at
    its count, which then advances; a constant is negated."""
    if callable(learning_rate):
        return -1 * learning_rate(lr_state.count), lr_state._replace(count=optax.safe_increment(lr_state.count))
    return -learning_rate, lr_state


def _decay_flags(weight_decay: Any, mask: Any, params: Any) -> list[bool] | None:
    """Whether each leaf of ``params`` is decayed, for a mask of Python booleans (or a function returning one); None
    for a mask of arrays (only the chain can apply it)."""
    n = len(jax.tree.leaves(params))
    if weight_decay is None or is_no_decay(weight_decay):  # the chain adds nothing: the kernels' undecayed loops
        return [False] * n
    if mask is None:
        return [True] * n
    tree = mask(params) if callable(mask) else mask
    try:  # a mask may be a prefix of the params tree (as optax.masked allows): one flag per subtree
        tree = jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: flag, sub), tree, params)
    except (ValueError, TypeError):
        return None
    flags = _concrete_bools(tree)
    return flags if flags is not None and len(flags) == n else None


def _hyperparameters_fit(learning_rate: Any, b1: Any, b2: Any, *others: Any) -> bool:
    """Whether the kernels can mirror the chain with these hyperparameters in this process (the family's own
    conditions aside): the kernel is loaded, one CPU device, and no known value that makes XLA rewrite the chain."""
    return (
        _library.available()
        and _one_cpu_device()
        # with a known b = 0.5 XLA factors (1 - b) x + b y into 0.5 (x + y) (found by review: float32 NAdam,
        # 8-bit Adam with b1 = 0.5, Adam with b2 = 0.5 were 1 ulp off the chain)
        and not any(map(_is_known_half, (b1, b2)))
        and not any(map(_one_minus_rounds_to_one, (b1, b2)))
        and not any(map(_widens_to_float64, (learning_rate, b1, b2, *others)))
        and not any(map(_not_scalar, (learning_rate, b1, b2, *others)))
        and not any(map(_captures_tracers, (learning_rate, *others)))  # schedules (of the lr, the weight decay)
    )


def _kernel_groups(keys: list, operand_lists: list[list], new_lists: list[list], call: Callable) -> None:
    """For each distinct key of ``keys`` (one per leaf; None: a leaf that is not the kernels'), ``call(key, *operand
    lists)`` on that key's leaves, at most MAX_LEAVES_PER_CALL leaves a call, writing the lists of results it returns
    into ``new_lists`` at those leaves."""
    for key in sorted({k for k in keys if k is not None}):
        index = [i for i, k in enumerate(keys) if k == key]
        for start in range(0, len(index), MAX_LEAVES_PER_CALL):
            part = index[start : start + MAX_LEAVES_PER_CALL]
            outs = call(key, *([x[i] for i in part] for x in operand_lists))
            for target, out in zip(new_lists, outs):
                for i, x in zip(part, out):
                    target[i] = x


def _on_cpu(operands: tuple, kernel: Callable, chain: Callable) -> Any:
    """``kernel`` on CPU, ``chain`` elsewhere (only ``kernel`` is traced in a process without GPU or TPU)."""
    if _cpu_only():  # nothing else to lower for: skip tracing the chain as the other platforms' branch
        return kernel(*operands)
    return jax.lax.platform_dependent(*operands, cpu=kernel, default=chain)


def _with_chain_derivatives(kernel: Callable, chain: Callable) -> Callable:
    """``kernel`` with the derivatives of ``chain``, whose values it computes (an FFI call has no rule)."""
    kernel = jax.custom_jvp(kernel)
    kernel.defjvp(lambda primals, tangents: jax.jvp(chain, primals, tangents))
    return kernel


def _moment_leaves(tree: Any) -> list:
    """The leaves of a moment tree, a quantized or factored moment counting as one."""
    return jax.tree.leaves(tree, is_leaf=is_compressed)


def _moment_structure(tree: Any) -> jax.tree_util.PyTreeDef:
    return jax.tree.structure(tree, is_leaf=is_compressed)


def _fused(
    learning_rate,
    b1,
    b2,
    eps,
    eps_root,
    weight_decay,
    mask,
    mu_dtype,
    nu_dtype,
    nesterov,
    variant: str = 'adam',
    corrections: tuple[bool, bool] = (True, True),
    threshold: chex.Numeric = 5.0,
) -> FusedTransformation:
    """The fused optimizer. ``variant``: 'adam' (Adam, AdamW, with ``nesterov`` NAdam(W)), 'adamax' (AdaMax(W):
    ``eps`` inside the max, no ``eps_root``), 'amsgrad' (``corrections``: whether m and v are bias-corrected),
    'adabelief' (``eps_root`` is added to s_t, and the root has none) or 'radam' (``threshold`` on rho_t)."""
    _checks.check_bool('nesterov', nesterov)
    options = dict(mu_dtype=mu_dtype, nu_dtype=nu_dtype)  # as the chain's factories take them
    if variant in ('adam', 'adabelief', 'radam'):
        options['nesterov'] = nesterov
    correct_mu, correct_nu = corrections
    infinity_norm, running_max, belief = variant == 'adamax', variant == 'amsgrad', variant == 'adabelief'
    rectified = variant == 'radam'
    # The hyperparameters, by name. `update` passes the traced ones (as from optax.inject_hyperparams) as explicit
    # operands of its custom_jvp, so that derivatives with respect to them reach its rule; known values stay
    # constants, as they are in the chain.
    hyper = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay)
    if rectified:
        hyper['threshold'] = threshold
    traced = {key: value for key, value in hyper.items() if isinstance(value, jax.core.Tracer)}

    def make_tx(mask, h=hyper):
        if rectified:
            args = (h['learning_rate'], h['b1'], h['b2'], h['eps'], h['eps_root'], h['threshold'])
            return aliases.radam(*args, **options)
        if belief:
            return aliases.adabelief(h['learning_rate'], h['b1'], h['b2'], h['eps'], h['eps_root'], **options)
        if running_max:
            args = (h['learning_rate'], h['b1'], h['b2'], h['eps'], h['eps_root'], mu_dtype, correct_mu, correct_nu)
            return aliases.amsgrad(*args, nu_dtype=nu_dtype)
        if infinity_norm:
            args = (h['learning_rate'], h['b1'], h['b2'], h['eps'])
            if weight_decay is None:
                return aliases.adamax(*args, **options)
            return aliases.adamaxw(*args, weight_decay=h['weight_decay'], mask=mask, **options)
        args = (h['learning_rate'], h['b1'], h['b2'], h['eps'], h['eps_root'])
        if weight_decay is None:
            return aliases.adam(*args, **options)
        return aliases.adamw(*args, weight_decay=h['weight_decay'], mask=mask, **options)

    tx = make_tx(mask)
    c2_used = correct_nu and not infinity_norm  # whether the kernel divides nu by 1 - b2^t
    decayed = weight_decay is not None
    if variant in ('adam', 'adamax'):  # ((moments, [nesterov_momentum], bias_correct, rms), [decay], learning rate)
        name = ('n' if nesterov else '') + variant + ('w' if decayed else '')
        layout = (3 if decayed else 2, 4 if nesterov else 3)
    elif running_max:  # moments, bias_correct, max_second_moment, scale_by_rms, learning rate
        name, layout = variant, _Flat(5, running_max_at=2)
    else:  # moments, [nesterov_momentum], bias_correct, scale_by_rms or scale_by_rectified_rms, learning rate
        name, layout = variant, _Flat(5 if nesterov else 4)
    kernels = {'f32': functools.partial(_kernel_call, nesterov=nesterov, variant=variant), '8bit': _kernel8_call}

    def chain_with(h):
        """The chain with the hyperparameters ``h`` in place of the given ones (the traced ones, as operands)."""
        return make_tx(mask, {**hyper, **h}) if h else tx

    def chain_step(params, grads, state, h=None):
        if isinstance(grads, GradientParts):
            grads = grads.concatenated(params)
        updates, state = chain_with(h).update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def unpack(state):
        """(moments, AMSGrad's running maxima or None, the learning rate's state) of a state of this chain."""
        if isinstance(layout, _Flat):
            at = layout.running_max_at
            return state[0], None if at is None else state[at].nu_max, state[-1]
        return state[0][0], None, state[-1]

    def repack(state, moments, nu_max, lr_state, decay_state=None):
        """``state`` with these moments, running maxima (AMSGrad) and learning rate state, and where given the
        decoupled decay's state (the W variants': it sits between the direction's chain and the learning rate)."""
        if isinstance(layout, _Flat):
            new = [moments, *state[1:-1], lr_state]
            if layout.running_max_at is not None:
                new[layout.running_max_at] = state[layout.running_max_at]._replace(nu_max=nu_max)
            return tuple(new)
        (_, *direction_rest), *middle, _ = state
        return ((moments, *direction_rest), *(middle if decay_state is None else [decay_state]), lr_state)

    def chain_leaves(index, p, g, moment_lists, state, decay_flags, updates, h):
        """The chain for leaves ``index`` of the flat lists: their new params (or, with ``updates``, their updates),
        mu, nu [and running maximum] leaves."""
        moments, _, lr_state = unpack(state)
        pick = lambda leaves: [leaves[i] for i in index]  # noqa: E731
        sub_tx = make_tx(None if mask is None else pick(decay_flags), h)  # the same state structure as tx's
        m, v, *w = moment_lists
        sub_state = repack(state, moments._replace(mu=pick(m), nu=pick(v)), pick(w[0]) if w else None, lr_state)
        new, new_state = sub_tx.update(pick(g), sub_state, pick(p))
        if not updates:
            new = optax.apply_updates(pick(p), new)
        new_moments, new_w, _ = unpack(new_state)
        return new, new_moments.mu, new_moments.nu, *([new_w] if w else [])

    def kernel_step(params, grads, state, h, decay_flags, kinds, updates=False):
        """The step (new params, state) on the kernels; with ``updates``, (updates, state) with the 8-bit leaves on
        the kernel and the others on the chain (a float32 kernel writing updates would move as many bytes as the
        chain does). ``h``: hyperparameters in place of the given ones (the traced ones, as operands)."""
        h = {**hyper, **h}
        moments, nu_max, lr_state = unpack(state)
        count = saturating_increment(moments.count)
        learning_rate, b1, b2, eps, eps_root = (h[k] for k in ('learning_rate', 'b1', 'b2', 'eps', 'eps_root'))
        neg_lr, lr_state = _negative_rate(learning_rate, lr_state)
        # AdamW's decay state sits after the direction's chain (a schedule's count advances there, after the step)
        wd, decay_state = (0.0, None) if h['weight_decay'] is None else decay_rate(h['weight_decay'], state[1])
        if correct_mu:  # as the chain's bias_correct refuses them
            check_correctable('b1', b1, params, False)
        if correct_nu and not infinity_norm:  # AdaMax's u_t is not corrected
            check_correctable('b2', b2, params, False)
        wide = correction_dtype(jnp.float32)
        # NAdam's look-ahead coefficients, formed as nesterov_momentum forms them (unused without it).
        c_m, c_g = nesterov_coefficients(b1, count, wide) if nesterov else (0.0, 0.0)
        # RAdam's rectification, formed as scale_by_rectified_rms forms it for float32 moments (adam_jax.radam
        # makes it with strict=False and exact corrections: the PyTorch preset's other settings have no fused twin)
        tractable, r_t = rectifier(b2, count, h['threshold'], False, False, wide) if rectified else (False, 0.0)
        scalars = _scalars(
            one_minus_b1=1 - b1,
            b1=b1,
            one_minus_b2=1 - b2,
            b2=b2,
            # as correction.debias forms them; 1 where the chain does not correct (m * (1 / 1) is m exactly)
            c1=one_minus_power(b1, count, wide) if correct_mu else 1.0,
            c2=one_minus_power(b2, count, wide) if c2_used else 1.0,
            eps_root=0.0 if belief else eps_root,  # AdaBelief's eps_root is added to s_t, not under the root
            eps=eps,
            weight_decay=wd,
            neg_lr=neg_lr,
            nesterov_m=c_m,
            nesterov_g=c_g,
            belief_eps=eps_root if belief else 0.0,
            rectification=r_t,
            tractable=tractable,
        )
        p, treedef = jax.tree.flatten(params)
        g = jax.tree.leaves(grads)
        moment_lists = [_moment_leaves(moments.mu), _moment_leaves(moments.nu)]
        if running_max:
            moment_lists.append(jax.tree.leaves(nu_max))
        new_lists = [list(x) for x in (p, *moment_lists)]  # params (or updates), mu, nu [, running maximum]
        if updates:
            kinds = [('chain',) if kind == ('f32',) else kind for kind in kinds]
        index = [i for i, kind in enumerate(kinds) if kind == ('chain',)]
        if index:
            for i, *new in zip(index, *chain_leaves(index, p, g, moment_lists, state, decay_flags, updates, h)):
                for target, x in zip(new_lists, new):
                    target[i] = x
        # One call (of at most MAX_LEAVES_PER_CALL leaves) per kernel, block size and decay flag.
        keys = [None if kind == ('chain',) else (kind, decay) for kind, decay in zip(kinds, decay_flags)]

        def call(key, *operands):
            (kind, *_), decay = key
            return kernels[kind](scalars, *operands, decay=decay, **({'updates': True} if updates else {}))

        if isinstance(grads, GradientParts):  # one flat leaf on the float32 kernel (see step)
            args = (scalars, p[0], grads.leaves, *(x[0] for x in moment_lists))
            new = _kernel_parts_call(*args, decay=decay_flags[0], nesterov=nesterov, variant=variant)
            new_lists = [[x] for x in new]
        else:
            _kernel_groups(keys, [p, g, *moment_lists], new_lists, call)
        new_p, new_m, new_v, *new_w = new_lists
        moments = moments._replace(
            count=count,
            mu=jax.tree.unflatten(_moment_structure(moments.mu), new_m),
            nu=jax.tree.unflatten(_moment_structure(moments.nu), new_v),
        )
        nu_max = jax.tree.unflatten(jax.tree.structure(nu_max), new_w[0]) if running_max else None
        return jax.tree.unflatten(treedef, new_p), repack(state, moments, nu_max, lr_state, decay_state)

    def kernel_plan(params, grads, state) -> tuple[list[bool], list[tuple]] | None:
        """(decay flags, kernel kind) per leaf where the kernels can take this step; None where only the chain can."""
        moments, nu_max, lr_state = unpack(state)
        flags = _decay_flags(weight_decay, mask, params)
        kinds = None
        trees = (params, grads, moments.mu, moments.nu, *([nu_max] if running_max else []))
        if len({_moment_structure(tree) for tree in trees}) == 1:
            leaves = map(_moment_leaves, trees)
            kinds = [_leaf_kind(*x, nesterov=nesterov, variant=variant) for x in zip(*leaves)]
        if not (
            flags is not None
            and kinds is not None
            and None not in kinds
            and _hyperparameters_fit(learning_rate, b1, b2, eps, eps_root, weight_decay)
            # with a known eps = 0 XLA compiles m / sqrt(v) as m * rsqrt(v), which the kernels do not mirror (a
            # traced eps is unknown to XLA too, so it keeps the division)
            and (infinity_norm or not _checks.is_known_zero(eps))  # AdaMax: no root (its eps is inside the max)
            # RAdam's direction ends in a product (r_t q, or m (1 / c1) before the switch): with a known learning rate
            # of +-1 LLVM drops the multiply by -lr and fuses that product into the params' add (found by review)
            and not (rectified and _is_unit_rate(learning_rate, lr_state))
            # AdaBelief with NAdam's look-ahead: XLA fuses c_g g_t or c_m m_t depending on the leaf's size and shape
            # ((65543,) and some (k, 3) leaves one way, the rest the other): no one kernel order matches
            and not (belief and nesterov)
        ):
            return None
        return flags, kinds

    def step(params, grads, state):
        _check_state(state, layout, name)
        # pieces of a gradient go to the float32 kernel only (one flat leaf)
        grads, plan = _plan_step(params, grads, lambda p, g: kernel_plan(p, g, state), lambda x: x[1] == [('f32',)])
        if plan is None:
            return chain_step(params, grads, state)
        kernel = _with_chain_derivatives(lambda p, g, s, h: kernel_step(p, g, s, h, *plan), chain_step)
        return _on_cpu((params, grads, state, traced), kernel, chain_step)

    def update(grads, state, params=None, **extra_args):
        _refuse_parts(grads)
        # The 8-bit leaves' moments and updates come from the 8-bit kernel, the other leaves' from the chain. Without
        # decay the kernel reads no params: the grads stand in for them when none are given.
        if extra_args or not _is_state(state, layout):
            return tx.update(grads, state, params, **extra_args)  # (the chain's own errors for a foreign state)
        stand_in = grads if params is None and weight_decay is None else params
        plan = None if stand_in is None else kernel_plan(stand_in, grads, state)
        if plan is None or not any(kind[0] == '8bit' for kind in plan[1]):
            return tx.update(grads, state, params)

        def chain(g, s, p, h):  # on the operands of the kernel's update
            return chain_with(h).update(g, s, None if params is None else p)

        kernel = _with_chain_derivatives(lambda g, s, p, h: kernel_step(p, g, s, h, *plan, updates=True), chain)
        return _on_cpu((grads, state, stand_in, traced), kernel, chain)

    return FusedTransformation(tx.init, update, step, tx)


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.adam` (Kingma & Ba 2014, Algorithm 1) with a fused, in-place ``step``.

    .. math::

       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

       \theta_t = \theta_{t-1} - \alpha_t \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}}
       + \epsilon}

    ``init`` is the composed chain's and ``update`` returns its updates and state (8-bit leaves on the CPU
    kernel); ``step(params, grads, state)`` returns ``(params, state)`` and runs the fused kernels on CPU for
    float32 params whose moments are float32 or 8-bit (``mu_dtype='int8', nu_dtype='uint8'``); other storage
    runs the chain, which ``.chain`` also gives. ``nesterov=True`` is :func:`nadam`.
    """
    return _fused(learning_rate, b1, b2, eps, eps_root, None, None, mu_dtype, nu_dtype, nesterov)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    *,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
    nesterov: bool = False,
) -> FusedTransformation:
    r""":func:`adam_jax.adamw` (Loshchilov & Hutter 2019) with a fused, in-place ``step``.

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \left(\frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
       + \lambda \theta_{t-1}\right)

    ``weight_decay``, ``mask``, ``mu_dtype`` and ``nu_dtype`` are keyword-only (positionally,
    :func:`adam_jax.adamw` has ``mu_dtype`` where ``weight_decay`` would be). The kernels take float32 params
    with float32 or 8-bit (``mu_dtype='int8', nu_dtype='uint8'``) moments; other storage runs the chain.
    A ``mask`` of Python booleans (or a function of the params returning one) splits the leaves into a
    decayed and an undecayed call; a mask of arrays makes ``step`` use the composed chain. ``nesterov=True`` is
    :func:`nadamw`.
    """
    _checks.check_rate_or_schedule('weight_decay', weight_decay)  # None would be the undecayed optimizer
    return _fused(learning_rate, b1, b2, eps, eps_root, weight_decay, mask, mu_dtype, nu_dtype, nesterov)


def nadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.nadam` (Dozat 2016, Adam with Nesterov momentum; ``optax.nadam``) with a fused, in-place
    ``step``.

    .. math::

       \hat m_t = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g_t}{1-\beta_1^t}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \, \hat m_t / (\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon)

    The same single pass as :func:`adam` (28 B/param): the look-ahead needs only :math:`m_t` and :math:`g_t`,
    which the pass holds. Float32 moments run the kernel; 8-bit moments run the chain, inside the same jitted step
    (in the 8-bit chain XLA fuses one or the other product of the look-ahead, depending on the leaf's shape, so the
    8-bit kernel has no look-ahead to match it with). ``nesterov`` is there for the
    signature of :func:`adam_jax.nadam` and ``optax.nadam``: ``nesterov=False`` gives :func:`adam`.
    """
    return _fused(learning_rate, b1, b2, eps, eps_root, None, None, mu_dtype, nu_dtype, nesterov)


def nadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    *,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
    nesterov: bool = True,
) -> FusedTransformation:
    r""":func:`adam_jax.nadamw` (:func:`nadam`'s direction with decoupled weight decay; ``optax.nadamw``) with a
    fused, in-place ``step``. Arguments as :func:`adamw`'s (``weight_decay`` and after are keyword-only);
    ``nesterov=False`` gives :func:`adamw`."""
    _checks.check_rate_or_schedule('weight_decay', weight_decay)  # None would be the undecayed optimizer
    return _fused(learning_rate, b1, b2, eps, eps_root, weight_decay, mask, mu_dtype, nu_dtype, nesterov)


def adamax(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.adamax` (Kingma & Ba 2014, Algorithm 2; ``optax.adamax``) with a fused, in-place ``step``.

    .. math::

       u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
       \theta_t = \theta_{t-1} - \frac{\alpha_t}{1-\beta_1^t} \frac{m_t}{u_t}

    The same single pass as :func:`adam` (28 B/param), with the infinity norm :math:`u_t` in place of :math:`v_t`.
    Float32 moments run the kernel; 8-bit moments run the chain, inside the same jitted step (the 8-bit kernel has
    Adam's second moment only).
    """
    return _fused(learning_rate, b1, b2, eps, 0.0, None, None, mu_dtype, nu_dtype, False, 'adamax')


def adamaxw(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.adamaxw` (:func:`adamax`'s direction with decoupled weight decay; ``optax.adamaxw``) with a
    fused, in-place ``step``. A ``mask`` of Python booleans (or a function of the params returning one) splits the
    leaves into a decayed and an undecayed call; a mask of arrays makes ``step`` use the composed chain."""
    _checks.check_rate_or_schedule('weight_decay', weight_decay)  # None would be the undecayed optimizer
    return _fused(learning_rate, b1, b2, eps, 0.0, weight_decay, mask, mu_dtype, nu_dtype, False, 'adamax')


def amsgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.amsgrad` (Reddi, Kale & Kumar 2018; ``optax.amsgrad``) with a fused, in-place ``step``.

    .. math::

       \hat v_t = \max(\hat v_{t-1}, v_t / (1-\beta_2^t)), \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    One pass that also reads and writes the running maximum :math:`\hat v`: 36 B/param (torch's fused
    ``Adam(amsgrad=True)`` moves as many). ``bias_correction_mu=False, bias_correction_nu=False`` is the paper's
    Algorithm 2. Moments must be float32 for the kernel (the maximum is never 8-bit); other storage runs the chain.
    """
    _checks.check_bool('bias_correction_mu', bias_correction_mu)
    _checks.check_bool('bias_correction_nu', bias_correction_nu)
    corrections = (bool(bias_correction_mu), bool(bias_correction_nu))
    return _fused(learning_rate, b1, b2, eps, eps_root, None, None, mu_dtype, nu_dtype, False, 'amsgrad', corrections)


def adabelief(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-16,
    eps_root: chex.Numeric = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.adabelief` (Zhuang et al. 2020, Algorithm 2; ``optax.adabelief``) with a fused, in-place
    ``step``.

    .. math::

       s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \quad
       \theta_t = \theta_{t-1} - \alpha_t \frac{\hat m_t}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}

    The same single pass as :func:`adam` (28 B/param): the prediction error needs only :math:`g_t` and the new
    :math:`m_t`, which the pass holds. Moments must be float32 for the kernel (8-bit s_t is refused by the chain);
    other storage runs the chain, and so does ``nesterov=True`` (NAdam's look-ahead, as :func:`adam_jax.adabelief`):
    in that chain XLA fuses one or the other product of the look-ahead depending on the leaf's size and shape.
    """
    return _fused(learning_rate, b1, b2, eps, eps_root, None, None, mu_dtype, nu_dtype, nesterov, 'adabelief')


def radam(
    learning_rate: optax.ScalarOrSchedule,
    b1: chex.Numeric = 0.9,
    b2: chex.Numeric = 0.999,
    eps: chex.Numeric = 1e-8,
    eps_root: chex.Numeric = 0.0,
    threshold: chex.Numeric = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    nu_dtype: Any | None = None,
) -> FusedTransformation:
    r""":func:`adam_jax.radam` (Liu et al. 2020; ``optax.radam``) with a fused, in-place ``step``.

    .. math::

       \theta_t = \theta_{t-1} - \alpha_t \begin{cases} r_t \, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
       + \epsilon) & \rho_t \ge \text{threshold} \\ \hat m_t & \text{otherwise} \end{cases}

    The same single pass as :func:`adam` (28 B/param): :math:`r_t` and whether the step is tractable are two
    scalars of the step, formed by the function the chain uses (:func:`adam_jax.normalize.rectifier`). Moments must
    be float32 for the kernel; 8-bit moments take the chain, inside the same jitted step.
    """
    return _fused(
        learning_rate, b1, b2, eps, eps_root, None, None, mu_dtype, nu_dtype, nesterov, 'radam', threshold=threshold
    )
