r"""LPL for multi-label classification.

The project's formulation (docs/method.md, section 4): each class c has two
scalar perturbations, :math:`\delta_c^+` added to the logits of its positive
entries (:math:`y_{ic} = 1`) and :math:`\delta_c^-` added to those of its
negative entries (:math:`y_{ic} = 0`), each with its own sign and bound, found
by LPL's inner solver on the per-class binary cross-entropy. Labels are
``[batch, num_classes]`` multi-hot arrays throughout.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lpjax import _batch, _checks, _signs_and_bounds, _solver, _transforms


class MultilabelSignsAndBounds(NamedTuple):
    """Signs and bounds of multi-label LPL per class, for positive and negative entries.

    The output of a multi-label signs-and-bounds rule and the keyword arguments of
    :func:`lpjax.lpl_multilabel_perturbation`
    (``lpl_multilabel_perturbation(logits, labels, **rule_output._asdict(), step_size=...)``).

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> rule_output = lpjax.multilabel_longtail_signs_and_bounds(
      ...     jnp.array([50, 10, 2]), num_head_classes=1, epsilon=0.5)
      >>> rule_output.positive_signs
      Array([-1,  1,  1], dtype=int32)
    """

    positive_signs: jax.Array
    negative_signs: jax.Array
    positive_bounds: jax.Array
    negative_bounds: jax.Array


def _entry_masks(labels, where, dtype, logits) -> tuple[jax.Array, jax.Array]:
    """Float ``[batch, num_classes]`` 0/1 masks of the valid positive and negative entries.

    An entry is valid when its sample is (``where``, and all its ``logits`` are finite)
    and its label is 0 or 1; other values (possible only in traced labels) belong to
    neither polarity.
    """
    labels = jnp.asarray(labels)
    sample = _batch.finite_samples(logits)
    if where is not None:
        sample = sample & where
    positive = (labels == 1) & sample[:, None]
    negative = (labels == 0) & sample[:, None]
    return positive.astype(dtype), negative.astype(dtype)


def _polarity_sums(values, positive, negative, axis_name) -> jax.Array:
    """``[2, num_classes]`` sums of ``values``: negative entries (row 0), positive (row 1).

    Entries outside both masks are dropped with ``where`` (a NaN there times 0 would be NaN).
    """
    sums = jnp.stack(
        [
            jnp.where(negative > 0, values, 0).sum(axis=0),
            jnp.where(positive > 0, values, 0).sum(axis=0),
        ]
    )
    return _batch.sum_over_devices(sums, axis_name)


def lpl_multilabel_perturbation(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    positive_signs: jax.typing.ArrayLike,
    negative_signs: jax.typing.ArrayLike,
    positive_bounds: jax.typing.ArrayLike,
    negative_bounds: jax.typing.ArrayLike,
    step_size: float | jax.typing.ArrayLike,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> jax.Array:
    r"""Multi-label LPL: one scalar perturbation per class and label polarity.

    Samples with a non-finite logit count as masked (no statistic, no perturbation);
    bounds needing more than ``max_inner_steps`` steps raise (concrete) or are clamped
    (traced), as in :func:`lpjax.lpl_perturbation`.

    Class :math:`c` has :math:`\delta_c^+`, added to the logits of its positive
    entries (:math:`y_{ic} = 1`), and :math:`\delta_c^-`, added to its negative
    entries (:math:`y_{ic} = 0`). Each :math:`\delta_c^\pm` starts at 0 and takes
    :math:`K_c^\pm = \lfloor \epsilon_c^\pm / \alpha + 10^{-6} \rfloor` steps (none
    when :math:`s_c^\pm = 0`) of gradient ascent (:math:`s = +1`) or descent
    (:math:`s = -1`) on the mean binary cross-entropy of those entries:

    .. math::
      \delta_c^\pm \leftarrow \delta_c^\pm + s_c^\pm \, \alpha \,
      \frac{1}{|E_c^\pm|} \sum_{i \in E_c^\pm}
      \left(\sigma(u_{ic} + \delta_c^\pm) - y_{ic}\right) \quad (k < K_c^\pm),

    with :math:`E_c^+ = \{i: y_{ic} = 1\}`, :math:`E_c^- = \{i: y_{ic} = 0\}`
    over the valid samples of the (global) batch. The step is unnormalised:
    the mean residual lies in :math:`[-1, 1]`, so
    :math:`|\delta_c^\pm| \le K_c^\pm \alpha \le \epsilon_c^\pm` by construction.
    A polarity with no entry in the batch is left at 0. The result is
    :math:`\delta_{ic} = \delta_c^+` if :math:`y_{ic} = 1` else
    :math:`\delta_c^-`, zero for masked samples, under ``stop_gradient``
    (Danskin: the training gradient treats it as a constant).

    One ``lax.fori_loop`` over :math:`\max K` steps with per-(class, polarity)
    masks; memory :math:`O(B C)`. Statistics are computed in float32 (at least)
    and the result is cast to the logits' dtype. Values of the signs, bounds
    and ``step_size`` may be traced: changing them does not recompile.

    Args:
      logits: ``[batch, num_classes]`` floating logits ``u`` (or ``[..., num_classes]``:
        every leading position is a sample).
      labels: ``[batch, num_classes]`` multi-hot labels (bool, integer or
        floating, holding only 0 and 1; other values raise ``ValueError`` when
        concrete and, inside ``jax.jit``, exclude that entry from every
        statistic and give it a zero perturbation).
      positive_signs: ``[num_classes]`` values in {-1, 0, +1} for the positive
        entries: +1 maximises their loss, -1 minimises it, 0 leaves them untouched.
      negative_signs: ``[num_classes]`` values in {-1, 0, +1} for the negative entries.
      positive_bounds: ``[num_classes]`` budgets ``eps_c^+ >= 0``.
      negative_bounds: ``[num_classes]`` budgets ``eps_c^- >= 0``.
      step_size: the step length ``alpha > 0``.
      where: optional boolean ``[batch]``; False marks padding samples, which
        are excluded from every statistic and get a zero perturbation.
      axis_name: mapped axis (``jax.shard_map`` / ``jax.pmap``) the batch is
        split over; sums and counts are then reduced over all devices, so the
        result equals that of the whole batch on one device.

    Returns:
      ``[batch, num_classes]`` perturbation ``delta`` in the logits' dtype;
      train on ``logits + delta``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> logits = jnp.array([[2.0, -1.0], [0.0, 1.0], [-1.0, 0.5]])
      >>> labels = jnp.array([[1, 0], [1, 1], [0, 0]])
      >>> delta = lpjax.lpl_multilabel_perturbation(
      ...     logits, labels,
      ...     positive_signs=jnp.array([1, -1]), negative_signs=jnp.array([-1, -1]),
      ...     positive_bounds=jnp.array([0.2, 0.2]), negative_bounds=jnp.array([0.1, 0.1]),
      ...     step_size=0.1)
      >>> delta.shape
      (3, 2)
      >>> # Class 0's positives share one delta; maximising their loss lowers their logit.
      >>> bool(delta[0, 0] == delta[1, 0]), bool(delta[0, 0] < 0)
      (True, True)

    References:
      M. Li, F. Su, O. Wu, J. Zhang, "Class-Level Logit Perturbation",
      IEEE TNNLS 2023 (arXiv:2209.05668), Algorithm 1; the multi-label form is
      the project's (docs/method.md, section 4).
    """
    lead, logits, flat = _batch.flatten_leading(logits, labels=labels, where=where)
    labels, where = flat["labels"], flat["where"]
    _checks.check_batch(logits, labels, where, axis_name, labels_kind="multihot")
    _checks.check_positive_scalar("step_size", step_size)
    delta = check_and_solve(
        logits,
        labels,
        positive_signs,
        negative_signs,
        positive_bounds,
        negative_bounds,
        step_size,
        where,
        axis_name=axis_name,
        max_inner_steps=max_inner_steps,
    )
    return _batch.unflatten_leading(lead, delta)


def check_signs_and_bounds(
    num_classes: int,
    step_size,
    max_inner_steps: int,
    *,
    positive_signs,
    negative_signs,
    positive_bounds,
    negative_bounds,
) -> None:
    """Checks a :class:`MultilabelSignsAndBounds` as the single-label check does."""
    for polarity, signs, bounds in (
        ("positive", positive_signs, positive_bounds),
        ("negative", negative_signs, negative_bounds),
    ):
        _checks.check_class_vector(f"{polarity}_signs", signs, num_classes)
        _checks.check_class_vector(f"{polarity}_bounds", bounds, num_classes)
        _checks.check_nonnegative(f"{polarity}_bounds", bounds)
        _checks.check_signs(f"{polarity}_signs", signs)
        _solver.check_inner_steps(bounds, step_size, max_inner_steps, signs)


def check_and_solve(
    logits,
    labels,
    positive_signs,
    negative_signs,
    positive_bounds,
    negative_bounds,
    step_size,
    where,
    **solver_options,
):
    """:func:`check_signs_and_bounds` for the logits' classes, then :func:`solve`."""
    rule_output = MultilabelSignsAndBounds(
        positive_signs, negative_signs, positive_bounds, negative_bounds
    )
    num_classes = jnp.shape(logits)[-1]
    max_steps = solver_options["max_inner_steps"]
    check_signs_and_bounds(num_classes, step_size, max_steps, **rule_output._asdict())
    return solve(logits, labels, *rule_output, step_size, where, **solver_options)


