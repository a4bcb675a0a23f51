r"""Where the optimizer state lives on a device mesh: following the params, or ZeRO-1 partitioned.

Adam keeps two moments per parameter, so its state is twice the size of the model.
By default the state follows the parameters: every moment leaf has its
parameter's sharding (``init`` on sharded params gives that directly; under
``jax.jit`` pass :func:`state_shardings` as ``out_shardings``), and the step
count is replicated on the same mesh. With pure data parallelism the
parameters, and so the state, are replicated on every device: per device

.. math::

   \text{bytes}_{\text{replicated}} = N (b_\theta + b_m + b_v).

ZeRO stage 1 (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
Training Trillion Parameter Models") partitions the optimizer state over the
:math:`D` data-parallel devices while the parameters stay replicated:

.. math::

   \text{bytes}_{\text{ZeRO-1}} = N b_\theta + N (b_m + b_v) / D.

:func:`zero1_shardings` returns such shardings; ``jax.jit`` with them as in/out
shardings then updates each device's slice of the moments and all-gathers the
update for the replicated parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from adam_jax import _checks
from adam_jax._placement import mesh_axes, named_sharding, normal_form
from adam_jax.factored import FactoredMoment, factored_shardings
from adam_jax.quantization import QuantizedArray, absmax_sharding, whole_block_shards


def _sharding_of(x: Any) -> jax.sharding.Sharding:
    sharding = getattr(x, 'sharding', None)
    if not isinstance(sharding, jax.sharding.Sharding):
        raise ValueError(
            'state_shardings needs params whose leaves carry a sharding (a jax.Array, or a '
            f'jax.ShapeDtypeStruct with sharding=...), got a leaf {x!r} without one.'
        )
    return sharding


def _replicated(sharding: jax.sharding.Sharding) -> jax.sharding.Sharding:
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    raise ValueError(
        'state_shardings needs params with a NamedSharding (on a mesh) or a SingleDeviceSharding, got '
        f'{type(sharding).__name__}; device_put the params with a NamedSharding first.'
    )


def state_shardings(optimizer: optax.GradientTransformation, params: Any) -> Any:
    """Shardings of ``optimizer``'s state that follow the parameters.

    Every params-shaped leaf of the state (the moments, and any other
    per-parameter buffer in the chain) gets the sharding of its parameter;
    every other leaf (the step count) is replicated on the parameters' mesh.
    Use it as ``out_shardings`` of a jitted ``init`` (``jax.jit(opt.init)``
    alone does not follow the input shardings) and as in/out shardings of the
    jitted step::

        state_sh = adam_jax.state_shardings(opt, params)
        state = jax.jit(opt.init, out_shardings=state_sh)(params)

    Args:
      optimizer: the transform whose state is meant.
      params: the parameters: a tree of ``jax.Array`` or of
        ``jax.ShapeDtypeStruct`` with ``sharding=...``.

    Returns:
      A tree of shardings with the structure of ``optimizer.init(params)``.
    """
    shardings = jax.tree.map(_sharding_of, params)
    leaves = jax.tree.leaves(shardings)
    if not leaves:
        raise ValueError('state_shardings needs at least one parameter leaf, got an empty tree.')
    replicated = _replicated(leaves[0])
    return optax.tree_map_params(
        optimizer,
        _follow,
        jax.eval_shape(optimizer.init, params),
        shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (QuantizedArray, FactoredMoment, optax.MaskedNode)),
    )


def _follow(state_leaf: Any, sharding: jax.sharding.Sharding) -> Any:
    """The sharding of one per-parameter state entry whose parameter has ``sharding``."""
    if isinstance(state_leaf, optax.MaskedNode):  # a leaf that optax.masked / multi_transform leaves out
        return state_leaf
    if isinstance(state_leaf, QuantizedArray):
        absmax = _absmax_sharding(state_leaf, sharding)
        return QuantizedArray(codes=sharding, absmax=absmax, block_size=state_leaf.block_size)
    if isinstance(state_leaf, FactoredMoment):  # row/column statistics: split like the leaf's other axes
        where = factored_shardings(sharding, len(state_leaf.row.shape) + 1, state_leaf.axes)
        if where is None:
            return jax.tree.map(lambda _: _replicated(sharding), state_leaf)
        return FactoredMoment(*where, state_leaf.axes)
    return sharding


def _absmax_sharding(q: QuantizedArray, sharding: jax.sharding.Sharding) -> jax.sharding.Sharding:
    """absmax holds one scale per block of the row-major flattening (see quantization.absmax_sharding)."""
    return absmax_sharding(sharding, q.shape, q.block_size) or _replicated(sharding)


def _require_shape(leaf: Any) -> None:
    if not hasattr(leaf, 'shape'):
        raise TypeError(
            'zero1_shardings needs the abstract state (leaves with .shape, e.g. jax.eval_shape(opt.init, params)), '
            f'got a leaf {leaf!r}. To keep shardings the abstract state lacks (on Auto axes jax.eval_shape returns '
            'none), pass jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), '
            'jax.eval_shape(opt.init, params), adam_jax.state_shardings(opt, params)).'
        )


def _zero1_spec(leaf: Any, mesh: Mesh, axis: str, min_size: int) -> PartitionSpec:
    _require_shape(leaf)
    shape = tuple(leaf.shape)
    base = named_sharding(leaf)
    spec = list(base.spec) if base is not None and base.mesh.axis_names == mesh.axis_names else []
    spec += [None] * (len(shape) - len(spec))
    if math.prod(shape) < min_size or any(axis in mesh_axes(entry) for entry in spec):
        return normal_form(spec, mesh)
    size = mesh.shape[axis]
    best, best_len = None, 0
    for d, n in enumerate(shape):
        already = math.prod(mesh.shape[a] for a in mesh_axes(spec[d]))
        local = n // already
        if n % (already * size) == 0 and local > best_len:
            best, best_len = d, local
    if best is not None:
        spec[best] = mesh_axes(spec[best]) + (axis,) if spec[best] is not None else axis
    return normal_form(spec, mesh)


def zero1_shardings(abstract_state: Any, mesh: Mesh, axis: str, *, min_size: int = 1024) -> Any:
    r"""ZeRO stage 1: shardings that partition every state leaf over the mesh axis ``axis``.

    Each leaf is split along its largest dimension that the axis divides (a
    leaf already sharded over other mesh axes keeps that sharding and adds
    ``axis`` to it); leaves with fewer than ``min_size`` elements, scalars (the
    step count) and leaves with no divisible dimension stay replicated. With
    the parameters replicated and these shardings for the state, per device

    .. math::

       \text{bytes} = N b_\theta + N (b_m + b_v) / |\text{axis}|

    instead of :math:`N (b_\theta + b_m + b_v)` (Rajbhandari et al. 2020).
    Use them as in/out shardings of the jitted step::

        abstract = jax.eval_shape(opt.init, params)
        state_sh = adam_jax.zero1_shardings(abstract, mesh, 'data')
        state = jax.jit(opt.init, out_shardings=state_sh)(params)
        step = jax.jit(train_step, in_shardings=(params_sh, state_sh, batch_sh),
                       out_shardings=(params_sh, state_sh))

    Args:
      abstract_state: the state, or its ``jax.eval_shape`` (leaves with
        ``.shape``; a leaf's ``NamedSharding`` on ``mesh``, if it has one, is
        kept and extended).
      mesh: the device mesh.
      axis: the data-parallel mesh axis to partition over.
      min_size: leaves with fewer elements stay replicated (the collective
        costs more than the memory saved).

    Returns:
      A tree of ``NamedSharding`` with the structure of ``abstract_state``.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f'axis must be one of the mesh axes {tuple(mesh.axis_names)}, got {axis!r}.')
    _checks.check_nonnegative('min_size', min_size)

    def one(leaf: Any) -> Any:
        if isinstance(leaf, QuantizedArray):
            return _zero1_quantized(leaf, mesh, axis, min_size)
        return NamedSharding(mesh, _zero1_spec(leaf, mesh, axis, min_size))

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, QuantizedArray))


def _zero1_quantized(q: QuantizedArray, mesh: Mesh, axis: str, min_size: int) -> QuantizedArray:
    """8-bit codes and their absmax split together: by rows, when each device then holds whole blocks of the
    row-major flattening (absmax split the same way, no communication between them); else each on its own."""
    codes, absmax = q.codes, q.absmax
    _require_shape(codes)
    base = named_sharding(codes)
    unsharded = base is None or all(entry is None for entry in base.spec)
    size, shards = math.prod(codes.shape), mesh.shape[axis]
    if unsharded and codes.shape and size >= min_size and codes.shape[0] % shards == 0:
        rows = NamedSharding(mesh, normal_form([axis] + [None] * (len(codes.shape) - 1), mesh))
        if whole_block_shards(rows, codes.shape, q.block_size):
            return QuantizedArray(codes=rows, absmax=NamedSharding(mesh, PartitionSpec(axis)), block_size=q.block_size)
    return QuantizedArray(
        codes=NamedSharding(mesh, _zero1_spec(codes, mesh, axis, min_size)),
        absmax=NamedSharding(mesh, _zero1_spec(absmax, mesh, axis, min_size)),
        block_size=q.block_size,
    )
