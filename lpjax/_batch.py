"""Batch bookkeeping shared by every statistic: the sample mask and cross-device sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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