@_batch.batch_statistics(_batch.per_sample)
def solve(
    logits,
    labels,
    positive_signs,
    negative_signs,
    positive_bounds,
    negative_bounds,
    step_size,
    where,
    *,
    axis_name,
    max_inner_steps,
):
    """:func:`lpl_multilabel_perturbation` on inputs its caller has checked."""
    num_classes = jnp.shape(logits)[-1]
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u = lax.stop_gradient(logits).astype(dtype)
    positive, negative = _entry_masks(lax.stop_gradient(labels), where, dtype, u)
    # Row 0: negative entries, row 1: positive entries.
    signs = lax.stop_gradient(jnp.stack([jnp.asarray(negative_signs), jnp.asarray(positive_signs)]))
    bounds = lax.stop_gradient(
        jnp.stack([jnp.asarray(negative_bounds), jnp.asarray(positive_bounds)])
    )
    signs = signs.astype(dtype)
    step_size = lax.stop_gradient(jnp.asarray(step_size, dtype))

    counts = _polarity_sums(jnp.ones_like(u), positive, negative, axis_name)
    steps = jnp.where(
        (signs != 0) & (counts > 0),
        _solver.num_inner_steps(bounds.astype(dtype), step_size, max_inner_steps),
        0,
    )
    counts = jnp.maximum(counts, 1)

    def step(k, polarity_delta):
        delta = positive * polarity_delta[1] + negative * polarity_delta[0]
        # sigmoid(z) - 1 computed as -sigmoid(-z): no cancellation for confident positives.
        z = u + delta
        residual = jnp.where(positive > 0, -jax.nn.sigmoid(-z), jax.nn.sigmoid(z))
        grad = _polarity_sums(residual, positive, negative, axis_name) / counts
        moving = jnp.where(k < steps, signs, 0)
        return polarity_delta + step_size * moving * grad

    polarity_delta = lax.fori_loop(0, jnp.max(steps), step, jnp.zeros((2, num_classes), dtype))
    delta = jnp.where(
        positive > 0, polarity_delta[1], jnp.where(negative > 0, polarity_delta[0], 0)
    )
    return lax.stop_gradient(delta.astype(logits.dtype))


