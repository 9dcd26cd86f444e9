"""Meta-LPL and its two controls (docs/method.md, section 9): builders and protocol.

This module owns everything that is Meta-LPL's: the meta set held out of the data
(:func:`hold_out_meta_set`), the meta batches (:meth:`MetaProtocol.extra_inputs`), the
meta step (:meth:`MetaProtocol.make_step`), the window summaries of the meta loss and
the learned bounds ``theta`` (tracked over the run), and the control's fitted offsets.
The trainer's loop knows none of it (:class:`~experiments.methods.method.Method`).

All four hold out a balanced meta set of ``meta.per_class`` images per class
(:mod:`experiments.data.meta_set`):

* ``meta_lpl`` / ``la_meta_lpl``: the signed bounds of :func:`lpjax.lpl_meta_transform`
  learned on meta batches (alone, or after logit adjustment);
* ``la_meta_data``: logit adjustment trained on the training images plus the meta set
  (does the meta data alone explain a gain?);
* ``la_meta_offsets``: logit adjustment, then per-class offsets added to its logits at
  test time, fitted on the meta set (does a learned correction of the prior explain it?).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lpjax
from experiments import metrics, step
from experiments.data import meta_set, pipeline
from experiments.methods.method import Method, MethodInputs, StepContext

SCOPES = ("classifier", "model")

# Meta batches are drawn with their own seed stream, apart from the training batches'.
META_SEED_OFFSET = 1_000_003


def hold_out_meta_set(config, splits, seed: int, *, into_training: bool = False):
    """``splits`` with a balanced meta set of ``config.meta.per_class`` images per class
    held out (``splits.held_out``; :func:`experiments.data.meta_set.hold_out`).

    ``into_training`` adds it to the training split as well (the control
    ``la_meta_data``).

    Raises:
      ValueError: the meta set cannot be held out (streamed or multi-label data, a class
        with too few images).
    """
    train, validation, held_out = meta_set.hold_out(
        splits.train,
        splits.validation,
        per_class=config.meta.per_class,
        seed=seed,
        into_training=into_training,
    )
    return splits._replace(train=train, validation=validation, held_out=held_out)


def meta_batches_data(config, splits, seed: int):
    """``prepare_data`` of ``meta_lpl`` and ``la_meta_lpl``: the meta set, kept apart for
    meta batches, whose size is checked."""
    splits = hold_out_meta_set(config, splits, seed)
    batch_size, held_out = config.meta.batch_size, splits.held_out
    if batch_size > len(held_out):
        raise ValueError(
            f"config.meta.batch_size ({batch_size}) is larger than the meta set "
            f"({len(held_out)} images: config.meta.per_class = {config.meta.per_class} "
            "per class)."
        )
    if batch_size % jax.device_count():
        raise ValueError(
            f"config.meta.batch_size ({batch_size}) must be divisible by the number of "
            f"devices ({jax.device_count()})."
        )
    return splits


def meta_offsets_data(config, splits, seed: int):
    """``prepare_data`` of ``la_meta_offsets``: the meta set, kept apart to fit offsets."""
    return hold_out_meta_set(config, splits, seed)


def meta_training_data(config, splits, seed: int):
    """``prepare_data`` of ``la_meta_data``: the meta set added to the training split."""
    return hold_out_meta_set(config, splits, seed, into_training=True)


@dataclasses.dataclass(frozen=True)
class MetaProtocol:
    """Meta-LPL's protocol: its own step, its meta batches, its summaries.

    Every ``every_steps`` steps from ``start_step`` on, the step gets a meta batch of
    ``batch_size`` images of the meta set as its ``extras``; it first updates the
    :class:`lpjax.MetaLplState` inside the transform state by ``meta.update`` (a one-step
    look-ahead on the meta batch), then trains with the new signed bounds.
    """

    meta: lpjax.MetaLplTransform  # the Meta-LPL member of the method's transform
    scope: str  # "classifier": look ahead on the last layer only; "model": on every parameter
    every_steps: int
    start_step: int
    batch_size: int
    learning_rate: Callable  # the run's schedule: the look-ahead takes the step's rate

    def extra_inputs(self, splits, seed: int, step_index: int):
        """The meta batch ``(images, labels, learning rate)`` at ``step_index`` (this
        process's rows; the rate of the step, a scalar), or None.

        The k-th meta step reads the k-th batch of the meta set, a pure function of the
        seed and k, so a resumed run reads the same ones.
        """
        since = step_index - self.start_step
        if since < 0 or since % self.every_steps:
            return None
        batch = pipeline.train_batch(
            splits.held_out,
            since // self.every_steps,
            global_batch_size=self.batch_size,
            seed=seed + META_SEED_OFFSET,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        rate = np.asarray(jnp.asarray(self.learning_rate(step_index), jnp.float32))
        return batch["image"], batch["label"], rate

    def make_step(self, method: Method, context: StepContext):
        """``train_step(state, inputs, labels, mask, key, extras=None)``: with a meta batch
        as ``extras``, a meta step, then the plain step with the new bounds.

        The meta step: one SGD step of the step's learning rate on the training loss as a
        function of the signed bounds looks ahead, and the plain cross-entropy of the
        looked-ahead model on the meta batch is the meta loss (``scope``: the last layer
        only, on features under ``stop_gradient``, or the whole model; batch norm in
        training mode, its statistics discarded). Without ``extras`` it is the plain
        step. The two are two traces of one function. Adds the metrics ``theta`` ``[C]``
        (the signed bounds trained with) and ``meta_loss`` (NaN without a meta batch).
        """
        plain = step.train_step_fn(
            context.model,
            context.tx,
            method.transform,
            method.loss_fn,
            example_weights_fn=method.example_weights_fn,
        )

        def train_step(state, inputs, labels, mask, key, extras=None):
            meta_loss = jnp.full((), jnp.nan)
            if extras is not None:
                transform_state, meta_loss = self._meta_update(
                    method, context, state, inputs, labels, mask, key, extras
                )
                state = state.replace(transform_state=transform_state)
            theta = self.meta.theta(
                lpjax.get_transform_state(state.transform_state, lpjax.MetaLplState)
            )
            new_state, step_metrics = plain(state, inputs, labels, mask, key)
            return new_state, {**step_metrics, "theta": theta, "meta_loss": meta_loss}

        return step.jit_train_step(train_step, context.mesh, context.compiler_options)

    def _meta_update(self, method, context, state, inputs, labels, mask, key, extras):
        """``(transform state, meta loss)`` after one meta step (see :meth:`make_step`)."""
        model = context.model
        meta_inputs, meta_labels, learning_rate = extras
        step_key = jax.random.fold_in(key, state.step)
        weights = mask.astype(jnp.float32)
        if method.example_weights_fn is not None:
            weights = weights * method.example_weights_fn(labels, state.step)
        if self.scope == "classifier":
            # The last layer looks ahead on the current features (a dense layer: the models
            # of experiments/models.py pass "features" and its parameters as "classifier").
            _, _, extras_now = model.apply(state.params, state.model_state, inputs, step_key)
            _, _, meta_extras = model.apply(state.params, state.model_state, meta_inputs, step_key)
            features = jax.lax.stop_gradient(extras_now["features"])
            meta_features = jax.lax.stop_gradient(meta_extras["features"])
            params = extras_now["classifier"]

            def train_logits(classifier):
                return features @ classifier["kernel"] + classifier["bias"]

            def meta_logits(classifier):
                return meta_features @ classifier["kernel"] + classifier["bias"]

        else:
            params = state.params

            def train_logits(params):
                return model.apply(params, state.model_state, inputs, step_key)[0]

            def meta_logits(params):
                return model.apply(params, state.model_state, meta_inputs, step_key)[0]

        def train_loss(params, theta):
            perturbed, _ = method.transform.apply(
                train_logits(params), labels, state.transform_state, where=mask, theta=theta
            )
            return jnp.sum(weights * method.loss_fn(perturbed, labels, where=mask)) / weights.sum()

        def meta_loss(params):
            return optax.softmax_cross_entropy_with_integer_labels(
                meta_logits(params).astype(jnp.float32), meta_labels
            ).mean()

        meta_state, value = self.meta.update(
            lpjax.get_transform_state(state.transform_state, lpjax.MetaLplState),
            train_loss,
            meta_loss,
            params,
            learning_rate=learning_rate,
        )
        new = lpjax.set_transform_state(state.transform_state, lpjax.MetaLplState, meta_state)
        return new, value


def summarize_window(window: list[dict]) -> dict:
    """The plain window means, and the meta loss's over the steps that had a meta step
    (it is NaN by design on the others; NaN if the window had none)."""
    plain = [{k: v for k, v in m.items() if k != "meta_loss"} for m in window]
    summary = metrics.summarize_window(plain)
    values = np.array([np.asarray(m["meta_loss"], np.float64) for m in window])
    summary["train_meta_loss"] = float(np.nanmean(values) if np.isfinite(values).any() else np.nan)
    return summary


def _meta_learning(config, inputs: MethodInputs, *, after_la: bool) -> Method:
    meta_config, lpl = config.meta, config.lpl
    meta = lpjax.lpl_meta_transform(
        len(inputs.class_counts),
        max_epsilon=meta_config.max_epsilon,
        step_size=lpl.step_size,
        meta_optimizer=optax.adam(meta_config.learning_rate),
        normalize=lpl.normalize,
    )
    transform = meta
    if after_la:
        la = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
        transform = lpjax.chain(la, meta)
    protocol = MetaProtocol(
        meta=meta,
        scope=meta_config.scope,
        every_steps=meta_config.every_steps,
        start_step=meta_config.start_epoch * inputs.steps_per_epoch,
        batch_size=meta_config.batch_size,
        learning_rate=inputs.learning_rate,
    )
    return Method(
        transform,
        lpjax.softmax_cross_entropy_with_integer_labels,
        make_step=protocol.make_step,
        extra_inputs=protocol.extra_inputs,
        summarize_window=summarize_window,
        tracked=("theta",),
    )


def meta_lpl(config, inputs: MethodInputs) -> Method:
    return _meta_learning(config, inputs, after_la=False)


def la_meta_lpl(config, inputs: MethodInputs) -> Method:
    return _meta_learning(config, inputs, after_la=True)


def la_meta_data(config, inputs: MethodInputs) -> Method:
    # The meta set is part of the training split (and of its class counts).
    transform = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
    return Method(transform, lpjax.softmax_cross_entropy_with_integer_labels)


def _offsets_on_meta_set(predictions, splits):
    return fit_logit_offsets(*predictions(splits.held_out))


def la_meta_offsets(config, inputs: MethodInputs) -> Method:
    transform = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
    return Method(
        transform,
        lpjax.softmax_cross_entropy_with_integer_labels,
        logit_offsets=_offsets_on_meta_set,
    )


def fit_logit_offsets(logits: np.ndarray, labels: np.ndarray, *, num_steps: int = 200):
    r"""Per-class offsets :math:`b` minimising the mean cross-entropy of ``logits + b``.

    .. math::
      b = \arg\min_b \frac{1}{M} \sum_i -\log \mathrm{softmax}(u_i + b)_{y_i}

    a convex problem in :math:`b` (C unknowns), solved by L-BFGS from :math:`b = 0`; at the
    optimum the mean predicted probability of every class equals its frequency in
    ``labels``. Only differences of offsets matter; the result has mean 0.

    Args:
      logits: float ``[M, C]`` logits of the meta set.
      labels: int ``[M]`` labels.
      num_steps: L-BFGS iterations.

    Returns:
      float32 ``[C]`` offsets.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)

    def loss(offsets):
        return optax.softmax_cross_entropy_with_integer_labels(logits + offsets, labels).mean()

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        offsets, state = carry
        value, grad = value_and_grad(offsets, state=state)
        updates, state = solver.update(grad, state, offsets, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(offsets, updates), state), None

    offsets = jnp.zeros(logits.shape[1], jnp.float32)
    (offsets, _), _ = jax.lax.scan(step, (offsets, solver.init(offsets)), None, length=num_steps)
    return np.asarray(offsets - offsets.mean())
