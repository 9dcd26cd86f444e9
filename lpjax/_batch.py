"""Batch bookkeeping shared by every statistic: the sample mask, cross-device sums and
arrays sharded with explicit mesh axes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, PartitionSpec


def sum_over_devices(x: jax.Array, axis_name) -> jax.Array:
    """``lax.psum(x, axis_name)``, or ``x`` itself when ``axis_name`` is None."""
    return x if axis_name is None else lax.psum(x, axis_name)


def valid_samples(labels: jax.Array, num_classes: int, where, logits=None) -> jax.Array:
    """Boolean ``[batch]``: samples that enter statistics.

    A sample is excluded when ``where`` is False for it, its label lies
    outside ``[0, num_classes)`` (which jitted code cannot report; see
    :func:`lpjax.validate_labels`), or -- when ``logits`` are given -- one of its
    logits is NaN or infinite (so it cannot poison the class statistics of others).
    """
    valid = (labels >= 0) & (labels < num_classes)
    if where is not None:
        valid = valid & where
    if logits is not None:
        valid = valid & finite_samples(logits)
    return valid


def finite_samples(logits: jax.Array) -> jax.Array:
    """Boolean ``[batch]``: samples whose logits are all finite."""
    return jnp.all(jnp.isfinite(logits), axis=-1)


def class_values(vector: jax.Array, labels: jax.Array) -> jax.Array:
    """``vector[labels]`` for ``[C]`` class values, 0 for labels outside ``[0, C)``.

    A one-hot contraction rather than a gather, so that it needs no sharding annotation
    when the labels are split over an ``Explicit`` mesh axis.
    """
    vector = jnp.asarray(vector)
    onehot = jax.nn.one_hot(labels, vector.shape[0], dtype=vector.dtype)
    return jnp.sum(onehot * vector, axis=-1)


def explicit_axes(x) -> tuple[str, ...]:
    """The mesh axes of ``x``'s sharding that are ``Explicit`` (sharding in types); else ()."""
    mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
    if mesh is None or not getattr(mesh, "axis_names", ()):
        return ()
    return tuple(
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == AxisType.Explicit
    )


def batch_statistics(out_specs: Callable[[Any], Any]):
    """Lets a kernel ``kernel(logits, ...)`` run on logits sharded over ``Explicit`` axes.

    Class statistics use scatters and sorts over the batch, whose output sharding JAX
    cannot infer when the batch is split over an ``Explicit`` mesh axis (the global view
    with ``jax.make_mesh``'s default axis types). There the kernel runs under
    ``jax.sharding.auto_axes``, so the compiler places the reductions as it does for
    ``Auto`` axes; ``out_specs(batch_axes)`` gives the ``PartitionSpec`` pytree of its
    outputs from the mesh axes the batch is split over (``PartitionSpec(batch_axes)`` for
    a per-sample output, ``PartitionSpec()`` for a replicated one). Positional arguments
    of the kernel are arrays (or None), keyword arguments static (``axis_name``, caps).
    Elsewhere (one device, ``Auto`` axes, inside ``shard_map``) the kernel runs as it is.
    """

    def decorator(kernel):
        @functools.wraps(kernel)
        def run(logits, *arrays, **static):
            axes = explicit_axes(logits)
            if not axes:
                return kernel(logits, *arrays, **static)
            batch_axes = jax.typeof(logits).sharding.spec[0]
            return jax.sharding.auto_axes(
                functools.partial(kernel, **static), axes=axes, out_sharding=out_specs(batch_axes)
            )(logits, *arrays)

        return run

    return decorator


def per_sample(batch_axes) -> PartitionSpec:
    """``out_specs`` of a kernel returning one ``[batch, ...]`` array."""
    return PartitionSpec(batch_axes)


def replicated(num_outputs: int):
    """``out_specs`` of a kernel returning ``num_outputs`` replicated arrays (a tuple)."""
    return lambda batch_axes: (PartitionSpec(),) * num_outputs
