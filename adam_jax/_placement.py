"""Where state arrays go on a mesh: the helpers that quantization, factored and sharding share.

JAX's jit cache tells ``P('data', None)`` and ``P('data')`` apart although they place data alike, so every
sharding made here is in the form jit hands back (:func:`normal_form`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def mesh_axes(entry: Any) -> tuple[str, ...]:
    """The mesh axes of one entry of a PartitionSpec (None, a name, or a tuple of names)."""
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def normal_form(spec: Any, mesh: Any) -> PartitionSpec:
    """``spec`` as jit gives it back: one entry per dimension with explicit mesh axes, no trailing None with auto
    ones (pass ``spec`` with one entry per dimension)."""
    spec = list(spec)
    if not mesh.are_all_axes_explicit:
        while spec and spec[-1] is None:
            spec.pop()
    return PartitionSpec(*spec)


def explicit_sharding(x: Any) -> NamedSharding | None:
    """The sharding of ``x`` over explicit mesh axes (the default of ``jax.make_mesh``), or None when it has none
    (a replicated value, auto axes, no mesh)."""
    sharding = getattr(jax.typeof(x), 'sharding', None)
    if not isinstance(sharding, NamedSharding) or all(entry is None for entry in sharding.spec):
        return None
    return sharding


def placed_sharding(x: Any) -> jax.sharding.Sharding | None:
    """Where an array (or tracer, or ``jax.ShapeDtypeStruct``) has been placed, or None if it has not: a concrete
    array jax may still move (uncommitted), and a tracer without explicit sharding, are not placed."""
    if isinstance(x, jax.core.Tracer):
        return explicit_sharding(x)
    if isinstance(x, jax.Array) and not getattr(x, '_committed', False):
        return None
    sharding = getattr(x, 'sharding', None)
    return sharding if isinstance(sharding, jax.sharding.Sharding) else None


def without_dim(sharding: Any, ndim: int, dim: int) -> jax.sharding.Sharding | None:
    """The sharding of a reduction over dimension ``dim`` of an ``ndim``-dimensional array with ``sharding``: the
    other dimensions keep their mesh axes (what XLA computes with explicit axes)."""
    if isinstance(sharding, NamedSharding):
        spec = list(sharding.spec) + [None] * (ndim - len(sharding.spec))
        return NamedSharding(sharding.mesh, normal_form(spec[:dim] + spec[dim + 1 :], sharding.mesh))
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    return None


def named_sharding(x: Any) -> NamedSharding | None:
    """The NamedSharding of an array, tracer or ShapeDtypeStruct, or None."""
    if isinstance(x, jax.core.Tracer):
        sharding = getattr(jax.typeof(x), 'sharding', None)
    else:
        sharding = getattr(x, 'sharding', None)
    return sharding if isinstance(sharding, NamedSharding) else None


def _scalar_sharding(leaf: Any) -> jax.sharding.Sharding | None:
    """Where a scalar belongs next to ``leaf``: replicated on its mesh, or on its device if committed to one."""
    if isinstance(leaf, jax.core.Tracer):  # carries an abstract mesh (empty outside a mesh context)
        sharding = named_sharding(leaf)
        return None if sharding is None else NamedSharding(sharding.mesh, PartitionSpec())
    # Arrays that jax may still move (uncommitted) leave the scalar on the default device too.
    if not getattr(leaf, '_committed', True):
        return None
    sharding = getattr(leaf, 'sharding', None)
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
        return NamedSharding(sharding.mesh, PartitionSpec())
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    return None


def replicated_zero(params: Any, dtype: Any) -> jax.Array:
    """A scalar zero placed where the params are: replicated on their mesh, or on their device.

    A step count left uncommitted on the default device would come back from
    the first jitted step committed to the params' devices, and the step would
    compile a second time.
    """
    for leaf in jax.tree.leaves(params):
        sharding = _scalar_sharding(leaf)
        if sharding is not None:
            return jax.lax.full((), 0, jnp.dtype(dtype), sharding=sharding)
    return jnp.zeros([], dtype)
