"""Per-class vectors derived from training-set class counts (LA prior, LDAM margins)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lpjax import _checks


def logit_adjustment(
    class_counts: jax.typing.ArrayLike, *, tau: float | jax.typing.ArrayLike = 1.0
) -> jax.Array:
    r"""Logit-adjustment offsets :math:`\tau \log \pi_c`, with :math:`\pi_c = n_c / \sum_k n_k`.

    Training on ``logits + logit_adjustment(counts, tau=tau)`` is the logit-adjusted
    loss; ``tau = 1`` is Balanced Softmax (``log n_c`` differs by a constant
    that softmax ignores). Post-hoc correction subtracts the same vector at
    test time.

    Args:
      class_counts: ``[num_classes]`` positive training-set counts.
      tau: temperature of the prior.

    Returns:
      float32 ``[num_classes]``.

    Example::

      >>> import lpjax
      >>> [round(float(x), 4) for x in lpjax.logit_adjustment([3, 1], tau=1.0)]
      [-0.2877, -1.3863]

    References:
      A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar,
      "Long-tail learning via logit adjustment", ICLR 2021.
    """
    _checks.check_class_counts(class_counts)
    counts = jnp.asarray(class_counts, jnp.float32)
    return tau * jnp.log(counts / counts.sum())


def ldam_margins(
    class_counts: jax.typing.ArrayLike, *, max_margin: float | jax.typing.ArrayLike = 0.5
) -> jax.Array:
    r"""LDAM's label-distribution-aware margins :math:`m_c \propto n_c^{-1/4}`.

    .. math::
      m_c = M \, \frac{n_c^{-1/4}}{\max_k n_k^{-1/4}}

    so the rarest class gets margin ``M = max_margin``. LDAM trains on
    ``s * (u - m_y e_y)``: the margin is subtracted from the true-class logit only.

    Args:
      class_counts: ``[num_classes]`` positive training-set counts.
      max_margin: the largest margin ``M``.

    Returns:
      float32 ``[num_classes]``.

    Example::

      >>> import lpjax
      >>> lpjax.ldam_margins([16, 1], max_margin=0.5).tolist()
      [0.25, 0.5]

    References:
      K. Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
      Margin Loss", NeurIPS 2019.
    """
    _checks.check_class_counts(class_counts)
    _checks.check_nonnegative("max_margin", max_margin)
    inverse_quartic_root = jnp.asarray(class_counts, jnp.float32) ** -0.25
    return max_margin * inverse_quartic_root / inverse_quartic_root.max()


def class_balanced_weights(
    class_counts: jax.typing.ArrayLike, *, beta: float | jax.typing.ArrayLike = 0.9999
) -> jax.Array:
    r"""Per-class loss weights from the effective number of samples (LDAM's DRW stage).

    .. math::
      w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}}, \qquad \sum_c w_c = C

    Deferred re-weighting (DRW) multiplies each sample's loss by
    :math:`w_{y_i}` in the last stage of training.

    Args:
      class_counts: ``[num_classes]`` positive training-set counts.
      beta: in ``[0, 1)``; 0 gives uniform weights.

    Returns:
      float32 ``[num_classes]`` summing to ``num_classes``, computed in float64 when
      ``class_counts`` and ``beta`` are concrete (traced: in float32).

    Example::

      >>> import lpjax
      >>> lpjax.class_balanced_weights([100, 100], beta=0.9).tolist()
      [1.0, 1.0]

    References:
      Y. Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
      CVPR 2019; Cao et al., NeurIPS 2019 (DRW).
    """
    num_classes = _checks.check_class_counts(class_counts)
    if _checks.is_concrete(beta) and not 0 <= float(beta) < 1:
        raise ValueError(f"beta must lie in [0, 1); got {float(beta)}.")
    if _checks.is_concrete(beta) and _checks.is_concrete(class_counts):
        # In float64 on the host: 1 - beta formed after rounding beta to float32 is off
        # by up to 4e-5 relative at beta = 0.9999. 1 - beta^n = -expm1(n log(beta)).
        b, counts = float(beta), np.asarray(class_counts, np.float64)
        weights = (1.0 - b) / -np.expm1(counts * np.log(b)) if b > 0 else np.ones_like(counts)
        return jnp.asarray(weights * num_classes / weights.sum(), jnp.float32)
    counts = jnp.asarray(class_counts, jnp.float32)
    weights = (1.0 - beta) / -jnp.expm1(counts * jnp.log(beta))
    return weights * num_classes / weights.sum()