def multilabel_longtail_signs_and_bounds(
    positive_counts: jax.typing.ArrayLike,
    *,
    num_head_classes: int,
    epsilon: float | jax.typing.ArrayLike,
    delta_epsilon: float | jax.typing.ArrayLike = 0.0,
    head_scale: float | jax.typing.ArrayLike = 1.0,
    negative_sign: int | jax.typing.ArrayLike = -1,
    negative_epsilon: float | jax.typing.ArrayLike | None = None,
) -> MultilabelSignsAndBounds:
    r"""Multi-label LPL's head/tail rule (the default), from training-set positive-label counts.

    Positive entries follow :func:`lpjax.longtail_signs_and_bounds` applied to
    the positive-label counts :math:`n_c`: classes ranked by count (most first,
    ties lower index first), the ``num_head_classes`` first are head,

    .. math::
      \text{head: } s_c^+ = -1,\ \epsilon_c^+ = h\,(\epsilon + \Delta\epsilon\, n_c / n_{\max});
      \qquad
      \text{tail: } s_c^+ = +1,\ \epsilon_c^+ = \epsilon + \Delta\epsilon\, n_{\min} / n_c,

    so the positives of rare classes are emphasised and those of frequent
    classes de-emphasised. Negative entries of every class get
    :math:`s_c^- =` ``negative_sign`` (default -1: minimised, weakening the
    flood of easy negatives that ASL also fights) and
    :math:`\epsilon_c^- =` ``negative_epsilon`` (default ``epsilon``).

    Args:
      positive_counts: ``[num_classes]`` positive training-set counts ``n_c``
        (the number of training samples carrying label c; every class needs one).
      num_head_classes: how many of the most frequent classes are head, in ``[0, C]``.
      epsilon: base bound ``eps >= 0`` of the positive entries.
      delta_epsilon: ``d_eps >= 0``.
      head_scale: ``h >= 0``, the factor of the head classes' positive bounds.
      negative_sign: sign of the negative entries, in {-1, 0, +1}; a scalar or
        a ``[num_classes]`` vector.
      negative_epsilon: bound of the negative entries, ``>= 0``; a scalar or a
        ``[num_classes]`` vector; ``None`` means ``epsilon``.

    Returns:
      A :class:`MultilabelSignsAndBounds` ``(positive_signs, negative_signs,
      positive_bounds, negative_bounds)``: int32 ``[num_classes]`` signs and float32
      ``[num_classes]`` bounds, the arguments of :func:`lpjax.lpl_multilabel_perturbation`.

    Example::

      >>> import lpjax
      >>> pos_signs, neg_signs, pos_bounds, neg_bounds = (
      ...     lpjax.multilabel_longtail_signs_and_bounds(
      ...         [10, 500, 50], num_head_classes=1, epsilon=0.1))
      >>> pos_signs.tolist(), neg_signs.tolist()
      ([1, -1, 1], [-1, -1, -1])

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023, Sec. IV (long-tailed
      split); the multi-label form is the project's (docs/method.md, section 4).
    """
    positive_signs, positive_bounds = _signs_and_bounds.longtail_signs_and_bounds(
        positive_counts,
        num_head_classes=num_head_classes,
        epsilon=epsilon,
        delta_epsilon=delta_epsilon,
        head_scale=head_scale,
    )
    num_classes = positive_signs.shape[0]
    if negative_epsilon is None:
        negative_epsilon = epsilon
    for name, value in (("negative_sign", negative_sign), ("negative_epsilon", negative_epsilon)):
        if jnp.ndim(jnp.asarray(value)) != 0:
            _checks.check_class_vector(name, value, num_classes)
    _checks.check_signs("negative_sign", negative_sign)
    _checks.check_nonnegative("negative_epsilon", negative_epsilon)
    negative_signs = jnp.broadcast_to(jnp.asarray(negative_sign).astype(jnp.int32), (num_classes,))
    negative_bounds = jnp.broadcast_to(
        jnp.asarray(negative_epsilon).astype(jnp.float32), (num_classes,)
    )
    return MultilabelSignsAndBounds(
        positive_signs, negative_signs, positive_bounds, negative_bounds
    )


