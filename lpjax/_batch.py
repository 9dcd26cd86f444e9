"""Batch bookkeeping shared by every statistic: the sample mask, cross-device sums and
arrays sharded with explicit mesh axes."""

from __future__ import annotations

import functools
import math
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


def global_batch_axes(x) -> tuple[str, ...]:
    """The mesh axes the batch of ``x`` is split over in the global view; () for none.

    * ``x`` sharded over ``Explicit`` mesh axes: the axes of its first dimension.
    * otherwise, inside ``jax.set_mesh(mesh)`` with ``Auto`` axes: every axis of the mesh
      (the solver then lays the batch out over all its devices; an input split otherwise
      is resharded to that layout, which is one array's worth of traffic at most).
    * otherwise (one device, no mesh set, inside ``jax.shard_map``): ().

    A mesh of one device gives ().
    """
    if explicit_axes(x):
        first = jax.typeof(x).sharding.spec[0]
        axes = () if first is None else (first,) if isinstance(first, str) else tuple(first)
        mesh = jax.typeof(x).sharding.mesh
    else:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or any(kind != AxisType.Auto for kind in mesh.axis_types):
            return ()
        axes = tuple(mesh.axis_names)
    return axes if math.prod(mesh.shape[name] for name in axes) > 1 else ()


def map_over_batch_shards(kernel, batch_axes: tuple[str, ...], logits, labels, where, replicated):
    """``kernel(logits, labels, *replicated, where, axis_name=batch_axes)`` under ``shard_map``.

    ``logits``, ``labels`` and ``where`` (``[B, ...]``; ``where`` may be None) are split
    over the mesh axes ``batch_axes``, padded first with masked samples to a multiple of
    their size (the padding dropped from the result); ``replicated`` arrays are passed
    whole. The kernel returns one per-sample array.
    """
    explicit = bool(explicit_axes(logits))
    mesh = jax.typeof(logits).sharding.mesh if explicit else jax.sharding.get_abstract_mesh()
    batch_size = logits.shape[0]
    padding = -batch_size % math.prod(mesh.shape[name] for name in batch_axes)
    if padding:
        where = jnp.ones(batch_size, bool) if where is None else where
        logits, labels, where = (
            jnp.pad(x, [(0, padding)] + [(0, 0)] * (x.ndim - 1)) for x in (logits, labels, where)
        )
    batched = tuple(jnp.asarray(x) for x in (logits, labels, where) if x is not None)
    if explicit:
        batched = tuple(jax.sharding.reshard(x, PartitionSpec(batch_axes)) for x in batched)

    def per_device(logits, labels, *rest):
        where = rest[-1] if len(batched) == 3 else None
        return kernel(logits, labels, *rest[: len(replicated)], where, axis_name=batch_axes)

    spec = PartitionSpec(batch_axes)
    out = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(spec, spec, *(PartitionSpec(),) * len(replicated), *(spec,) * (len(batched) - 2)),
        out_specs=spec,
        axis_names=frozenset(batch_axes),
    )(*batched[:2], *replicated, *batched[2:])
    return out[:batch_size] if padding else out


def flatten_leading(logits, **per_sample):
    """``[..., C]`` logits and their per-sample arrays as one batch axis: ``[N, C]``.

    ``per_sample`` arrays (or None) have the logits' leading shape ``L = logits.shape[:-1]``
    followed by their own trailing axes (integer labels and ``where``: none; multi-hot
    labels: ``C``; features: ``D``); they become ``[N, ...]`` with ``N = prod(L)``.
    Returns ``(L, logits, per_sample)``, with ``L = None`` (and everything as given) when
    the logits have at most two axes. Class statistics then run over every leading
    position, which is what the transforms promise for sequence and dense heads.
    """
    shape = jnp.shape(logits)
    if len(shape) <= 2:
        return None, logits, per_sample
    lead = tuple(shape[:-1])
    flat = {}
    for name, x in per_sample.items():
        if x is None:
            flat[name] = None
            continue
        x_shape = tuple(jnp.shape(x))
        if x_shape[: len(lead)] != lead:
            raise ValueError(
                f"{name} must have the logits' leading shape {lead} (logits {tuple(shape)}), "
                f"then its own axes; got shape {x_shape}."
            )
        flat[name] = jnp.reshape(x, (-1, *x_shape[len(lead) :]))
    return lead, jnp.reshape(logits, (-1, shape[-1])), flat


def unflatten_leading(lead, x):
    """Undoes :func:`flatten_leading` on a per-sample result ``[N, ...]``."""
    return x if lead is None else jnp.reshape(x, (*lead, *jnp.shape(x)[1:]))


def apply_over_leading_axes(apply=None, *, per_sample_extras: tuple[str, ...] = ()):
    """Lets a transform's ``apply``, written for ``[B, C]`` logits, take ``[..., C]``.

    The logits, labels, ``where`` and the extra arguments named in ``per_sample_extras``
    (ISDA's ``features``) are flattened by :func:`flatten_leading`; the perturbed logits
    get the logits' shape back. The state is the same as for the flattened batch.
    """
    if apply is None:
        return functools.partial(apply_over_leading_axes, per_sample_extras=per_sample_extras)

    @functools.wraps(apply)
    def wrapped(logits, labels, state, *, where=None, axis_name=None, **extra_args):
        extras = {k: extra_args[k] for k in per_sample_extras if k in extra_args}
        lead, logits, flat = flatten_leading(logits, labels=labels, where=where, **extras)
        labels, where = flat.pop("labels"), flat.pop("where")
        perturbed, state = apply(
            logits, labels, state, where=where, axis_name=axis_name, **{**extra_args, **flat}
        )
        return unflatten_leading(lead, perturbed), state

    return wrapped
