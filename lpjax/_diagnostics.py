"""What a perturbation does to each class's loss: the paper's diagnostic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lpjax import _batch, _checks


def relative_loss_variation(
    logits: jax.typing.ArrayLike,
    perturbed_logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
) -> jax.Array:
    r"""Per-class mean relative change of the cross-entropy caused by a perturbation.

    .. math::
      v_c = \frac{1}{N_c} \sum_{i \in S_c} \frac{\ell(u'_i, y_i) - \ell(u_i, y_i)}{\ell(u_i, y_i)}

    Positive :math:`v_c`: the perturbation raises class :math:`c`'s loss
    (positive augmentation, more emphasis); negative: it lowers it. Samples
    whose plain loss is exactly 0 (the ratio is undefined) are left out, as
    are masked samples and samples whose loss is not finite. Computed in float32 (at least).

    Args:
      logits: ``[batch, num_classes]`` plain logits ``u`` (or ``[..., num_classes]``).
      perturbed_logits: ``[batch, num_classes]`` perturbed logits ``u'``.
      labels: ``[batch]`` integer labels.
      where: optional boolean ``[batch]`` mask of real samples.
      axis_name: mapped axis to reduce over.

    Returns:
      float ``[num_classes]``; NaN for classes with no (valid) sample.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> u = jnp.zeros((2, 2)); labels = jnp.array([0, 1])
      >>> v = lpjax.relative_loss_variation(u, u + jnp.array([0.0, 1.0]), labels)
      >>> bool(v[0] > 0), bool(v[1] < 0)
      (True, True)

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023, Sec. III (Figs. 2-4).
    """
    if jnp.shape(perturbed_logits) != jnp.shape(logits):
        raise ValueError(
            f"perturbed_logits must have the shape of logits {jnp.shape(logits)}; "
            f"got {jnp.shape(perturbed_logits)}."
        )
    _, logits, flat = _batch.flatten_leading(
        logits, perturbed_logits=perturbed_logits, labels=labels, where=where
    )
    perturbed_logits, labels, where = flat["perturbed_logits"], flat["labels"], flat["where"]
    _, num_classes = _checks.check_batch(logits, labels, where, axis_name)
    _checks.check_logits(perturbed_logits, "perturbed_logits")

    dtype = _checks.compute_dtype(jnp.result_type(logits))
    labels = jnp.asarray(labels)
    valid = _batch.valid_samples(labels, num_classes, where)
    safe_labels = jnp.where(valid, labels, 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, dtype), safe_labels)
    perturbed_loss = optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(perturbed_logits, dtype), safe_labels
    )
    valid = valid & (loss > 0) & jnp.isfinite(loss) & jnp.isfinite(perturbed_loss)
    ratio = jnp.where(valid, (perturbed_loss - loss) / jnp.where(valid, loss, 1), 0)
    onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=dtype) * valid[:, None]
    counts = _batch.sum_over_devices(onehot.sum(axis=0), axis_name)
    sums = _batch.sum_over_devices(jnp.sum(onehot * ratio[:, None], axis=0), axis_name)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1), jnp.nan)
