"""Builders of the single-label methods: ``build(config, inputs) -> Method``.

Each builder reads only the config blocks its registry entry names (``config`` holds
those blocks and nothing else, checked by the registry) and trains with softmax
cross-entropy on the transformed logits.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import lpjax
from experiments.methods.method import Method, MethodInputs

ISDA_COVARIANCES = ("full", "diagonal")  # config.isda.covariance: lpjax.isda_transform's
ISDA_MAX_COVARIANCE_BYTES = 8 * 2**30  # ImageNet-LT with ResNet-50 would need 16 GiB


def _softmax_cross_entropy(transform: lpjax.LogitTransform, **options) -> Method:
    return Method(transform, lpjax.softmax_cross_entropy_with_integer_labels, **options)


def ce(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(lpjax.identity())


def la(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(
        _logit_adjustment(config, inputs),
        deferred=_deferred(lpjax.identity(), config.la.start_epoch, inputs),
    )


def _deferred(before: lpjax.LogitTransform, start_epoch: int, inputs: MethodInputs):
    """``Method.deferred`` for a start at ``start_epoch`` (0: none); ``before`` until then."""
    if start_epoch < 0:
        raise ValueError(f"a start epoch must be >= 0; got {start_epoch}.")
    return (before, start_epoch * inputs.steps_per_epoch) if start_epoch else None


def la_posthoc(config, inputs: MethodInputs) -> Method:
    posthoc = lpjax.posthoc_logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
    return _softmax_cross_entropy(lpjax.identity(), predict_transform=posthoc)


def balanced_softmax(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(lpjax.balanced_softmax_transform(inputs.class_counts))


def cosine_classifier(config) -> dict:
    """LDAM's model option: the normalized (cosine) classifier scaled by ``ldam.scale``."""
    return {"cosine_scale": config.ldam.scale}


def _ldam_margins(config, inputs: MethodInputs) -> lpjax.LogitTransform:
    # The model's cosine classifier already multiplies by s (cosine_classifier):
    # s (cos - m_y e_y) = s cos - (s m_y) e_y.
    return lpjax.ldam_transform(
        inputs.class_counts, max_margin=config.ldam.max_margin * config.ldam.scale, scale=1.0
    )


