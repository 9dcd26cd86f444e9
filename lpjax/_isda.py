"""ISDA: implicit semantic data augmentation as a stateful logit transform.

ISDA (Wang et al., NeurIPS 2019) keeps a running covariance matrix of the
penultimate features of every class (or, with ``covariance="diagonal"``, only its
diagonal: the per-feature variances) and trains on cross-entropy over logits
raised by a quadratic form of that covariance: in the terms of the method
specification (section 2) it is a class-level perturbation that raises every
class's loss. This module holds the three pieces: the running statistics
(:class:`IsdaState`, :func:`update_class_statistics`), the logit term
(:func:`isda_augmentation`) and the transform that chains them
(:func:`isda_transform`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lpjax import _batch, _checks
from lpjax._transforms import LogitTransform

Covariance = Literal["full", "diagonal"]
_COVARIANCES = ("full", "diagonal")


class IsdaState(NamedTuple):
    """Running per-class feature statistics of ISDA (a pytree; replicate it over devices).

    Memory is dominated by ``covariances``. Full covariances take
    ``C * D * D * 4`` bytes, e.g. 1.6 MB for CIFAR-100 with ResNet-32/110
    features (D = 64), 164 MB for CIFAR-100 with WRN-28-10 (D = 640), but
    16.8 GB for ImageNet-1k with ResNet-50 (C = 1000, D = 2048). The diagonal
    form (``covariance="diagonal"``) keeps the per-feature variances only,
    ``C * D * 4`` bytes: 8.2 MB at ImageNet size.

    Attributes:
      step: int32 scalar, the number of updates so far.
      counts: ``[num_classes]`` float32, the number of samples seen per class.
      means: ``[num_classes, feature_dim]`` float32 running class means.
      covariances: float32 running (biased) class covariances,
        ``[num_classes, feature_dim, feature_dim]``, or their diagonals, the
        per-feature variances ``[num_classes, feature_dim]`` (the diagonal form;
        the shape tells the two apart).

    Example::

      >>> import lpjax
      >>> state = lpjax.init_isda_state(num_classes=10, feature_dim=64, covariance="diagonal")
      >>> state.counts.shape, state.means.shape, state.covariances.shape
      ((10,), (10, 64), (10, 64))
    """

    step: jax.Array
    counts: jax.Array
    means: jax.Array
    covariances: jax.Array


def init_isda_state(
    num_classes: int, feature_dim: int, *, covariance: Covariance = "full"
) -> IsdaState:
    """The zero :class:`IsdaState`: no sample seen, zero means and covariances.

    Args:
      num_classes: the number of classes C.
      feature_dim: the dimension D of the penultimate features.
      covariance: ``"full"`` keeps ``[C, D, D]`` covariances; ``"diagonal"`` keeps
        ``[C, D]`` per-feature variances.

    Example::

      >>> import lpjax
      >>> lpjax.init_isda_state(10, 64).covariances.shape
      (10, 64, 64)
      >>> lpjax.init_isda_state(10, 64, covariance="diagonal").covariances.shape
      (10, 64)
    """
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("feature_dim", feature_dim)
    _check_covariance(covariance)
    shape = (num_classes, feature_dim) + ((feature_dim,) if covariance == "full" else ())
    return IsdaState(
        step=jnp.zeros((), jnp.int32),
        counts=jnp.zeros((num_classes,), jnp.float32),
        means=jnp.zeros((num_classes, feature_dim), jnp.float32),
        covariances=jnp.zeros(shape, jnp.float32),
    )


def update_class_statistics(
    state: IsdaState,
    features: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
) -> IsdaState:
    r"""One online update of the per-class feature means and covariances (ISDA's ``EstimatorCV``).

    For each class :math:`c` with :math:`m_c > 0` samples in the batch, with
    batch mean :math:`\bar x_c`, biased batch covariance
    :math:`S_c = \frac{1}{m_c}\sum_{i \in S_c}(x_i - \bar x_c)(x_i - \bar x_c)^\top`,
    :math:`n_c` samples seen so far and :math:`w_c = m_c / (n_c + m_c)`:

    .. math::
      \begin{aligned}
      \Sigma_c &\leftarrow (1 - w_c)\,\Sigma_c + w_c S_c
        + w_c (1 - w_c)(\mu_c - \bar x_c)(\mu_c - \bar x_c)^\top, \\
      \mu_c &\leftarrow (1 - w_c)\,\mu_c + w_c \bar x_c, \qquad n_c \leftarrow n_c + m_c.
      \end{aligned}

    With diagonal statistics (a ``[C, D]`` ``state.covariances``, see
    :func:`init_isda_state`) the same recursion runs on the diagonal alone,
    :math:`\sigma^2_c \leftarrow (1 - w_c)\,\sigma^2_c + w_c s^2_c
    + w_c (1 - w_c)(\mu_c - \bar x_c)^2` element-wise, with :math:`s^2_c` the
    batch's per-feature variances: the diagonal of the full recursion, exactly.

    This is the pooled-variance identity, so after any sequence of batches
    :math:`\mu_c` and :math:`\Sigma_c` are exactly the mean and the biased
    covariance (``np.cov(..., bias=True)``) of *all* the class-:math:`c`
    features seen, up to rounding (features from early steps, computed by an
    older network, weigh as much as recent ones, as in the authors' code).
    Classes absent from the batch are unchanged; ``step`` is incremented.

    The batch statistics are two-pass (sums and counts first, then outer
    products of the features centred on the batch class means), which avoids
    the cancellation of :math:`E[xx^\top] - \bar x \bar x^\top` in float32.
    Per-class sums are one-hot matmuls; the outer products go through a
    ``[batch, C, D]`` one-hot-masked copy of the features (as in the authors'
    code) contracted into ``[C, D, D]``: extra memory
    :math:`B C D + C D^2` floats (:math:`2 C D` for diagonal statistics, from a
    one-hot matmul of the squared centred features). Everything is float32 and
    under ``stop_gradient``.

    Args:
      state: the current :class:`IsdaState`.
      features: ``[batch, feature_dim]`` floating penultimate features.
      labels: ``[batch]`` integer labels; a label outside
        ``[0, num_classes)`` makes its sample masked.
      where: optional boolean ``[batch]``; False marks padding samples, which
        are left out of every statistic.
      axis_name: mapped axis (``jax.shard_map`` / ``jax.pmap``) the batch is
        split over; counts, sums and outer products are summed over all
        devices, so the new (replicated) state equals that of the whole batch
        on one device.

    Returns:
      The updated :class:`IsdaState`.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> state = lpjax.init_isda_state(num_classes=2, feature_dim=2)
      >>> features = jnp.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
      >>> state = lpjax.update_class_statistics(state, features, jnp.array([0, 0, 1]))
      >>> state.counts, state.means[0]
      (Array([2., 1.], dtype=float32), Array([2., 1.], dtype=float32))
      >>> state.covariances[0]
      Array([[1., 1.],
             [1., 1.]], dtype=float32)

    References:
      Y. Wang, X. Pan, S. Song, H. Zhang, C. Wu, G. Huang, "Implicit Semantic
      Data Augmentation for Deep Networks", NeurIPS 2019 (arXiv:1909.12220),
      and the authors' code (``EstimatorCV`` in ``ISDA.py``).
    """
    num_classes, feature_dim = _check_state(state)
    batch_size = _check_features(features, feature_dim)
    _checks.check_integer_labels(labels, batch_size)
    _checks.check_where(where, batch_size)
    _checks.check_axis_name(features, axis_name)
    return _update_class_statistics(
        features, labels, where, state, num_classes=num_classes, axis_name=axis_name
    )


@_batch.batch_statistics(lambda batch_axes: IsdaState(*_batch.replicated(4)(batch_axes)))
def _update_class_statistics(features, labels, where, state, *, num_classes, axis_name):
    """:func:`update_class_statistics` on inputs its caller has checked."""
    labels = jnp.asarray(labels)
    x = lax.stop_gradient(jnp.asarray(features)).astype(jnp.float32)
    valid = _batch.valid_samples(labels, num_classes, where)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * valid[:, None]

    batch_counts, batch_sums = _batch.sum_over_devices(
        (onehot.sum(0), jnp.matmul(onehot.T, x, precision=lax.Precision.HIGHEST)), axis_name
    )
    present = batch_counts > 0
    batch_means = batch_sums / jnp.maximum(batch_counts, 1)[:, None]

    # Invalid samples have a zero one-hot row, so they drop out of the contraction.
    centered = x - batch_means[jnp.clip(labels, 0, num_classes - 1)]
    old_counts = lax.stop_gradient(state.counts).astype(jnp.float32)
    old_means = lax.stop_gradient(state.means).astype(jnp.float32)
    old_covariances = lax.stop_gradient(state.covariances).astype(jnp.float32)
    weight = jnp.where(present, batch_counts / jnp.maximum(old_counts + batch_counts, 1), 0.0)
    shift = old_means - batch_means
    w1 = weight[:, None]
    means = (1 - w1) * old_means + w1 * batch_means
    if old_covariances.ndim == 2:  # diagonal: per-feature variances, [C, D]
        scatter = _batch.sum_over_devices(
            jnp.matmul(onehot.T, centered * centered, precision=lax.Precision.HIGHEST), axis_name
        )
        batch_variances = scatter / jnp.maximum(batch_counts, 1)[:, None]
        covariances = (1 - w1) * old_covariances + w1 * batch_variances + (w1 * (1 - w1)) * shift**2
    else:
        by_class = onehot[:, :, None] * centered[:, None, :]
        scatter = _batch.sum_over_devices(
            jnp.einsum("bcd,be->cde", by_class, centered, precision=lax.Precision.HIGHEST),
            axis_name,
        )
        batch_covariances = scatter / jnp.maximum(batch_counts, 1)[:, None, None]
        w3 = weight[:, None, None]
        covariances = (
            (1 - w3) * old_covariances
            + w3 * batch_covariances
            + (w3 * (1 - w3)) * shift[:, :, None] * shift[:, None, :]
        )
    present_rows = present.reshape((-1,) + (1,) * (old_covariances.ndim - 1))
    return IsdaState(
        step=jnp.asarray(state.step, jnp.int32) + 1,
        counts=old_counts + batch_counts,
        means=jnp.where(present[:, None], means, old_means),
        covariances=jnp.where(present_rows, covariances, old_covariances),
    )


def isda_augmentation(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    covariances: jax.typing.ArrayLike,
    classifier_kernel: jax.typing.ArrayLike,
    ratio: float | jax.typing.ArrayLike,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""ISDA's logit term: :math:`\frac{\lambda}{2}(w_c - w_{y})^\top \Sigma_{y}(w_c - w_{y})`.

    .. math::
      \delta_{ic} = \frac{\lambda}{2}\,(w_c - w_{y_i})^\top \Sigma_{y_i} (w_c - w_{y_i}),

    with :math:`w_c` column :math:`c` of the last layer's kernel and
    :math:`\Sigma_y` the running covariance of class :math:`y`'s features.
    Training on :math:`\mathrm{CE}(u_i + \delta_i, y_i)` minimises ISDA's upper
    bound of the expected cross-entropy over infinitely many augmented
    features :math:`\tilde x_i \sim \mathcal N(x_i, \lambda \Sigma_{y_i})`.
    :math:`\delta_{iy_i} = 0` and :math:`\delta_{ic} \ge 0` (``Sigma`` is
    positive semi-definite), so every class's loss goes up.

    Gradients, as in the authors' code: the covariances are constants
    (``stop_gradient``), the kernel is *not* — the gradient of the loss flows
    into :math:`W` through :math:`\delta` as well as through the logits. The
    bias plays no part.

    Computed row by row with :math:`V = W - w_y \mathbf 1^\top` ``[D, C]`` and
    :math:`\delta_{\cdot c} = \frac{\lambda}{2}\sum_d V_{dc} (\Sigma_y V)_{dc}`
    (exactly 0 at :math:`c = y`), never as a ``[C, C]`` matrix per sample.
    The rows are the samples when ``batch < num_classes`` (gathering
    :math:`\Sigma_{y_i}`: :math:`B D^2 + 2 B D C` extra floats) and the
    classes otherwise (a ``[C, C]`` table indexed by the labels:
    :math:`2 C^2 D` floats); either way at most
    :math:`\min(B, C)\,D\,(D + 2C)` floats and :math:`\min(B, C)\,D^2 C`
    multiply-adds. Computed in float32 (at least), returned in the logits'
    dtype.

    With diagonal covariances (``[C, D]`` variances :math:`\sigma^2_y`, the
    diagonal form of :func:`init_isda_state`) the term is
    :math:`\frac{\lambda}{2}\sum_d \sigma^2_{y d}(W_{dc} - W_{dy})^2`, expanded
    into two ``[batch, D] x [D, C]`` matmuls: :math:`B D + D C` extra floats
    whatever the sizes, clipped at 0 and exactly 0 at :math:`c = y`.

    Args:
      logits: ``[batch, num_classes]`` floating logits (for the shape and dtype
        only).
      labels: ``[batch]`` integer labels; a sample with a label outside
        ``[0, num_classes)`` gets a zero term.
      covariances: ``[num_classes, feature_dim, feature_dim]`` class
        covariances, or ``[num_classes, feature_dim]`` per-feature variances
        (diagonal ISDA), e.g. ``IsdaState.covariances``.
      classifier_kernel: ``[feature_dim, num_classes]`` kernel of the final
        dense layer (``logits = features @ kernel + bias``, flax's layout).
      ratio: :math:`\lambda \ge 0`, the augmentation strength (may be traced).
      where: optional boolean ``[batch]``; False gives a zero term.

    Returns:
      ``[batch, num_classes]`` term in the logits' dtype; train on
      ``logits + delta``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> kernel = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # [D=2, C=3]
      >>> covariances = jnp.stack([jnp.eye(2), 2 * jnp.eye(2), jnp.zeros((2, 2))])
      >>> lpjax.isda_augmentation(jnp.zeros((2, 3)), jnp.array([0, 1]),
      ...     covariances=covariances, classifier_kernel=kernel, ratio=0.5)
      Array([[0.  , 0.5 , 0.25],
             [1.  , 0.  , 0.5 ]], dtype=float32)
      >>> lpjax.isda_augmentation(jnp.zeros((2, 3)), jnp.array([0, 1]),  # diagonal
      ...     covariances=jnp.array([[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]),
      ...     classifier_kernel=kernel, ratio=0.5)
      Array([[0.  , 0.5 , 0.25],
             [1.  , 0.  , 0.5 ]], dtype=float32)

    References:
      Y. Wang, X. Pan, S. Song, H. Zhang, C. Wu, G. Huang, "Implicit Semantic
      Data Augmentation for Deep Networks", NeurIPS 2019 (arXiv:1909.12220),
      and the authors' code (``ISDALoss.isda_aug``).
    """
    batch_size, num_classes = _checks.check_batch(
        logits, labels, where, None, reduces_over_batch=False
    )
    if jnp.ndim(classifier_kernel) != 2 or jnp.shape(classifier_kernel)[1] != num_classes:
        raise ValueError(
            f"classifier_kernel must have shape [feature_dim, num_classes = {num_classes}]; "
            f"got shape {jnp.shape(classifier_kernel)}."
        )
    feature_dim = jnp.shape(classifier_kernel)[0]
    full, diagonal = (num_classes, feature_dim, feature_dim), (num_classes, feature_dim)
    if jnp.shape(covariances) not in (full, diagonal):
        raise ValueError(
            "covariances must have shape [num_classes, feature_dim, feature_dim] = "
            f"{full} (or [num_classes, feature_dim] = {diagonal}, diagonal) to match the "
            f"logits and the kernel; got shape {jnp.shape(covariances)}."
        )
    if jnp.ndim(ratio) != 0:
        raise ValueError(f"ratio must be a scalar; got shape {jnp.shape(ratio)}.")
    _checks.check_nonnegative("ratio", ratio)

    return _augmentation(
        logits, labels, covariances, classifier_kernel, ratio, where, num_classes=num_classes
    )


@_batch.batch_statistics(_batch.per_sample)
def _augmentation(logits, labels, covariances, classifier_kernel, ratio, where, *, num_classes):
    """:func:`isda_augmentation` on inputs its caller has checked."""
    batch_size = jnp.shape(logits)[0]
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    labels = jnp.asarray(labels)
    kernel = jnp.asarray(classifier_kernel).astype(dtype)
    sigma = lax.stop_gradient(jnp.asarray(covariances)).astype(dtype)
    ratio = jnp.asarray(ratio, dtype)
    valid = _batch.valid_samples(labels, num_classes, where)
    safe_labels = jnp.where(valid, labels, 0)
    highest = lax.Precision.HIGHEST

    if sigma.ndim == 2:  # diagonal: sum_d s_yd (W_dc - W_dy)^2, expanded, [B, D] x [D, C]
        variances = sigma[safe_labels]  # [B, D]
        own = kernel.T[safe_labels]  # [B, D], w_y
        quad = (
            jnp.matmul(variances, kernel * kernel, precision=highest)
            - 2 * jnp.matmul(variances * own, kernel, precision=highest)
            + jnp.sum(variances * own * own, axis=1, keepdims=True)
        )
        is_label = jnp.arange(num_classes)[None, :] == safe_labels[:, None]
        quad = jnp.where(is_label, 0, jnp.maximum(quad, 0))
        delta = jnp.where(valid[:, None], 0.5 * ratio * quad, 0)
        return delta.astype(logits.dtype)

    if batch_size < num_classes:
        row_classes, row_sigma = safe_labels, sigma[safe_labels]
    else:
        row_classes, row_sigma = jnp.arange(num_classes), sigma
    diff = kernel[None, :, :] - kernel.T[row_classes][:, :, None]  # [rows, D, C]
    quad = jnp.einsum(
        "rdc,rdc->rc",
        diff,
        jnp.einsum("rde,rec->rdc", row_sigma, diff, precision=highest),
        precision=highest,
    )
    if batch_size >= num_classes:
        quad = quad[safe_labels]
    delta = jnp.where(valid[:, None], 0.5 * ratio * quad, 0)
    return delta.astype(logits.dtype)


def isda_transform(
    num_classes: int,
    feature_dim: int,
    *,
    lambda_0: float = 0.5,
    total_steps: int,
    covariance: Covariance = "full",
) -> LogitTransform:
    r"""ISDA as a :class:`lpjax.LogitTransform`: :math:`u + \delta` with ramped strength.

    ``init()`` is the zero :class:`IsdaState` (``C * D * D * 4`` bytes of
    covariances, or ``C * D * 4`` with ``covariance="diagonal"``, see
    :class:`IsdaState`). ``apply(logits, labels, state, *,
    where=None, axis_name=None, features, classifier, **extra_args)`` does what
    the authors' ``ISDALoss.forward`` does:

    1. updates the class statistics with this batch's features (under
       ``stop_gradient``; over all devices with ``axis_name``), *then*
    2. returns ``logits + isda_augmentation(logits, labels,
       covariances=new_state.covariances, classifier_kernel=classifier["kernel"],
       ratio=ratio)`` with the linear ramp

       .. math:: \lambda = \lambda_0 \, \min(t, T) / T,

       :math:`t` = ``state.step`` (the number of earlier applies, so the first
       batch has :math:`\lambda = 0`) and :math:`T` = ``total_steps``. The
       authors ramp per epoch (:math:`\lambda_0 \cdot \text{epoch} / \text{epochs}`);
       this is the same ramp in steps.

    The gradient flows into the classifier's kernel through :math:`\delta` (as
    in the authors' code) and into the features through the logits only.
    ``features`` and ``classifier`` are extra arguments of ``apply`` that the
    train step passes from the model (the trainer's ``experiments.step`` does);
    other extra arguments are ignored, so the transform chains with the others.

    Args:
      num_classes: the number of classes C.
      feature_dim: the dimension D of the penultimate features.
      lambda_0: the final augmentation strength :math:`\lambda_0 \ge 0` (0.5
        in the paper's CIFAR experiments).
      total_steps: the number of training steps T of the ramp (> 0).
      covariance: ``"full"`` (the paper's, ``[C, D, D]`` covariances) or
        ``"diagonal"`` (``[C, D]`` per-feature variances: the augmentation
        distribution :math:`\mathcal N(x_i, \lambda\,\mathrm{diag}(\sigma^2_{y_i}))`
        ignores correlations between features, at a D-th of the memory; the answer
        to ISDA at ImageNet size).

    Returns:
      The :class:`lpjax.LogitTransform`; its state is an :class:`IsdaState`.

    Example::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> transform = lpjax.isda_transform(3, 4, lambda_0=0.5, total_steps=100)
      >>> state = transform.init()
      >>> features = jax.random.normal(jax.random.key(0), (6, 4))
      >>> classifier = {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}
      >>> logits = features @ classifier["kernel"] + classifier["bias"]
      >>> labels = jnp.array([0, 1, 2, 0, 1, 2])
      >>> perturbed, state = transform.apply(
      ...     logits, labels, state, features=features, classifier=classifier)
      >>> perturbed.shape, int(state.step)
      ((6, 3), 1)
      >>> diagonal = lpjax.isda_transform(3, 4, total_steps=100, covariance="diagonal")
      >>> diagonal.init().covariances.shape
      (3, 4)

    References:
      Y. Wang, X. Pan, S. Song, H. Zhang, C. Wu, G. Huang, "Implicit Semantic
      Data Augmentation for Deep Networks", NeurIPS 2019 (arXiv:1909.12220).
    """
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("feature_dim", feature_dim)
    _check_positive_int("total_steps", total_steps)
    _check_covariance(covariance)
    if jnp.ndim(lambda_0) != 0:
        raise ValueError(f"lambda_0 must be a scalar; got shape {jnp.shape(lambda_0)}.")
    _checks.check_nonnegative("lambda_0", lambda_0)

    def init() -> IsdaState:
        return init_isda_state(num_classes, feature_dim, covariance=covariance)

    @_batch.apply_over_leading_axes(per_sample_extras=("features",))
    def apply(
        logits,
        labels,
        state,
        *,
        where=None,
        axis_name=None,
        features=None,
        classifier=None,
        **extra_args,
    ):
        del extra_args
        missing = [
            name
            for name, value in (("features", features), ("classifier", classifier))
            if value is None
        ]
        if missing:
            raise ValueError(
                f"isda_transform needs the extra argument(s) {' and '.join(missing)}: "
                "features=[batch, feature_dim] penultimate features and "
                "classifier={'kernel': [feature_dim, num_classes], ...} of the final "
                "dense layer (the train step passes both from the model)."
            )
        if not isinstance(classifier, Mapping) or "kernel" not in classifier:
            raise ValueError(
                "classifier must be a mapping with a 'kernel' entry of shape "
                f"[feature_dim, num_classes] (flax nn.Dense params); got {type(classifier)}"
                + (f" with keys {sorted(classifier)}." if isinstance(classifier, Mapping) else ".")
            )
        _checks.require_labels(labels, "isda_transform")
        _, logit_classes = _checks.check_batch(logits, labels, where, axis_name)
        labels = jnp.asarray(labels)
        _checks.check_num_classes(logit_classes, num_classes)
        kernel = classifier["kernel"]
        if jnp.shape(kernel) != (feature_dim, num_classes):
            raise ValueError(
                "classifier['kernel'] must have shape [feature_dim, num_classes] = "
                f"({feature_dim}, {num_classes}); got shape {jnp.shape(kernel)}."
            )
        if not isinstance(state, IsdaState):
            raise TypeError(f"isda_transform needs an IsdaState; got {type(state).__name__}.")
        state_form = "diagonal" if jnp.ndim(state.covariances) == 2 else "full"
        if state_form != covariance:
            raise ValueError(
                f"isda_transform was built with covariance={covariance!r}; got a state with "
                f"{state_form} covariances of shape {jnp.shape(state.covariances)}."
            )

        logits = jnp.asarray(logits)
        new_state = update_class_statistics(
            state, features, labels, where=where, axis_name=axis_name
        )
        progress = jnp.minimum(state.step, total_steps).astype(jnp.float32) / total_steps
        delta = isda_augmentation(
            logits,
            labels,
            covariances=new_state.covariances,
            classifier_kernel=kernel,
            ratio=lambda_0 * progress,
            where=where,
        )
        dtype = _checks.compute_dtype(logits.dtype)
        return (logits.astype(dtype) + delta.astype(dtype)).astype(logits.dtype), new_state

    return LogitTransform(init, apply)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def _check_covariance(covariance) -> None:
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be 'full' or 'diagonal'; got {covariance!r}.")


def _check_state(state) -> tuple[int, int]:
    """Checks the shapes of an :class:`IsdaState`; returns ``(num_classes, feature_dim)``."""
    if not isinstance(state, IsdaState):
        raise TypeError(f"state must be an IsdaState; got {type(state).__name__}.")
    if jnp.ndim(state.means) != 2:
        raise ValueError(
            f"state.means must have shape [num_classes, feature_dim]; got {jnp.shape(state.means)}."
        )
    num_classes, feature_dim = jnp.shape(state.means)
    covariance_shapes = ((num_classes, feature_dim, feature_dim), (num_classes, feature_dim))
    if (
        jnp.shape(state.counts) != (num_classes,)
        or jnp.shape(state.covariances) not in covariance_shapes
    ):
        raise ValueError(
            "inconsistent IsdaState: counts, means and covariances must have shapes "
            f"[C], [C, D], [C, D, D] (or [C, D], diagonal); got {jnp.shape(state.counts)}, "
            f"{jnp.shape(state.means)}, {jnp.shape(state.covariances)}."
        )
    return num_classes, feature_dim


def _check_features(features, feature_dim: int) -> int:
    """Checks ``features`` is a floating ``[batch, feature_dim]`` array; returns the batch size."""
    if jnp.ndim(features) != 2 or jnp.shape(features)[1] != feature_dim:
        raise ValueError(
            f"features must have shape [batch, feature_dim = {feature_dim}]; "
            f"got shape {jnp.shape(features)}."
        )
    if not jnp.issubdtype(jnp.result_type(features), jnp.floating):
        raise TypeError(
            f"features must be a floating array; got dtype {jnp.result_type(features)}."
        )
    return jnp.shape(features)[0]
