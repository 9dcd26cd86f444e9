"""The methods of the paper as lpjax losses: what ``--config.method`` selects.

Each method is a logit transform and a per-example loss on the transformed logits for
the train step, optional per-example loss weights (LDAM's deferred re-weighting), and an
optional test-time logit transform (post-hoc logit adjustment). All methods predict with
the plain logits otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import lpjax

SINGLE_LABEL_METHODS = (
    "ce",  # plain cross-entropy
    "la",  # logit-adjusted loss (Menon et al.): train on u + tau log(pi)
    "la_posthoc",  # train with CE, predict with u - tau log(pi)
    "balanced_softmax",  # u + log(n) (Ren et al.)
    "ldam",  # s (u - m_y e_y) (Cao et al.)
    "ldam_drw",  # LDAM + deferred class-balanced re-weighting
    "lpl_fixed",  # LPL, fixed bounds (config.lpl, delta_epsilon ignored)
    "lpl_varied",  # LPL, varied bounds (config.lpl.delta_epsilon > 0)
    "lpl_balanced",  # LPL, the mean rule per batch whatever config.lpl.split says
    "la_lpl",  # logit adjustment, then LPL on the adjusted logits
    "lpl_adaptive",  # adaptive LPL: bounds steered to a target loss ratio (docs/method.md 8)
    "la_lpl_adaptive",  # logit adjustment, then adaptive LPL
    "isda",  # implicit semantic data augmentation (Wang et al.)
)
MULTILABEL_METHODS = (
    "bce",  # binary cross-entropy
    "focal",  # sigmoid focal loss (Lin et al.)
    "asl",  # asymmetric loss (Ridnik et al.)
    "lpl_multilabel",  # multi-label LPL (this project's formulation, README)
)


_LDAM_METHODS = ("ldam", "ldam_drw")
ISDA_MAX_COVARIANCE_BYTES = 8 * 2**30  # ImageNet-LT with ResNet-50 would need 16 GiB


def model_options(config: ml_collections.ConfigDict) -> dict:
    """Keyword arguments a method needs from the model: LDAM's cosine classifier."""
    if config.method in _LDAM_METHODS:
        return {"cosine_scale": config.ldam_scale}
    return {}


@dataclasses.dataclass(frozen=True)
class Method:
    """A method ready for ``lpjax.training.make_train_step``."""

    transform: lpjax.LogitTransform  # its state lives in the TrainState
    loss_fn: Callable  # (perturbed logits, labels, *, where) -> [batch] losses
    example_weights_fn: Callable | None = None  # (labels, step) -> [batch] weights
    predict_transform: lpjax.LogitTransform | None = None  # label-free test-time transform


def make_method(
    config: ml_collections.ConfigDict,
    class_counts: np.ndarray,
    *,
    steps_per_epoch: int,
    feature_dim: int | None = None,
) -> Method:
    """Builds the method named by ``config.method`` for a data set with these counts."""
    name = config.method
    counts = np.asarray(class_counts)
    if name in MULTILABEL_METHODS:
        return _multilabel_method(config, counts)
    if name not in SINGLE_LABEL_METHODS:
        raise ValueError(
            f"Unknown method {name!r}; valid single-label methods: "
            f"{', '.join(SINGLE_LABEL_METHODS)}; multi-label: {', '.join(MULTILABEL_METHODS)}."
        )
    lpl = config.lpl

    def lpl_transform(delta_epsilon, split=lpl.split):
        if split == "balanced":
            return lpjax.lpl_mean_rule_transform(
                epsilon=lpl.epsilon,
                step_size=lpl.step_size,
                delta_epsilon=delta_epsilon,
                normalize=lpl.normalize,
            )
        if split == "longtail":
            return lpjax.lpl_longtail_transform(
                counts,
                num_head_classes=lpl.num_head_classes,
                epsilon=lpl.epsilon,
                step_size=lpl.step_size,
                delta_epsilon=delta_epsilon,
                head_scale=lpl.head_scale,
                normalize=lpl.normalize,
            )
        raise ValueError(f"config.lpl.split must be 'balanced' or 'longtail'; got {lpl.split!r}.")

    predict_transform = None
    example_weights_fn = None
    if name in ("ce", "la_posthoc"):
        transform = lpjax.identity()
        if name == "la_posthoc":
            predict_transform = lpjax.posthoc_logit_adjustment_transform(counts, tau=config.la_tau)
    elif name == "la":
        transform = lpjax.logit_adjustment_transform(counts, tau=config.la_tau)
    elif name == "balanced_softmax":
        transform = lpjax.balanced_softmax_transform(counts)
    elif name in _LDAM_METHODS:
        # The model's cosine classifier already multiplies by s (model_options):
        # s (cos - m_y e_y) = s cos - (s m_y) e_y.
        transform = lpjax.ldam_transform(
            counts, max_margin=config.ldam_max_margin * config.ldam_scale, scale=1.0
        )
        if name == "ldam_drw":
            example_weights_fn = _deferred_reweighting(
                counts, beta=config.drw_beta, start_step=config.drw_start_epoch * steps_per_epoch
            )
    elif name == "lpl_fixed":
        transform = lpl_transform(0.0)
    elif name == "lpl_varied":
        if lpl.delta_epsilon <= 0:
            raise ValueError("lpl_varied needs config.lpl.delta_epsilon > 0.")
        transform = lpl_transform(lpl.delta_epsilon)
    elif name == "lpl_balanced":
        transform = lpl_transform(lpl.delta_epsilon, split="balanced")
    elif name == "la_lpl":
        transform = lpjax.chain(
            lpjax.logit_adjustment_transform(counts, tau=config.la_tau),
            lpl_transform(lpl.delta_epsilon),
        )
    elif name in ("lpl_adaptive", "la_lpl_adaptive"):
        transform = _adaptive_lpl(lpl, counts)
        if name == "la_lpl_adaptive":
            transform = lpjax.chain(
                lpjax.logit_adjustment_transform(counts, tau=config.la_tau), transform
            )
    else:  # isda
        if feature_dim is None:
            raise ValueError("isda needs the model's feature dimension.")
        covariance_bytes = 4 * len(counts) * feature_dim**2
        if covariance_bytes > ISDA_MAX_COVARIANCE_BYTES:
            raise ValueError(
                f"isda keeps a float32 [C, D, D] class covariance on every device: "
                f"{len(counts)} x {feature_dim}^2 x 4 bytes = {covariance_bytes / 2**30:.1f} GiB "
                f"(the limit is {ISDA_MAX_COVARIANCE_BYTES / 2**30:.0f} GiB); choose another "
                "method, or a model with fewer features."
            )
        transform = lpjax.isda_transform(
            len(counts),
            feature_dim,
            lambda_0=config.isda_lambda,
            total_steps=config.num_epochs * steps_per_epoch,
        )
    return Method(
        transform=transform,
        loss_fn=lpjax.softmax_cross_entropy_with_integer_labels,
        example_weights_fn=example_weights_fn,
        predict_transform=predict_transform,
    )


