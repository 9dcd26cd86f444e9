"""The methods the trainer knows: ``config.method.name`` -> an entry, and their config blocks.

An entry (:class:`MethodEntry`) says how to build the method (a
:class:`~experiments.methods.method.Method`: the train transform, the per-example loss,
and its protocol's hooks), which config blocks it reads, whether it is multi-label, what
it asks of the model (LDAM's cosine classifier) and of the data (Meta-LPL's meta set).
This module also owns the method blocks (``config.la``, ``config.lpl``, ...): their
fields, defaults and comments, which ``experiments/config/base.py`` puts in every
config. A builder sees only the blocks its entry names.

Adding a method is one entry in ``_REGISTRY`` (its builder in ``single_label.py``,
``multilabel.py`` or a module of its own, as ``meta.py``, where it brings its own step
and inputs), one block in ``_BLOCKS`` if it has new hyperparameters, and its tests;
``--help``, the config and its validation follow from here: nothing outside
``experiments/methods/`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import ml_collections
import numpy as np

from experiments import optimizers
from experiments.methods import meta, multilabel, single_label
from experiments.methods.method import Method, MethodInputs

__all__ = [
    "ALIASES",
    "ALLOWED_VALUES",
    "BLOCK_NAMES",
    "NAMES",
    "SIGNS_AND_BOUNDS_RULES",
    "SPLIT_RULES",
    "MethodEntry",
    "check_blocks",
    "default_blocks",
    "entry",
    "is_multilabel",
    "make_method",
    "model_options",
    "prepare_data",
]


class MethodEntry(NamedTuple):
    """One method: how to build it, what it reads, what it needs."""

    build: Callable[[ml_collections.ConfigDict, MethodInputs], Method]  # (its blocks, inputs)
    summary: str  # one line for --help
    blocks: tuple[str, ...] = ()  # the config blocks the builder reads
    multilabel: bool = False  # trains on multi-hot labels
    model_options: Callable[[ml_collections.ConfigDict], dict] | None = None  # create_model kwargs
    # (its blocks, the data's Splits, seed) -> Splits: e.g. a set held out of the training
    # pool (Meta-LPL's meta set, Splits.held_out); None: the splits as they are.
    prepare_data: Callable | None = None


# --- the method blocks: config.<block>.<field>, one block per family of methods -------------


def _la_block() -> ml_collections.ConfigDict:
    la = ml_collections.ConfigDict()
    la.tau = 1.0  # logit adjustment temperature: u + tau log(pi) (la_posthoc: u - tau log(pi))
    la.start_epoch = 0  # la: plain CE before this epoch, LA from it (the deferred-LPL control)
    return la


def _ldam_block() -> ml_collections.ConfigDict:
    ldam = ml_collections.ConfigDict()
    ldam.max_margin = 0.5  # LDAM's largest margin (the rarest class's)
    ldam.scale = 30.0  # LDAM's logit scale s: its cosine classifier's
    ldam.drw_start_epoch = 20  # ldam_drw: epoch from which class-balanced weights apply
    ldam.drw_beta = 0.9999  # ldam_drw: effective-number beta of the weights
    return ldam


def _isda_block() -> ml_collections.ConfigDict:
    isda = ml_collections.ConfigDict()
    isda.lambda_0 = 0.5  # ISDA's final strength lambda_0 (ramped linearly over training)
    isda.covariance = "full"  # "full" [C, D, D] class covariances, or "diagonal" [C, D]
    return isda


def _focal_block() -> ml_collections.ConfigDict:
    focal = ml_collections.ConfigDict()
    focal.gamma = 2.0  # focal loss gamma (Lin et al.)
    return focal


def _asl_block() -> ml_collections.ConfigDict:
    asl = ml_collections.ConfigDict()
    asl.gamma_negative = 4.0  # ASL's focusing gamma for negatives
    asl.gamma_positive = 0.0  # ASL's focusing gamma for positives
    asl.clip = 0.05  # ASL's probability margin for negatives
    asl.stop_focusing_gradient = True  # focusing weights constant (the authors' training code)
    return asl


# config.lpl.split_rule: LPL's signs and bounds by class counts | by the mean rule.
SIGNS_AND_BOUNDS_RULES = ("longtail", "mean")
SPLIT_RULES = SIGNS_AND_BOUNDS_RULES  # deprecated name


def _lpl_block() -> ml_collections.ConfigDict:
    lpl = ml_collections.ConfigDict()
    lpl.split_rule = "longtail"  # longtail (head/tail by training counts) | mean (the mean rule)
    lpl.epsilon = 0.1  # base bound eps of every class
    lpl.delta_epsilon = 0.2  # d_eps of varied bounds (lpl_varied, lpl_mean, la_lpl); 0 = fixed
    lpl.step_size = 0.01  # inner PGD step alpha; K_c = floor(eps_c / alpha)
    lpl.num_head_classes = 4  # longtail rule: this many most frequent classes are head
    lpl.head_scale = 1.0  # longtail rule: factor of every head bound (authors' scripts: 0.2-0.6)
    lpl.normalize = False  # single-label inner step: the paper's (Eq. 11/12) or True: unit step
    lpl.start_epoch = 0  # lpl_varied, la_lpl: LPL from this epoch on, DRW-style (before: CE / LA)
    # Adaptive LPL (lpl_adaptive, la_lpl_adaptive; docs/method.md, section 8): lpl.epsilon is
    # every class's initial bound; each bound then steers its class's log loss ratio
    # log(L'_c / L_c) toward s_c * adaptive_target (signs from lpl.split_rule).
    lpl.adaptive_target = 0.3  # kappa: target |log(L'_c / L_c)| of every signed class
    lpl.adaptive_rate = 0.05  # eta: a bound changes by at most a factor e^eta a step
    lpl.max_epsilon = 10.0  # bounds stay in [step_size, max_epsilon]
    return lpl


def _meta_block() -> ml_collections.ConfigDict:
    meta = ml_collections.ConfigDict()
    meta.per_class = 10  # balanced meta set: images per class held out of the training pool
    meta.batch_size = 100  # meta batch (drawn from the meta set as a function of seed and step)
    meta.max_epsilon = 3.0  # eps_max: signed bounds theta_c = eps_max tanh(phi_c)
    meta.learning_rate = 0.01  # Adam's learning rate for phi
    meta.every_steps = 5  # a meta step every this many training steps
    meta.start_epoch = 0  # the first meta step (before it phi stays 0: no perturbation)
    meta.scope = "classifier"  # look-ahead on the last layer (classifier) or all (model)
    return meta


_BLOCKS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "la": _la_block,
    "ldam": _ldam_block,
    "isda": _isda_block,
    "focal": _focal_block,
    "asl": _asl_block,
    "lpl": _lpl_block,
    "meta": _meta_block,
}

BLOCK_NAMES = tuple(_BLOCKS)


def default_blocks() -> dict[str, ml_collections.ConfigDict]:
    """Every method block with its defaults (fresh copies): ``{"la": ..., "lpl": ...}``."""
    return {name: make() for name, make in _BLOCKS.items()}


# --- the methods ----------------------------------------------------------------------------

_ldam = dict(blocks=("ldam",), model_options=single_label.cosine_classifier)

_REGISTRY: dict[str, MethodEntry] = {
    "ce": MethodEntry(single_label.ce, "plain cross-entropy"),
    "la": MethodEntry(
        single_label.la, "logit-adjusted loss (Menon et al.): u + tau log(pi)", blocks=("la",)
    ),
    "la_posthoc": MethodEntry(
        single_label.la_posthoc, "train with CE, predict with u - tau log(pi)", blocks=("la",)
    ),
    "balanced_softmax": MethodEntry(single_label.balanced_softmax, "u + log(n) (Ren et al.)"),
    "ldam": MethodEntry(
        single_label.ldam, "LDAM (Cao et al.): s (cos - m_y e_y), cosine classifier", **_ldam
    ),
    "ldam_drw": MethodEntry(
        single_label.ldam_drw, "LDAM + deferred class-balanced re-weighting", **_ldam
    ),
    "ldam_drw_lpl": MethodEntry(
        single_label.ldam_drw_lpl,
        "LDAM-DRW, then LPL on its logits (budgets in cosine units, scaled by ldam.scale)",
        blocks=("ldam", "lpl"),
        model_options=single_label.cosine_classifier,
    ),
    "lpl_fixed": MethodEntry(
        single_label.lpl_fixed, "LPL, fixed bounds (lpl.delta_epsilon ignored)", blocks=("lpl",)
    ),
    "lpl_varied": MethodEntry(
        single_label.lpl_varied, "LPL, varied bounds (lpl.delta_epsilon > 0)", blocks=("lpl",)
    ),
    "lpl_mean": MethodEntry(
        single_label.lpl_mean, "LPL, the mean rule whatever lpl.split_rule says", blocks=("lpl",)
    ),
    "la_lpl": MethodEntry(
        single_label.la_lpl,
        "logit adjustment, then LPL on the adjusted logits",
        blocks=("la", "lpl"),
    ),
    "lpl_authors": MethodEntry(
        single_label.lpl_authors,
        "ablation: LPL as the authors' long-tail scripts (lpjax.lpl_authors_longtail_transform)",
        blocks=("lpl",),
    ),
    "la_lpl_authors": MethodEntry(
        single_label.la_lpl_authors,
        "ablation: logit adjustment, then the authors' scripts' LPL",
        blocks=("la", "lpl"),
    ),
    "lpl_adaptive": MethodEntry(
        single_label.lpl_adaptive,
        "adaptive LPL: bounds steered to a target loss ratio (docs/method.md 8)",
        blocks=("lpl",),
    ),
    "la_lpl_adaptive": MethodEntry(
        single_label.la_lpl_adaptive, "logit adjustment, then adaptive LPL", blocks=("la", "lpl")
    ),
    # Meta-LPL and its controls, each with its use of the meta set (experiments/methods/meta.py).
    **{
        name: MethodEntry(build, summary, blocks=blocks, prepare_data=data)
        for name, build, summary, blocks, data in (
            (
                "meta_lpl",
                meta.meta_lpl,
                "Meta-LPL: signed per-class bounds learned on a meta set (docs/method.md 9)",
                ("lpl", "meta"),
                meta.meta_batches_data,
            ),
            (
                "la_meta_lpl",
                meta.la_meta_lpl,
                "logit adjustment, then Meta-LPL",
                ("la", "lpl", "meta"),
                meta.meta_batches_data,
            ),
            (
                "la_meta_data",
                meta.la_meta_data,
                "control: logit adjustment trained on the training images + the meta set",
                ("la", "meta"),
                meta.meta_training_data,
            ),
            (
                "la_meta_offsets",
                meta.la_meta_offsets,
                "control: logit adjustment + per-class logit offsets fitted on the meta set",
                ("la", "meta"),
                meta.meta_offsets_data,
            ),
        )
    },
    "isda": MethodEntry(
        single_label.isda, "implicit semantic data augmentation (Wang et al.)", blocks=("isda",)
    ),
    "bce": MethodEntry(multilabel.bce, "binary cross-entropy", multilabel=True),
    "focal": MethodEntry(
        multilabel.focal, "sigmoid focal loss (Lin et al.)", blocks=("focal",), multilabel=True
    ),
    "asl": MethodEntry(
        multilabel.asl, "asymmetric loss (Ridnik et al.)", blocks=("asl",), multilabel=True
    ),
    "lpl_multilabel": MethodEntry(
        multilabel.lpl_multilabel,
        "multi-label LPL (this project's formulation, README)",
        blocks=("lpl",),
        multilabel=True,
    ),
}

NAMES = tuple(_REGISTRY)

# Method names of earlier releases, still accepted: old name -> its name now.
ALIASES = {"lpl_balanced": "lpl_mean"}

# The choices of the method blocks' fields (experiments.config.names checks them, once).
ALLOWED_VALUES = {
    "isda.covariance": single_label.ISDA_COVARIANCES,
    "lpl.split_rule": SIGNS_AND_BOUNDS_RULES,
    "meta.scope": meta.SCOPES,
}


def entry(name: str) -> MethodEntry:
    """The entry of method ``name`` (a name of :data:`NAMES` or :data:`ALIASES`)."""
    return _REGISTRY[ALIASES.get(name, name)]


def is_multilabel(name: str) -> bool:
    """Whether method ``name`` trains on multi-hot labels."""
    return entry(name).multilabel


def check_blocks(config: ml_collections.ConfigDict) -> None:
    """Checks the ranges of the chosen method's block values (their names: ALLOWED_VALUES).

    Raises:
      ValueError: naming the field, its valid values and the value given.
    """
    blocks = entry(config.method.name).blocks
    if "meta" in blocks:
        m = config.meta
        for field in ("per_class", "batch_size", "every_steps"):
            if m[field] < 1:
                raise ValueError(f"config.meta.{field} must be >= 1; got {m[field]}.")
        if m.start_epoch < 0:
            raise ValueError(f"config.meta.start_epoch must be >= 0; got {m.start_epoch}.")
        for field in ("max_epsilon", "learning_rate"):
            if not m[field] > 0:
                raise ValueError(f"config.meta.{field} must be > 0; got {m[field]}.")


def _blocks_of(config: ml_collections.ConfigDict, method: MethodEntry):
    """The config blocks ``method`` reads, and nothing else (read-only)."""
    return ml_collections.FrozenConfigDict({name: config[name] for name in method.blocks})


def make_method(
    config: ml_collections.ConfigDict,
    class_counts: np.ndarray,
    *,
    steps_per_epoch: int,
    feature_dim: int | None = None,
) -> Method:
    """Builds the method ``config.method.name`` for a data set with these class counts.

    Raises:
      ValueError: an unknown method, a bad block value, or settings the method refuses
        (e.g. ISDA's covariances too large).
    """
    method = entry(config.method.name)
    check_blocks(config)
    inputs = MethodInputs(
        class_counts=np.asarray(class_counts),
        steps_per_epoch=steps_per_epoch,
        total_steps=config.optim.num_epochs * steps_per_epoch,
        feature_dim=feature_dim,
        learning_rate=optimizers.make_schedule(config.optim, steps_per_epoch),
    )
    return method.build(_blocks_of(config, method), inputs)


def model_options(config: ml_collections.ConfigDict) -> dict:
    """Keyword arguments the chosen method needs from the model (LDAM's cosine classifier)."""
    method = entry(config.method.name)
    return {} if method.model_options is None else method.model_options(_blocks_of(config, method))


def prepare_data(config: ml_collections.ConfigDict, splits):
    """The data as method ``config.method.name`` trains on it: ``splits`` (a
    :class:`experiments.data.registry.Splits`), or what its entry makes of them.

    Raises:
      ValueError: the method cannot use this data (e.g. no meta set can be held out).
    """
    method = entry(config.method.name)
    if method.prepare_data is None:
        return splits
    return method.prepare_data(_blocks_of(config, method), splits, config.seed)