def multilabel_mean_rule_signs_and_bounds(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    epsilon: float | jax.typing.ArrayLike,
    delta_epsilon: float | jax.typing.ArrayLike = 0.0,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
) -> MultilabelSignsAndBounds:
    r"""Multi-label LPL's mean rule per (class, polarity), from the plain logits of a batch.

    For each class :math:`c` and polarity :math:`\pm`, :math:`q_c^\pm` is the
    mean probability of the correct polarity over the entries of that class
    and polarity (:math:`\sigma(u_{ic})` for positives,
    :math:`1 - \sigma(u_{ic})` for negatives):

    .. math::
      \tau = \mathrm{mean}_{(c, \pm):\, |E_c^\pm| > 0}\, q_c^\pm, \quad
      s_c^\pm = \mathrm{sign}(\tau - q_c^\pm), \quad
      \epsilon_c^\pm = \epsilon + \Delta\epsilon \, |\tau - q_c^\pm|.

    Hard (class, polarity) pairs are maximised, easy ones minimised; pairs
    absent from the batch get sign 0 and bound 0 and do not enter
    :math:`\tau`. ``delta_epsilon = 0`` gives fixed bounds. Computed in
    float32 (at least) and returned under ``stop_gradient``.

    Args:
      logits: ``[batch, num_classes]`` plain logits (or ``[..., num_classes]``).
      labels: ``[batch, num_classes]`` multi-hot labels (0/1; see
        :func:`lpjax.lpl_multilabel_perturbation`).
      epsilon: base bound ``eps >= 0``.
      delta_epsilon: ``d_eps >= 0``; the bound grows with the distance to the threshold.
      where: optional boolean ``[batch]`` mask of real samples.
      axis_name: mapped axis to reduce the statistics over.

    Returns:
      A :class:`MultilabelSignsAndBounds`: int32 ``[num_classes]`` signs in {-1, 0, +1} and
      float ``[num_classes]`` bounds for the positive and negative entries.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> pos_signs, neg_signs, pos_bounds, neg_bounds = (
      ...     lpjax.multilabel_mean_rule_signs_and_bounds(
      ...         jnp.array([[-2.0, 3.0], [-3.0, 2.0]]), jnp.array([[1, 1], [0, 1]]),
      ...         epsilon=0.1))
      >>> pos_signs.tolist(), neg_signs.tolist()
      ([1, -1], [-1, 0])

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023, Sec. IV ("mean" rule);
      the multi-label form is the project's (docs/method.md, section 4).
    """
    _, logits, flat = _batch.flatten_leading(logits, labels=labels, where=where)
    labels, where = flat["labels"], flat["where"]
    _checks.check_batch(logits, labels, where, axis_name, labels_kind="multihot")
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("delta_epsilon", delta_epsilon)
    return batch_mean_rule(
        logits, labels, where, epsilon=epsilon, delta_epsilon=delta_epsilon, axis_name=axis_name
    )