def ldam(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(_ldam_margins(config, inputs))


def ldam_drw(config, inputs: MethodInputs) -> Method:
    weights = _deferred_reweighting(
        inputs.class_counts,
        beta=config.ldam.drw_beta,
        start_step=config.ldam.drw_start_epoch * inputs.steps_per_epoch,
    )
    return _softmax_cross_entropy(_ldam_margins(config, inputs), example_weights_fn=weights)


def ldam_drw_lpl(config, inputs: MethodInputs) -> Method:
    """LDAM-DRW, then LPL on its margin-adjusted logits (LPL as a plug-in).

    LDAM's logits are ``s cos``, so LPL's budgets are taken in cosine units and scaled by
    ``ldam.scale``: ``lpl.epsilon``, ``lpl.delta_epsilon`` and ``lpl.step_size`` are
    multiplied by ``s`` (the step counts ``K_c`` are unchanged).
    """
    scaled = {
        f: config.lpl[f] * config.ldam.scale for f in ("epsilon", "delta_epsilon", "step_size")
    }
    lpl = ml_collections.ConfigDict({**config.lpl.to_dict(), **scaled})
    weights = _deferred_reweighting(
        inputs.class_counts,
        beta=config.ldam.drw_beta,
        start_step=config.ldam.drw_start_epoch * inputs.steps_per_epoch,
    )
    margins = _ldam_margins(config, inputs)
    return _softmax_cross_entropy(
        lpjax.chain(margins, _lpl(lpl, inputs)),
        example_weights_fn=weights,
        reference_transform=margins,
    )


def lpl_fixed(config, inputs: MethodInputs) -> Method:
    if config.lpl.epsilon <= 0:  # its only bound: 0 would be plain cross-entropy
        raise ValueError("lpl_fixed needs config.lpl.epsilon > 0 (it ignores delta_epsilon).")
    return _softmax_cross_entropy(_lpl(config.lpl, inputs, delta_epsilon=0.0))


def lpl_varied(config, inputs: MethodInputs) -> Method:
    if config.lpl.delta_epsilon <= 0:
        raise ValueError("lpl_varied needs config.lpl.delta_epsilon > 0.")
    if config.lpl.split_rule == "mean":  # the paper's "LPL (varied)" on balanced data
        return lpl_mean(config, inputs)  # one run, one builder (a note says so)
    return _softmax_cross_entropy(
        _lpl(config.lpl, inputs),
        deferred=_deferred(lpjax.identity(), config.lpl.start_epoch, inputs),
    )


def lpl_mean(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(_lpl(config.lpl, inputs, split_rule="mean"))


def la_lpl(config, inputs: MethodInputs) -> Method:
    adjustment = _logit_adjustment(config, inputs)
    transform = lpjax.chain(adjustment, _lpl(config.lpl, inputs))
    # Logs what LPL's delta does to the LA-adjusted logits (no change to training).
    return _softmax_cross_entropy(
        transform,
        reference_transform=adjustment,
        deferred=_deferred(adjustment, config.lpl.start_epoch, inputs),
    )


def lpl_authors(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(_authors_lpl(config.lpl, inputs.class_counts))


def la_lpl_authors(config, inputs: MethodInputs) -> Method:
    adjustment = _logit_adjustment(config, inputs)
    transform = lpjax.chain(adjustment, _authors_lpl(config.lpl, inputs.class_counts))
    return _softmax_cross_entropy(transform, reference_transform=adjustment)


def _authors_lpl(lpl: ml_collections.ConfigDict, counts: np.ndarray) -> lpjax.LogitTransform:
    """The authors' scripts' LPL (an ablation; lpjax.lpl_authors_longtail_transform).

    In the lpl block's terms: the rarest class takes ``S = floor((epsilon +
    delta_epsilon) / step_size)`` steps (the tail budget over alpha), the other classes
    the scripts' shares of ``S``; ``head_scale`` and ``num_head_classes`` as for LPL. The
    authors' CIFAR-10-LT point: tail budget 1.5, step 0.15 (S = 10), h = 0.6, 4 heads.
    """
    tail_budget = lpl.epsilon + lpl.delta_epsilon
    num_steps = int(lpjax.num_inner_steps(np.float32(tail_budget), np.float32(lpl.step_size)))
    if num_steps < 1:
        raise ValueError(
            "lpl_authors needs (lpl.epsilon + lpl.delta_epsilon) / lpl.step_size >= 1 (the "
            f"rarest class's steps); got {tail_budget:g} / {lpl.step_size:g}."
        )
    return lpjax.lpl_authors_longtail_transform(
        counts,
        num_head_classes=lpl.num_head_classes,
        num_steps=num_steps,
        step_size=lpl.step_size,
        head_scale=lpl.head_scale,
    )


def lpl_adaptive(config, inputs: MethodInputs) -> Method:
    return _softmax_cross_entropy(_adaptive_lpl(config.lpl, inputs.class_counts))


def la_lpl_adaptive(config, inputs: MethodInputs) -> Method:
    transform = lpjax.chain(
        _logit_adjustment(config, inputs), _adaptive_lpl(config.lpl, inputs.class_counts)
    )
    return _softmax_cross_entropy(transform)


def isda(config, inputs: MethodInputs) -> Method:
    num_classes, feature_dim = len(inputs.class_counts), inputs.feature_dim
    if feature_dim is None:
        raise ValueError("isda needs the model's feature dimension.")
    covariance = config.isda.covariance
    covariance_bytes = 4 * num_classes * feature_dim**2
    if covariance == "full" and covariance_bytes > ISDA_MAX_COVARIANCE_BYTES:
        raise ValueError(
            f"isda keeps a float32 [C, D, D] class covariance on every device: "
            f"{num_classes} x {feature_dim}^2 x 4 bytes = {covariance_bytes / 2**30:.1f} GiB "
            f"(the limit is {ISDA_MAX_COVARIANCE_BYTES / 2**30:.0f} GiB); set "
            "config.isda.covariance=diagonal ([C, D] variances), or choose another method."
        )
    transform = lpjax.isda_transform(
        num_classes,
        feature_dim,
        lambda_0=config.isda.lambda_0,
        total_steps=inputs.total_steps,
        covariance=covariance,
    )
    return _softmax_cross_entropy(transform)


def _logit_adjustment(config, inputs: MethodInputs) -> lpjax.LogitTransform:
    return lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)


def _lpl(
    lpl: ml_collections.ConfigDict,
    inputs: MethodInputs,
    *,
    delta_epsilon: float | None = None,
    split_rule: str | None = None,
) -> lpjax.LogitTransform:
    """LPL with ``lpl``'s bounds; ``delta_epsilon`` and ``split_rule`` override the block's."""
    delta_epsilon = lpl.delta_epsilon if delta_epsilon is None else delta_epsilon
    if (split_rule or lpl.split_rule) == "mean":
        return lpjax.lpl_mean_rule_transform(
            epsilon=lpl.epsilon,
            step_size=lpl.step_size,
            delta_epsilon=delta_epsilon,
            normalize=lpl.normalize,
        )
    return lpjax.lpl_longtail_transform(
        inputs.class_counts,
        num_head_classes=lpl.num_head_classes,
        epsilon=lpl.epsilon,
        step_size=lpl.step_size,
        delta_epsilon=delta_epsilon,
        head_scale=lpl.head_scale,
        normalize=lpl.normalize,
    )


def _adaptive_lpl(lpl: ml_collections.ConfigDict, counts: np.ndarray) -> lpjax.LogitTransform:
    """Adaptive LPL with ``lpl.split_rule``'s signs and the target ``lpl.adaptive_target``."""
    if lpl.split_rule == "longtail":
        signs, targets = lpjax.longtail_signs_and_bounds(
            counts,
            num_head_classes=lpl.num_head_classes,
            epsilon=lpl.adaptive_target,
            head_scale=lpl.head_scale,
        )
        signs_and_targets = lambda logits, labels, where, axis_name: (signs, targets)
    else:

        def signs_and_targets(logits, labels, where, axis_name):
            return lpjax.mean_rule_signs_and_bounds(
                logits, labels, epsilon=lpl.adaptive_target, where=where, axis_name=axis_name
            )

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
