"""What a method is to the trainer (:class:`Method`) and what its builder gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import lpjax


@dataclasses.dataclass(frozen=True)
class Method:
    """A method ready for :func:`experiments.train_step.make_train_step`.

    All methods predict with the plain logits unless ``predict_transform`` is set.
    """

    transform: lpjax.LogitTransform  # the train transform; its state lives in the TrainState
    loss_fn: Callable  # (perturbed logits, labels, *, where) -> [batch] losses
    example_weights_fn: Callable | None = None  # (labels, step) -> [batch] loss weights
    predict_transform: lpjax.LogitTransform | None = None  # label-free test-time transform


class MethodInputs(NamedTuple):
    """What a method's builder may use besides its config blocks: facts of the run."""

    class_counts: np.ndarray  # training images per class (multi-label: positive images)
    steps_per_epoch: int  # optimizer steps in an epoch (LDAM-DRW's deferral)
    total_steps: int  # optimizer steps of the whole run (ISDA's ramp)
    feature_dim: int | None = None  # the model's penultimate width D (ISDA)