@_batch.batch_statistics(
    lambda batch_axes: MultilabelSignsAndBounds(*_batch.replicated(4)(batch_axes))
)
def batch_mean_rule(
    logits, labels, where, *, epsilon, delta_epsilon, axis_name
) -> MultilabelSignsAndBounds:
    """:func:`multilabel_mean_rule_signs_and_bounds` on inputs its caller has checked."""
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u = lax.stop_gradient(logits).astype(dtype)
    positive, negative = _entry_masks(lax.stop_gradient(labels), where, dtype, u)
    # sigma(u) for positives, 1 - sigma(u) = sigma(-u) for negatives, without cancellation.
    correct_prob = jax.nn.sigmoid(jnp.where(positive > 0, u, -u))

    counts = _polarity_sums(jnp.ones_like(u), positive, negative, axis_name)
    prob_sums = _polarity_sums(correct_prob, positive, negative, axis_name)
    signs, bounds = _signs_and_bounds.mean_rule_on_groups(
        counts, prob_sums, epsilon=epsilon, delta_epsilon=delta_epsilon
    )
    return MultilabelSignsAndBounds(signs[1], signs[0], bounds[1], bounds[0])


def _lpl_multilabel_transform(
    signs_and_bounds, step_size, max_inner_steps
) -> _transforms.LogitTransform:
    """Multi-label LPL on the incoming logits, signs and bounds from ``signs_and_bounds``."""
    return _transforms._lpl_transform(
        signs_and_bounds,
        step_size,
        max_inner_steps,
        check_and_solve=check_and_solve,
        labels_kind="multihot",
    )


