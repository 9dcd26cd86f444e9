"""lpjax: class-level logit perturbation in JAX.

Pure functions and optax-style transforms for learning with perturbed logits:
LPL (Li et al., "Class-Level Logit Perturbation", TNNLS 2023) and the losses
it unifies (logit adjustment, Balanced Softmax, LDAM). Every function that
reduces over the batch takes ``axis_name`` for data parallelism under
``jax.shard_map`` or ``jax.pmap``.
"""

from lpjax._adaptive import (
    AdaptiveLplState,
    adaptive_bounds_update,
    lpl_adaptive_longtail_transform,
    lpl_adaptive_transform,
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
from lpjax._multilabel import (
    MultilabelSplit,
    lpl_multilabel_balanced_transform,
    lpl_multilabel_longtail_transform,
    multilabel_balanced_signs_and_bounds,
    multilabel_longtail_signs_and_bounds,
    multilabel_lpl_perturbation,
)
from lpjax._priors import class_balanced_weights, ldam_margins, logit_adjustment
from lpjax._solver import DEFAULT_MAX_INNER_STEPS, lpl_perturbation, num_inner_steps
from lpjax._splits import balanced_signs_and_bounds, longtail_signs_and_bounds
from lpjax._transforms import (
    LogitTransform,
    TransformState,
    balanced_softmax_transform,
    chain,
    identity,
    ldam_transform,
    logit_adjustment_transform,
    lpl_balanced_transform,
    lpl_longtail_transform,
    lpl_transform,
    posthoc_logit_adjustment_transform,
    stateless,
)

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_MAX_INNER_STEPS",
    "AdaptiveLplState",
    "IsdaState",
    "MultilabelSplit",
    "LogitTransform",
    "TransformState",
    "adaptive_bounds_update",
    "asymmetric_loss",
    "balanced_signs_and_bounds",
    "balanced_softmax_transform",
    "chain",
    "class_balanced_weights",
    "identity",
    "init_isda_state",
    "isda_augmentation",
    "isda_transform",
    "ldam_margins",
    "ldam_transform",
    "logit_adjustment",
    "logit_adjustment_transform",
    "longtail_signs_and_bounds",
    "lpl_adaptive_longtail_transform",
    "lpl_adaptive_transform",
    "lpl_balanced_transform",
    "lpl_longtail_transform",
    "lpl_multilabel_balanced_transform",
    "lpl_multilabel_longtail_transform",
    "lpl_perturbation",
    "lpl_transform",
    "multilabel_balanced_signs_and_bounds",
    "multilabel_longtail_signs_and_bounds",
    "multilabel_lpl_perturbation",
    "num_inner_steps",
    "posthoc_logit_adjustment_transform",
    "relative_loss_variation",
    "softmax_cross_entropy_with_integer_labels",
    "stateless",
    "update_class_statistics",
    "validate_labels",
)
