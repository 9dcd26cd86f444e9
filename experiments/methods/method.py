"""What a method is to the trainer (:class:`Method`) and what its builder gets.

A method is its logit transform and loss, and it owns its protocol: the trainer's loop
calls every hook below, each with a default that is the plain protocol, and never asks
which method it runs. A method whose protocol differs (Meta-LPL's meta step on a held-out
set, :mod:`experiments.methods.meta`) brings its own step, inputs and summaries here,
as big_vision's ``trainers/proj/*`` bring their own trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import lpjax
from experiments import metrics, step


class StepContext(NamedTuple):
    """What a method's ``make_step`` gets from the run, besides the method itself."""

    model: step.ModelFns  # the model as the step sees it
    tx: Any  # the optax optimizer
    mesh: Any  # the data mesh (axis "data")
    compiler_options: dict | None  # XLA options of the step's executable


def plain_step(method: Method, context: StepContext) -> Callable:
    """The plain train step (:func:`experiments.step.make_train_step`): ``make_step``'s default."""
    return step.make_train_step(
        context.model,
        context.tx,
        method.transform,
        method.loss_fn,
        mesh=context.mesh,
        example_weights_fn=method.example_weights_fn,
        compiler_options=context.compiler_options,
        reference_transform=method.reference_transform,
        deferred=method.deferred,
    )


def no_extra_inputs(splits, seed: int, step_index: int) -> None:
    """``extra_inputs``' default: a step needs nothing beyond the training batch."""
    del splits, seed, step_index


def no_logit_offsets(predictions: Callable, splits) -> float:
    """``logit_offsets``' default: predict with the model's logits as they are."""
    del predictions, splits
    return 0.0


@dataclasses.dataclass(frozen=True)
class Method:
    """A method as the trainer runs it: a transform, a loss, and its protocol's hooks.

    All methods predict with the plain logits unless ``predict_transform`` is set or
    ``logit_offsets`` returns offsets to add to them.

    Attributes:
      transform: the train transform; its state lives in the ``TrainState``.
      loss_fn: ``(perturbed logits, labels, *, where) -> [batch]`` losses.
      example_weights_fn: optional ``(labels, step) -> [batch]`` loss weights.
      predict_transform: optional label-free test-time transform.
      make_step: ``(method, StepContext) -> train_step``, where ``train_step(state,
        inputs, labels, mask, key, extras=None) -> (state, metrics)`` is jitted;
        default :func:`plain_step`.
      extra_inputs: ``(splits, seed, step) -> pytree or None``: what the step gets as
        ``extras`` at ``step`` beyond the training batch (a function of the seed and the
        step, so a resumed run gets the same ones): arrays of this process's rows, which
        the loop shards along ``"data"`` like the batch, and scalars, replicated
        (:func:`experiments.step.global_batch`). None: the step runs without.
      summarize_window: ``(window of step metrics) -> {"train_<name>": value}``;
        default :func:`experiments.metrics.summarize_window`.
      tracked: names of the per-class metrics whose every window's mean is kept in the
        run's history and written to ``results.json`` (the last as ``<name>``, all as
        ``<name>_history``) and plotted.
      logit_offsets: ``(predictions, splits) -> offsets`` added to every split's logits
        at evaluation, ``predictions(split) -> (logits, labels)``; default none.
      reference_transform: optional stateless transform giving the logits the method's
        last perturbation starts from (LA + LPL: the LA-adjusted logits). The plain step
        then logs the perturbation's size, the reference margin and the predictions it
        flips (:func:`experiments.step.perturbation_metrics`), kept per logging window in
        ``results.json`` (``perturbation_history``). It changes no training signal.
      deferred: optional ``(before, start_step)``: the plain step trains on the stateless
        ``before`` transform's logits until ``start_step``, on ``transform``'s from it
        (a DRW-style deferred start; ``transform`` must be stateless too).
    """

    transform: lpjax.LogitTransform
    loss_fn: Callable
    example_weights_fn: Callable | None = None
    predict_transform: lpjax.LogitTransform | None = None
    make_step: Callable[[Method, StepContext], Callable] = plain_step
    extra_inputs: Callable[[Any, int, int], Any] = no_extra_inputs
    summarize_window: Callable[[list[dict]], dict] = metrics.summarize_window
    tracked: tuple[str, ...] = ()
    logit_offsets: Callable[[Callable, Any], Any] = no_logit_offsets
    reference_transform: lpjax.LogitTransform | None = None
    deferred: tuple[lpjax.LogitTransform, int] | None = None


class MethodInputs(NamedTuple):
    """What a method's builder may use besides its config blocks: facts of the run."""

    class_counts: np.ndarray  # training images per class (multi-label: positive images)
    steps_per_epoch: int  # optimizer steps in an epoch (LDAM-DRW's deferral)
    total_steps: int  # optimizer steps of the whole run (ISDA's ramp)
    feature_dim: int | None = None  # the model's penultimate width D (ISDA)
    learning_rate: Callable | None = None  # the run's schedule, step -> rate (look-aheads)
