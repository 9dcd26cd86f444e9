"""Per-example losses in optax's style: ``f(logits, labels, *, ...) -> array``.

A train step perturbs the logits with a :class:`lpjax.LogitTransform`, then applies one
of these (or an optax loss) to the perturbed logits and reduces::

  perturbed, state = transform.apply(logits, labels, state, where=mask, axis_name="data")
  loss = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels, where=mask)

Multi-label losses are element-wise ``[batch, num_classes]`` like
``optax.sigmoid_binary_cross_entropy`` and ``optax.sigmoid_focal_loss``; average them
over classes (``.mean(-1)``) for a per-example loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lpjax import _checks


def softmax_cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Per-example softmax cross-entropy: optax's, computed in float32 at least.

    .. math:: \ell_i = -\log \mathrm{softmax}(u_i)_{y_i}

    ``optax.softmax_cross_entropy_with_integer_labels`` itself, with its signature and
    its values: bfloat16 (or float16) logits are upcast to float32 for the log-sum-exp
    and the result is cast back to the logits' dtype. A sample where ``where`` is False
    has a loss of 0 and no gradient; a label at or above ``num_classes`` gives NaN, as
    in optax (and a negative one counts from the end, as NumPy indexing does): mask
    padding with ``where`` and check labels with :func:`lpjax.validate_labels`. The
    caller reduces, e.g. ``loss.sum() / jnp.maximum(where.sum(), 1)``.

    Args:
      logits: ``[batch, num_classes]`` (or any shape, the classes along ``axis``),
        typically the output of a transform.
      labels: integer class indices, the logits' shape without ``axis``: ``[batch]``.
      axis: the class axis, or axes (a label is then a flat index into them), as in
        optax.
      where: optional boolean ``[batch]`` (False on padding rows), or a mask of the
        logits' shape that leaves classes out of the normalizer, as in optax.

    Returns:
      ``[batch]`` losses, in the logits' dtype.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> loss = lpjax.softmax_cross_entropy_with_integer_labels(
      ...     jnp.zeros((3, 4)), jnp.array([0, 1, 2]), where=jnp.array([True, True, False]))
      >>> [round(float(x), 4) for x in loss]
      [1.3863, 1.3863, 0.0]
      >>> lpjax.softmax_cross_entropy_with_integer_labels(jnp.zeros((1, 4)), jnp.array([4]))
      Array([nan], dtype=float32)
    """
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise TypeError(f"logits must be a floating array; got dtype {jnp.result_type(logits)}.")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            "labels must be integer class indices of shape [batch]; got dtype "
            f"{jnp.result_type(labels)} (for one-hot labels use optax.softmax_cross_entropy)."
        )
    shape = jnp.shape(logits)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    try:
        axes = tuple(range(len(shape))[a] for a in axes)
    except IndexError:
        raise ValueError(f"axis {axis} is out of range for logits of shape {shape}.") from None
    expected = tuple(n for i, n in enumerate(shape) if i not in axes)
    if jnp.shape(labels) != expected:
        raise ValueError(
            f"labels must have shape [batch] = {expected} (the logits' shape {shape} without "
            f"axis {axis}); got shape {jnp.shape(labels)}."
        )
    if where is not None:
        if jnp.shape(where) not in (expected, shape):
            raise ValueError(
                f"where must have shape [batch] = {expected} or the logits' shape {shape}; "
                f"got shape {jnp.shape(where)}."
            )
        if jnp.result_type(where) != jnp.bool_:
            raise TypeError(f"where must be a boolean array; got dtype {jnp.result_type(where)}.")
        where = jnp.asarray(where)
    logits = jnp.asarray(logits)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(_checks.compute_dtype(logits.dtype)), jnp.asarray(labels), axis, where
    )
    return loss.astype(logits.dtype)


def asymmetric_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    gamma_negative: float = 4.0,
    gamma_positive: float = 0.0,
    clip: float = 0.05,
    stop_focusing_gradient: bool = False,
) -> jax.Array:
    r"""The asymmetric loss (ASL) for multi-label classification, element-wise.

    With :math:`p = \sigma(u)` and the shifted probability :math:`p_m = \max(p - m, 0)`
    of the negatives:

    .. math::
      \ell = -y\,(1 - p)^{\gamma_+} \log p - (1 - y)\, p_m^{\gamma_-} \log(1 - p_m).

    Easy negatives are down-weighted by the focusing term and those with
    :math:`p \le m` discarded entirely. Computed stably from ``log_sigmoid`` (no
    probability clamp, unlike the authors' ``eps = 1e-8``; the two differ only where
    :math:`p < 10^{-8}`), in float32 at least, returned in the logits' dtype. Like
    ``optax.sigmoid_focal_loss`` the result is per entry: ``.mean(-1)`` gives the
    per-example loss.

    Args:
      logits: ``[..., num_classes]``.
      labels: multi-hot targets of the same shape, values in [0, 1].
      gamma_negative: focusing exponent ``gamma_- >= 0`` of the negatives.
      gamma_positive: focusing exponent ``gamma_+ >= 0`` of the positives.
      clip: probability margin ``m`` in ``[0, 1)`` (0 disables the shift).
      stop_focusing_gradient: treat the focusing weights :math:`(1 - p)^{\gamma_+}` and
        :math:`p_m^{\gamma_-}` as constants in the gradient (the authors' training
        setting, ``disable_torch_grad_focal_loss=True``); False differentiates the
        formula exactly.

    Returns:
      ``[..., num_classes]`` losses.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> loss = lpjax.asymmetric_loss(jnp.array([[-4.0, 2.0]]), jnp.array([[0, 1]]))
      >>> round(float(loss.mean(-1)[0]), 4)
      0.0635

    References:
      T. Ridnik, E. Ben-Baruch, N. Zamir, A. Noy, I. Friedman, M. Protter,
      L. Zelnik-Manor, "Asymmetric Loss For Multi-Label Classification", ICCV 2021.
    """
    _checks.check_nonnegative("gamma_negative", gamma_negative)
    _checks.check_nonnegative("gamma_positive", gamma_positive)
    if not 0 <= clip < 1:
        raise ValueError(f"clip must lie in [0, 1); got {clip}.")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise TypeError(f"logits must be a floating array; got dtype {jnp.result_type(logits)}.")
    _checks.check_multihot_labels(labels, jnp.shape(logits), binary=False)
    focusing = jax.lax.stop_gradient if stop_focusing_gradient else (lambda weight: weight)
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u, y = logits.astype(dtype), jnp.asarray(labels).astype(dtype)
    log_p = jax.nn.log_sigmoid(u)
    log_not_p = jax.nn.log_sigmoid(-u)
    positive_loss = -focusing(jnp.exp(gamma_positive * log_not_p)) * log_p
    if clip > 0:
        # 1 - p_m = min(1 - p + m, 1) >= m: its log is bounded, no cancellation.
        shifted = jnp.maximum(jax.nn.sigmoid(u) - clip, 0)
        log_not_shifted = jnp.log(jnp.minimum(jax.nn.sigmoid(-u) + clip, 1))
        # p_m ** gamma with a zero gradient (not NaN) where p_m = 0.
        is_shifted = shifted > 0
        log_shifted = jnp.log(jnp.where(is_shifted, shifted, 1))
        weight = jnp.where(is_shifted, jnp.exp(gamma_negative * log_shifted), 0)
    else:
        log_not_shifted = log_not_p
        weight = jnp.exp(gamma_negative * log_p)
    negative_loss = -focusing(weight) * log_not_shifted
    return (y * positive_loss + (1 - y) * negative_loss).astype(logits.dtype)
