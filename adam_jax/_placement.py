"""Where state arrays go on a mesh: the helpers that quantization, factored and sharding share.

JAX's jit cache tells ``P('data', None)`` and ``P('data')`` apart although they place data alike, so every
sharding made here is in the form jit hands back (:func:`normal_form`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec


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
