"""Argument checks shared by the public functions.

Shapes and dtypes are checked at trace time. Value checks (signs of bounds,
class counts) run only on concrete arrays: inside ``jax.jit`` the values are
unknown, so they cannot raise there (see :func:`lpjax.validate_labels` for the
checked path of label values).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def is_concrete(x) -> bool:
    """Whether ``x`` holds known values (not a tracer inside a transformation)."""
    return not isinstance(x, jax.core.Tracer)


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype batch statistics are computed in: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def check_logits(logits, name: str = "logits") -> tuple[int, int]:
    """Checks ``logits`` is a floating ``[batch, num_classes]`` array; returns its shape."""
    if jnp.ndim(logits) != 2:
        raise ValueError(
            f"{name} must have shape [batch, num_classes]; got shape {jnp.shape(logits)}."
        )
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise TypeError(f"{name} must be a floating array; got dtype {jnp.result_type(logits)}.")
    batch_size, num_classes = jnp.shape(logits)
    if batch_size < 1 or num_classes < 1:
        raise ValueError(
            f"{name} must have at least one sample and one class; got shape {jnp.shape(logits)}."
        )
    return batch_size, num_classes


def check_num_classes(classes: int, num_classes: int) -> None:
    """Refuses logits whose class count differs from the one a transform was built for."""
    if classes != num_classes:
        raise ValueError(
            f"logits have {classes} classes; the transform was built for {num_classes} "
            f"(num_classes = {num_classes})."
        )


def _varying_axes(x) -> frozenset:
    """The mapped axes ``x`` varies over inside ``jax.shard_map`` (empty elsewhere).

    Read from the abstract value (``mat.varying`` in this JAX, ``vma`` in others); with
    ``check_vma=False`` or under ``jax.pmap`` JAX does not track it and this is empty.
    """
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    varying = getattr(mat, "varying", None) if mat is not None else getattr(aval, "vma", None)
    return frozenset(varying or ())


def check_axis_name(logits, axis_name) -> None:
    """Refuses ``axis_name=None`` for logits split over a ``shard_map`` axis.

    Without it, class statistics would cover this device's shard only and differ from
    device to device.
    """
    if axis_name is None:
        axes = _varying_axes(logits)
        if axes:
            raise ValueError(
                f"the logits are split over the mapped axis {sorted(axes)} (inside "
                "jax.shard_map), but axis_name is None: class statistics would cover one "
                f"device's shard only. Pass axis_name={sorted(axes)[0]!r}."
            )


def check_batch(
    logits,
    labels,
    where,
    axis_name,
    *,
    labels_kind: str = "integer",
    reduces_over_batch: bool = True,
    name: str = "logits",
) -> tuple[int, int]:
    """Checks a batch at a public entry; returns ``(batch_size, num_classes)``.

    ``logits`` floating ``[batch, num_classes]``; ``labels`` by ``labels_kind``:
    ``"integer"`` ``[batch]`` class indices, ``"multihot"`` 0/1 ``[batch, num_classes]``,
    ``"soft"`` values in [0, 1] of that shape, ``"none"`` not checked; ``where`` an
    optional boolean ``[batch]``; ``axis_name`` given when the logits are split over a
    ``shard_map`` axis (unless the function does not ``reduces_over_batch``).
    """
    batch_size, num_classes = check_logits(logits, name)
    if labels_kind == "integer":
        check_integer_labels(labels, batch_size)
    elif labels_kind in ("multihot", "soft"):
        check_multihot_labels(labels, (batch_size, num_classes), binary=labels_kind == "multihot")
    elif labels_kind != "none":
        raise ValueError(f"unknown labels_kind {labels_kind!r}")
    check_where(where, batch_size)
    if reduces_over_batch:
        check_axis_name(logits, axis_name)
    return batch_size, num_classes


def check_integer_labels(labels, batch_size: int) -> None:
    """Checks ``labels`` is an integer ``[batch]`` array."""
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            "labels must be integer class indices of shape [batch]; got dtype "
            f"{jnp.result_type(labels)} (for one-hot labels use jnp.argmax(labels, -1))."
        )
    if jnp.shape(labels) != (batch_size,):
        raise ValueError(
            f"labels must have shape [batch] = ({batch_size},) to match the logits; "
            f"got shape {jnp.shape(labels)}."
        )


def require_labels(labels, user: str) -> None:
    """Refuses ``labels=None`` for a transform that needs the labels of the batch."""
    if labels is None:
        raise ValueError(f"{user} needs the labels of the batch; got labels=None.")


def check_multihot_labels(labels, shape: tuple[int, ...], *, binary: bool = True) -> None:
    """Checks ``labels`` is a multi-hot array of the logits' ``shape``.

    Concrete values must be 0 or 1 (``binary``) or lie in [0, 1] (soft targets);
    traced values cannot be checked.
    """
    dtype = jnp.result_type(labels)
    if not (
        dtype == jnp.bool_
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.floating)
    ):
        raise TypeError(
            f"labels must be a bool, integer or floating multi-hot array; got dtype {dtype}."
        )
    if jnp.shape(labels) != shape:
        raise ValueError(
            f"labels must be multi-hot of the logits' shape {shape}; got shape "
            f"{jnp.shape(labels)} (for class indices use jax.nn.one_hot(labels, num_classes))."
        )
    if is_concrete(labels) and dtype != jnp.bool_:
        values = np.asarray(labels, dtype=np.float64)
        if binary:
            bad = ~np.isin(values, (0.0, 1.0))
            expected = "only 0 and 1"
        else:
            bad = ~((values >= 0) & (values <= 1))
            expected = "values in [0, 1]"
        if np.any(bad):
            raise ValueError(
                f"labels must hold {expected} (multi-hot); got values "
                f"{np.unique(values[bad])[:10].tolist()}."
            )


def check_where(where, batch_size: int) -> None:
    """Checks an optional ``where`` mask is a boolean ``[batch]`` array."""
    if where is None:
        return
    if jnp.shape(where) != (batch_size,):
        raise ValueError(
            f"where must have shape [batch] = ({batch_size},); got shape {jnp.shape(where)}."
        )
    if jnp.result_type(where) != jnp.bool_:
        raise TypeError(f"where must be a boolean array; got dtype {jnp.result_type(where)}.")


def check_class_vector(name: str, x, num_classes: int) -> None:
    """Checks ``x`` has shape ``[num_classes]``."""
    if np.shape(x) != (num_classes,):
        raise ValueError(
            f"{name} must have shape [num_classes] = ({num_classes},); got shape {np.shape(x)}."
        )


def check_nonnegative(name: str, x) -> None:
    """Checks concrete values of ``x`` are finite and >= 0."""
    if is_concrete(x):
        values = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{name} must be finite and >= 0; got {values}.")


def check_signs(name: str, signs) -> None:
    """Checks concrete values of ``signs`` lie in {-1, 0, +1}."""
    if is_concrete(signs) and not np.all(np.isin(np.asarray(signs), (-1, 0, 1))):
        raise ValueError(f"{name} must take values in {{-1, 0, +1}}; got {np.asarray(signs)}.")


def check_positive_scalar(name: str, x) -> None:
    """Checks ``x`` is a scalar and, when concrete, finite and > 0."""
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(x)}.")
    if is_concrete(x):
        value = float(x)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0; got {value}.")


def check_class_counts(class_counts, name: str = "class_counts") -> int:
    """Checks ``class_counts`` is a ``[num_classes]`` vector of positive counts."""
    if np.ndim(class_counts) != 1 or np.shape(class_counts)[0] < 1:
        raise ValueError(
            f"{name} must be a non-empty vector [num_classes] of training-set counts; "
            f"got shape {np.shape(class_counts)}."
        )
    if is_concrete(class_counts):
        values = np.asarray(class_counts, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
            raise ValueError(
                f"{name} must be > 0 for every class (a class with no training "
                f"sample has no prior); got {values[bad].tolist()} at classes {bad.tolist()}."
            )
    return int(np.shape(class_counts)[0])


def validate_labels(labels, num_classes: int) -> None:
    """Checks that every label lies in ``[0, num_classes)``.

    Inside jitted code an out-of-range label cannot raise: lpjax's functions
    then treat that sample as masked (zero perturbation, excluded from every
    statistic). Call this on the host before training to fail loudly instead.
    On concrete arrays it raises ``ValueError``; on traced arrays it adds a
    ``checkify`` check, reported when the caller wraps the function in
    ``jax.experimental.checkify.checkify``::

      checked = checkify.checkify(jax.jit(train_step))
      err, out = checked(state, batch)
      err.throw()

    Args:
      labels: integer array of any shape.
      num_classes: the number of classes C.

    Example::

      >>> import numpy as np, lpjax
      >>> lpjax.validate_labels(np.array([0, 2, 1]), num_classes=3)
      >>> lpjax.validate_labels(np.array([0, 3]), num_classes=3)
      Traceback (most recent call last):
      ValueError: labels must lie in [0, 3); got out-of-range values [3].
    """
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(f"labels must be integers; got dtype {jnp.result_type(labels)}.")
    if is_concrete(labels):
        values = np.asarray(labels)
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise ValueError(
                f"labels must lie in [0, {num_classes}); got out-of-range values "
                f"{np.unique(bad)[:10].tolist()}."
            )
    else:
        in_range = jnp.all((labels >= 0) & (labels < num_classes))
        checkify.check(in_range, f"labels must lie in [0, {num_classes}).")
