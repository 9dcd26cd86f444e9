"""Batch bookkeeping shared by every statistic: the sample mask and cross-device sums."""

from __future__ import annotations

import jax
from jax import lax


def sum_over_devices(x: jax.Array, axis_name) -> jax.Array:
    """``lax.psum(x, axis_name)``, or ``x`` itself when ``axis_name`` is None."""
    return x if axis_name is None else lax.psum(x, axis_name)


def valid_samples(labels: jax.Array, num_classes: int, where) -> jax.Array:
    """Boolean ``[batch]``: samples that enter statistics.

    A sample is excluded when ``where`` is False for it or its label lies
    outside ``[0, num_classes)`` (which jitted code cannot report; see
    :func:`lpjax.validate_labels`).
    """
    valid = (labels >= 0) & (labels < num_classes)
    if where is not None:
        valid = valid & where
    return valid