def _adaptive_lpl(lpl: ml_collections.ConfigDict, counts: np.ndarray) -> lpjax.LogitTransform:
    """Adaptive LPL with ``lpl.split``'s signs and the target ``lpl.adaptive_target``."""
    if lpl.split == "longtail":
        signs, targets = lpjax.longtail_signs_and_bounds(
            counts,
            num_head_classes=lpl.num_head_classes,
            epsilon=lpl.adaptive_target,
            head_scale=lpl.head_scale,
        )
        signs_and_targets = lambda logits, labels, where, axis_name: (signs, targets)
    elif lpl.split == "balanced":

        def signs_and_targets(logits, labels, where, axis_name):
            return lpjax.mean_rule_signs_and_bounds(
                logits, labels, epsilon=lpl.adaptive_target, where=where, axis_name=axis_name
            )
    else:
        raise ValueError(f"config.lpl.split must be 'balanced' or 'longtail'; got {lpl.split!r}.")
    return lpjax.lpl_adaptive_transform(
        signs_and_targets,
        num_classes=len(counts),
        step_size=lpl.step_size,
        initial_epsilon=lpl.epsilon,
        rate=lpl.adaptive_rate,
        max_epsilon=lpl.max_epsilon,
        normalize=lpl.normalize,
    )


def _deferred_reweighting(class_counts, *, beta: float, start_step: int) -> Callable:
    """DRW: class-balanced weights from ``start_step`` on, uniform before (Cao et al. 2019)."""
    weights = lpjax.class_balanced_weights(class_counts, beta=beta)

    def example_weights(labels: jax.Array, step: jax.Array) -> jax.Array:
        return jnp.where(step >= start_step, weights[labels], 1.0)

    return example_weights


def _class_mean(elementwise_loss: Callable) -> Callable:
    """``loss_fn(logits, labels, *, where)``: ``elementwise_loss`` averaged over classes.

    In float32 at least (bfloat16 logits are upcast); 0 where ``where`` is False.
    """

    def loss_fn(logits, labels, *, where=None):
        dtype = jnp.promote_types(logits.dtype, jnp.float32)
        loss = elementwise_loss(logits.astype(dtype), labels.astype(dtype)).mean(axis=-1)
        return loss if where is None else jnp.where(where, loss, 0)

    return loss_fn


def _multilabel_method(config: ml_collections.ConfigDict, positive_counts: np.ndarray) -> Method:
    name = config.method
    transform = lpjax.identity()
    loss_fn = _class_mean(optax.sigmoid_binary_cross_entropy)
    if name == "focal":
        loss_fn = _class_mean(
            lambda logits, labels: optax.sigmoid_focal_loss(
                logits, labels, gamma=config.focal_gamma
            )
        )
    elif name == "asl":
        loss_fn = _class_mean(
            lambda logits, labels: lpjax.asymmetric_loss(
                logits,
                labels,
                gamma_negative=config.asl_gamma_negative,
                gamma_positive=config.asl_gamma_positive,
                clip=config.asl_clip,
                stop_focusing_gradient=config.asl_stop_focusing_gradient,
            )
        )
    elif name == "lpl_multilabel":
        lpl = config.lpl
        if lpl.split == "balanced":
            transform = lpjax.lpl_multilabel_balanced_transform(
                epsilon=lpl.epsilon, step_size=lpl.step_size, delta_epsilon=lpl.delta_epsilon
            )
        else:
            transform = lpjax.lpl_multilabel_longtail_transform(
                positive_counts,
                num_head_classes=lpl.num_head_classes,
                epsilon=lpl.epsilon,
                step_size=lpl.step_size,
                delta_epsilon=lpl.delta_epsilon,
            )
    return Method(transform=transform, loss_fn=loss_fn)
