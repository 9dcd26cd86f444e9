"""lpjax: class-level logit perturbation in JAX.

Pure functions and optax-style transforms for learning with perturbed logits:
LPL (Li et al., "Class-Level Logit Perturbation", TNNLS 2023), its meta-learned
form, and the losses it unifies (logit adjustment, Balanced Softmax, LDAM, ISDA).
Every function that reduces over the batch gives the global batch's result in the
global view (``jax.jit`` over sharded arrays) and takes ``axis_name`` for
``jax.shard_map`` steps.
"""

import warnings as _warnings

from lpjax._adaptive import (
    AdaptiveLplState,
    adaptive_bounds_update,
    lpl_adaptive_longtail_transform,
    lpl_adaptive_transform,
)
from lpjax._authors import (
    authors_lpl_perturbation,
    authors_step_counts,
    lpl_authors_longtail_transform,
)
from lpjax._checks import validate_labels
from lpjax._diagnostics import relative_loss_variation
from lpjax._isda import (
    IsdaState,
    init_isda_state,
    isda_augmentation,
    isda_transform,
    update_class_statistics,
)
from lpjax._losses import asymmetric_loss, softmax_cross_entropy_with_integer_labels
from lpjax._meta import (
    MetaLplState,
    MetaLplTransform,
    lookahead_meta_gradient,
    lpl_meta_transform,
)
from lpjax._multilabel import (
    MultilabelSignsAndBounds,
    lpl_multilabel_longtail_transform,
    lpl_multilabel_mean_rule_transform,
    lpl_multilabel_perturbation,
    multilabel_longtail_signs_and_bounds,
    multilabel_mean_rule_signs_and_bounds,
)
from lpjax._priors import class_balanced_weights, ldam_margins, logit_adjustment
from lpjax._signs_and_bounds import longtail_signs_and_bounds, mean_rule_signs_and_bounds
from lpjax._solver import DEFAULT_MAX_INNER_STEPS, lpl_perturbation, num_inner_steps
from lpjax._transforms import (
    LogitTransform,
    TransformState,
    balanced_softmax_transform,
    chain,
    get_transform_state,
    identity,
    ldam_transform,
    logit_adjustment_transform,
    lpl_longtail_transform,
    lpl_mean_rule_transform,
    lpl_transform,
    posthoc_logit_adjustment_transform,
    set_transform_state,
    stateless,
)

__version__ = "0.2.0"

__all__ = (
    "DEFAULT_MAX_INNER_STEPS",
    "AdaptiveLplState",
    "IsdaState",
    "LogitTransform",
    "MetaLplState",
    "MetaLplTransform",
    "MultilabelSignsAndBounds",
    "TransformState",
    "adaptive_bounds_update",
    "asymmetric_loss",
    "authors_lpl_perturbation",
    "authors_step_counts",
    "balanced_softmax_transform",
    "chain",
    "class_balanced_weights",
    "get_transform_state",
    "identity",
    "init_isda_state",
    "isda_augmentation",
    "isda_transform",
    "ldam_margins",
    "ldam_transform",
    "logit_adjustment",
    "logit_adjustment_transform",
    "lpl_authors_longtail_transform",
    "longtail_signs_and_bounds",
    "lookahead_meta_gradient",
    "lpl_adaptive_longtail_transform",
    "lpl_adaptive_transform",
    "lpl_longtail_transform",
    "lpl_mean_rule_transform",
    "lpl_meta_transform",
    "lpl_multilabel_longtail_transform",
    "lpl_multilabel_mean_rule_transform",
    "lpl_multilabel_perturbation",
    "lpl_perturbation",
    "lpl_transform",
    "mean_rule_signs_and_bounds",
    "multilabel_longtail_signs_and_bounds",
    "multilabel_mean_rule_signs_and_bounds",
    "num_inner_steps",
    "posthoc_logit_adjustment_transform",
    "relative_loss_variation",
    "set_transform_state",
    "softmax_cross_entropy_with_integer_labels",
    "stateless",
    "update_class_statistics",
    "validate_labels",
)

# Names of lpjax 0.1, kept for one release: old name -> new name.
_DEPRECATED = {
    "balanced_signs_and_bounds": "mean_rule_signs_and_bounds",
    "lpl_balanced_transform": "lpl_mean_rule_transform",
    "multilabel_balanced_signs_and_bounds": "multilabel_mean_rule_signs_and_bounds",
    "lpl_multilabel_balanced_transform": "lpl_multilabel_mean_rule_transform",
    "multilabel_lpl_perturbation": "lpl_multilabel_perturbation",
    "MultilabelSplit": "MultilabelSignsAndBounds",
}


def __getattr__(name: str):
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        _warnings.warn(
            f"lpjax.{name} is deprecated and will be removed in lpjax 0.3; use lpjax.{new}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module 'lpjax' has no attribute {name!r}")
