"""LPL's rules: which classes it maximises or minimises (signs), and how far (bounds).

Two rules from the paper: the mean rule for balanced data (recomputed per batch from the
logits) and the head/tail rule for long-tailed data (fixed by the training counts).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
from jax import lax

from lpjax import _batch, _checks


def mean_rule_signs_and_bounds(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    epsilon: float | jax.typing.ArrayLike,
    delta_epsilon: float | jax.typing.ArrayLike = 0.0,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
) -> tuple[jax.Array, jax.Array]:
    r"""LPL's mean rule for balanced data: signs and bounds from the plain logits of a batch.

    .. math::
      q_c = \frac{1}{N_c} \sum_{i \in S_c} \mathrm{softmax}(u_i)_c, \quad
      \tau = \mathrm{mean}_{c: N_c > 0}\, q_c, \quad
      s_c = \mathrm{sign}(\tau - q_c), \quad
      \epsilon_c = \epsilon + \Delta\epsilon \, |\tau - q_c|

    Hard classes (mean true-class probability below the mean over the classes
    present) are maximised, easy ones minimised. Classes absent from the batch
    get sign 0 and bound 0 (they do not enter :math:`\tau`). A class exactly at
    the threshold (e.g. the only class of a batch) gets sign 0. Samples with a
    non-finite logit count as masked.
    ``delta_epsilon = 0`` gives fixed bounds, ``> 0`` varied bounds. Computed in
    float32 (at least) and returned under ``stop_gradient``.

    Args:
      logits: ``[batch, num_classes]`` plain logits (or ``[..., num_classes]``).
      labels: ``[batch]`` integer labels (out-of-range labels count as masked).
      epsilon: base bound ``eps >= 0``.
      delta_epsilon: ``d_eps >= 0``; the bound grows with the distance to the threshold.
      where: optional boolean ``[batch]`` mask of real samples.
      axis_name: mapped axis to reduce the class statistics over.

    Returns:
      ``(signs, bounds)``: int32 ``[num_classes]`` in {-1, 0, +1} and float ``[num_classes]``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> signs, bounds = lpjax.mean_rule_signs_and_bounds(
      ...     jnp.array([[3.0, 0.0], [0.0, 0.5]]), jnp.array([0, 1]), epsilon=0.1)
      >>> signs.tolist()
      [-1, 1]

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023, Sec. IV ("mean" rule).
    """
    _, logits, flat = _batch.flatten_leading(logits, labels=labels, where=where)
    labels, where = flat["labels"], flat["where"]
    _checks.check_batch(logits, labels, where, axis_name)
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("delta_epsilon", delta_epsilon)
    return batch_mean_rule(
        logits, labels, where, epsilon=epsilon, delta_epsilon=delta_epsilon, axis_name=axis_name
    )


@_batch.batch_statistics(_batch.replicated(2))
def batch_mean_rule(logits, labels, where, *, epsilon, delta_epsilon, axis_name):
    """:func:`mean_rule_signs_and_bounds` on inputs its caller has checked."""
    num_classes = jnp.shape(logits)[-1]
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u = lax.stop_gradient(logits).astype(dtype)
    labels = jnp.asarray(labels)
    valid = _batch.valid_samples(labels, num_classes, where, u)
    probs = jnp.where(valid[:, None], jax.nn.softmax(u), 0)  # NaN * 0 would be NaN
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * valid[:, None].astype(dtype)

    counts = _batch.sum_over_devices(onehot.sum(axis=0), axis_name)
    prob_sums = _batch.sum_over_devices((onehot * probs).sum(axis=0), axis_name)
    return mean_rule_on_groups(counts, prob_sums, epsilon=epsilon, delta_epsilon=delta_epsilon)


def mean_rule_on_groups(counts, prob_sums, *, epsilon, delta_epsilon):
    r"""The mean rule on groups (classes, or (class, polarity) pairs).

    With :math:`q_g = \text{prob\_sums}_g / \text{counts}_g` the mean correct-answer
    probability of group :math:`g` and :math:`\tau` the mean of :math:`q_g` over the
    groups present (count > 0): :math:`s_g = \mathrm{sign}(\tau - q_g)`,
    :math:`\epsilon_g = \epsilon + \Delta\epsilon\,|\tau - q_g|`; absent groups get 0 and 0.
    Any shape; :math:`\tau` is taken over all entries. Returns ``(signs, bounds)`` under
    ``stop_gradient``.
    """
    present = counts > 0
    mean_prob = prob_sums / jnp.maximum(counts, 1)
    threshold = jnp.sum(jnp.where(present, mean_prob, 0)) / jnp.maximum(present.sum(), 1)
    gap = threshold - mean_prob
    signs = jnp.where(present, jnp.sign(gap), 0).astype(jnp.int32)
    bounds = jnp.where(present, epsilon + delta_epsilon * jnp.abs(gap), 0).astype(mean_prob.dtype)
    return lax.stop_gradient(signs), lax.stop_gradient(bounds)


def longtail_signs_and_bounds(
    class_counts: jax.typing.ArrayLike,
    *,
    num_head_classes: int,
    epsilon: float | jax.typing.ArrayLike,
    delta_epsilon: float | jax.typing.ArrayLike = 0.0,
    head_scale: float | jax.typing.ArrayLike = 1.0,
) -> tuple[jax.Array, jax.Array]:
    r"""LPL's head/tail rule for long-tailed data: signs and bounds from training-set class counts.

    Classes are ranked by count, most frequent first (ties: lower index first);
    the ``num_head_classes`` first are head, the rest tail:

    .. math::
      \text{head: } s_c = -1,\ \epsilon_c = h\,(\epsilon + \Delta\epsilon\, n_c / n_{\max});
      \qquad
      \text{tail: } s_c = +1,\ \epsilon_c = \epsilon + \Delta\epsilon\, n_{\min} / n_c.

    Head classes are minimised (negative augmentation) with the biggest budget
    for the biggest class; tail classes maximised with the biggest budget for
    the rarest. ``delta_epsilon = 0`` gives fixed bounds. ``head_scale`` :math:`h`
    scales the head budgets apart from the tail ones: the authors' long-tail scripts
    use 0.6 (CIFAR-10-LT) and 0.2 (CIFAR-100-LT), a frequent class needing only a
    nudge; 0 leaves the head classes unperturbed. Class index order is never assumed
    to be frequency order.

    Args:
      class_counts: ``[num_classes]`` positive training-set counts ``n_c``.
      num_head_classes: how many of the most frequent classes are head, in ``[0, C]``.
      epsilon: base bound ``eps >= 0``.
      delta_epsilon: ``d_eps >= 0``.
      head_scale: ``h >= 0``, the factor of every head bound.

    Returns:
      ``(signs, bounds)``: int32 ``[num_classes]`` and float32 ``[num_classes]``.

    Example::

      >>> import lpjax
      >>> signs, bounds = lpjax.longtail_signs_and_bounds(
      ...     [10, 500, 50], num_head_classes=1, epsilon=0.1, delta_epsilon=0.5, head_scale=0.2)
      >>> signs.tolist(), [round(b, 3) for b in bounds.tolist()]
      ([1, -1, 1], [0.6, 0.12, 0.2])

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023, Sec. IV (long-tailed split).
    """
    num_classes = _checks.check_class_counts(class_counts)
    try:
        if isinstance(num_head_classes, bool) or getattr(num_head_classes, "ndim", 0):
            raise TypeError
        num_head_classes = operator.index(num_head_classes)  # int, NumPy or JAX integer
    except TypeError:
        raise TypeError(f"num_head_classes must be an int; got {num_head_classes!r}.") from None
    if not 0 <= num_head_classes <= num_classes:
        raise ValueError(
            f"num_head_classes must lie in [0, num_classes] = [0, {num_classes}]; "
            f"got {num_head_classes}."
        )
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("delta_epsilon", delta_epsilon)
    _checks.check_nonnegative("head_scale", head_scale)

    # Rank on the counts as given (float32 would merge counts above 2**24).
    order = jnp.argsort(-jnp.asarray(class_counts), stable=True)
    counts = jnp.asarray(class_counts, jnp.float32)
    rank = jnp.empty(num_classes, jnp.int32).at[order].set(jnp.arange(num_classes))
    is_head = rank < num_head_classes
    signs = jnp.where(is_head, -1, 1).astype(jnp.int32)
    head_bounds = head_scale * (epsilon + delta_epsilon * counts / counts.max())
    tail_bounds = epsilon + delta_epsilon * counts.min() / counts
    bounds = jnp.where(is_head, head_bounds, tail_bounds).astype(jnp.float32)
    return signs, bounds