def lpl_multilabel_longtail_transform(
    positive_counts,
    *,
    num_head_classes: int,
    epsilon: float,
    step_size: float,
    delta_epsilon: float = 0.0,
    head_scale: float = 1.0,
    negative_sign: int = -1,
    negative_epsilon: float | None = None,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> _transforms.LogitTransform:
    """Multi-label LPL for long-tailed label distributions (the head/tail rule).

    Signs and bounds from :func:`lpjax.multilabel_longtail_signs_and_bounds`
    (fixed for the whole run): positives of tail classes maximised, of head
    classes minimised (their bounds scaled by ``head_scale``), negatives of every class
    get ``negative_sign``; then :func:`lpjax.lpl_multilabel_perturbation` on every batch.
    ``apply`` takes ``[batch, num_classes]`` multi-hot labels. Follow it with an
    element-wise sigmoid loss, e.g.
    ``optax.sigmoid_binary_cross_entropy(perturbed, labels).mean(-1)``. Bounds needing
    more than ``max_inner_steps`` steps raise ``ValueError`` here.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.lpl_multilabel_longtail_transform(
      ...     [500, 50, 5], num_head_classes=1, epsilon=0.1, step_size=0.05)
      >>> logits, labels = jnp.zeros((2, 3)), jnp.array([[1, 0, 1], [1, 1, 0]])
      >>> perturbed, state = transform.apply(logits, labels, transform.init())
      >>> perturbed.shape
      (2, 3)
    """
    rule_output = multilabel_longtail_signs_and_bounds(
        positive_counts,
        num_head_classes=num_head_classes,
        epsilon=epsilon,
        delta_epsilon=delta_epsilon,
        head_scale=head_scale,
        negative_sign=negative_sign,
        negative_epsilon=negative_epsilon,
    )
    _checks.check_positive_scalar("step_size", step_size)
    check_signs_and_bounds(
        len(rule_output.positive_signs), step_size, max_inner_steps, **rule_output._asdict()
    )
    return _lpl_multilabel_transform(
        lambda logits, labels, where, axis_name: rule_output, step_size, max_inner_steps
    )


def lpl_multilabel_mean_rule_transform(
    *,
    epsilon: float,
    step_size: float,
    delta_epsilon: float = 0.0,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> _transforms.LogitTransform:
    """Multi-label LPL with the mean rule's signs and bounds recomputed on every batch.

    Signs and bounds from :func:`lpjax.multilabel_mean_rule_signs_and_bounds`
    on the incoming logits, then :func:`lpjax.lpl_multilabel_perturbation`.
    ``delta_epsilon = 0`` gives fixed bounds, ``> 0`` varied bounds. ``apply``
    takes ``[batch, num_classes]`` multi-hot labels. The largest bound,
    ``epsilon + delta_epsilon``, may need at most ``max_inner_steps`` steps.

    Example::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> transform = lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.5, step_size=0.1)
      >>> logits = jax.random.normal(jax.random.key(0), (4, 3))
      >>> labels = jnp.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
      >>> perturbed, _ = transform.apply(logits, labels, transform.init())
      >>> perturbed.shape
      (4, 3)
    """
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("delta_epsilon", delta_epsilon)
    _checks.check_positive_scalar("step_size", step_size)
    _solver.check_inner_steps(jnp.asarray([epsilon + delta_epsilon]), step_size, max_inner_steps)

    def signs_and_bounds(logits, labels, where, axis_name):
        return batch_mean_rule(
            logits,
            labels,
            where,
            epsilon=epsilon,
            delta_epsilon=delta_epsilon,
            axis_name=axis_name,
        )

    return _lpl_multilabel_transform(signs_and_bounds, step_size, max_inner_steps)
