"""What a method is to the trainer (:class:`Method`) and what its builder gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import lpjax


@dataclasses.dataclass(frozen=True)
class MetaLearning:
    """Meta-LPL's meta step, as the train step runs it (:mod:`experiments.train_step`).

    Every ``every_steps`` steps from ``start_step`` on, the step first updates the
    :class:`lpjax.MetaLplState` inside the transform state by
    ``transform.update`` (a one-step look-ahead on a balanced meta batch of
    ``batch_size`` images), then trains with the new signed bounds.
    """

    transform: lpjax.MetaLplTransform
    perturb: Callable  # (logits, labels, theta, where) -> the logits the training loss sees
    get_state: Callable  # transform state -> its MetaLplState
    set_state: Callable  # (transform state, MetaLplState) -> transform state
    scope: str  # "classifier": look ahead on the last layer only; "model": on every parameter
    every_steps: int
    start_step: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class Method:
    """A method ready for :func:`experiments.train_step.make_train_step`.

    All methods predict with the plain logits unless ``predict_transform`` is set, or
    ``fit_logit_offsets`` fits per-class offsets to add to them on the meta set.
    """

    transform: lpjax.LogitTransform  # the train transform; its state lives in the TrainState
    loss_fn: Callable  # (perturbed logits, labels, *, where) -> [batch] losses
    example_weights_fn: Callable | None = None  # (labels, step) -> [batch] loss weights
    predict_transform: lpjax.LogitTransform | None = None  # label-free test-time transform
    meta: MetaLearning | None = None  # Meta-LPL's meta step
    fit_logit_offsets: Callable | None = None  # (meta logits, meta labels) -> [C] offsets


class MethodInputs(NamedTuple):
    """What a method's builder may use besides its config blocks: facts of the run."""

    class_counts: np.ndarray  # training images per class (multi-label: positive images)
    steps_per_epoch: int  # optimizer steps in an epoch (LDAM-DRW's deferral)
    total_steps: int  # optimizer steps of the whole run (ISDA's ramp)
    feature_dim: int | None = None  # the model's penultimate width D (ISDA)
