"""The trainer's train and predict steps, written once in the global view.

As big_vision's ``train.py``: the step is ``jax.jit`` over a batch sharded along the
``"data"`` axis of a one-dimensional mesh (``NamedSharding(mesh, P("data"))``), the
:class:`TrainState` replicated and donated. The code is that of one device on the whole
global batch -- the loss is the plain (weighted) mean over the global batch, one
``jax.value_and_grad`` gives the gradients -- and XLA inserts the cross-device
reductions (batch norm's batch mean, LPL's class statistics, the gradient sum). So the
same step runs on one device, eight, or a multi-host slice, with one gradient
convention and no ``axis_name`` anywhere.

The step sees a model only through :class:`ModelFns`, three pure functions; it assumes
no batch keys and no layer names (:mod:`experiments.models` builds them for Flax linen
and nnx models; for anything else write the three functions by hand). As in flax's
imagenet example, the trainer owns its ``TrainState`` and step: the ``lpjax`` library
ships losses and transforms only. A method with its own protocol wraps
:func:`train_step_fn` in its own step (:mod:`experiments.methods`); this module knows
none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

__all__ = [
    "DATA_AXIS",
    "ModelFns",
    "TrainState",
    "create_train_state",
    "global_batch",
    "jit_train_step",
    "make_data_mesh",
    "make_predict_step",
    "make_train_step",
    "perturbation_metrics",
    "train_step_fn",
]

DATA_AXIS = "data"

# loss_fn(perturbed_logits, labels, *, where) -> per-example loss [batch]
PerExampleLoss = Callable[..., jax.Array]
# example_weights_fn(labels, step) -> [batch] loss weights (e.g. LDAM's DRW stage).
ExampleWeights = Callable[[jax.Array, jax.Array], jax.Array]


class ModelFns(NamedTuple):
    """A model as the train step sees it: three pure functions.

    Attributes:
      init: ``init(key) -> (params, model_state)``; ``model_state`` is everything
        else the model carries (batch-norm statistics; ``{}`` if nothing).
      apply: ``apply(params, model_state, inputs, key) -> (logits, new_model_state,
        transform_extras)`` in training mode on the global batch; ``key`` is the step's
        PRNG key (dropout), ``transform_extras`` a dict of keyword arguments for the logit
        transform (e.g. ISDA's ``features`` and ``classifier``; ``{}`` if none). Batch
        norm needs no ``axis_name``: its batch mean is over the global batch.
      predict: ``predict(params, model_state, inputs) -> logits`` in inference mode.
    """

    init: Callable[[jax.Array], tuple[Any, Any]]
    apply: Callable[..., tuple[jax.Array, Any, dict]]
    predict: Callable[..., jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """Everything a training run carries from step to step (a pytree, checkpointed whole).

    Attributes:
      step: int32 scalar, the number of optimizer steps taken.
      params: the model's parameters.
      model_state: the model's other state, e.g. batch-norm statistics (``{}`` if none).
      opt_state: the Optax optimizer state.
      transform_state: the logit transform's state (e.g. ISDA's class statistics).
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    transform_state: Any


def make_data_mesh(devices=None) -> Mesh:
    """A one-dimensional mesh over all (or the given) devices, its axis named ``"data"``.

    The axis is ``Auto``: shardings inside the step are left to XLA (the global view).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )


def global_batch(mesh: Mesh, local_batch):
    """Assembles this process's rows of a batch (any pytree of arrays) into global arrays
    sharded along ``"data"``; scalars (0-d leaves, e.g. a step's learning rate, the same
    on every process) become replicated arrays.

    Each process passes only its own rows (``global_batch_size / process_count``);
    ``jax.make_array_from_process_local_data`` makes one global array per leaf.
    """
    sharded, replicated = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())

    def to_global(value):
        sharding = replicated if np.ndim(value) == 0 else sharded
        return jax.make_array_from_process_local_data(sharding, np.asarray(value))

    return jax.tree.map(to_global, local_batch)


def create_train_state(
    model: ModelFns,
    tx: optax.GradientTransformation,
    transform: lpjax.LogitTransform,
    *,
    key: jax.Array,
    mesh: Mesh,
) -> TrainState:
    """Initialises a replicated :class:`TrainState` directly on the mesh's devices.

    Shapes are worked out with ``jax.eval_shape`` first; nothing is allocated on the
    host.
    """

    def init():
        params, model_state = model.init(key)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=tx.init(params),
            transform_state=transform.init(),
        )

    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(init)
    shardings = jax.tree.map(lambda _: replicated, abstract)
    return jax.jit(init, out_shardings=shardings)()


def train_step_fn(
    model: ModelFns,
    tx: optax.GradientTransformation,
    transform: lpjax.LogitTransform,
    loss_fn: PerExampleLoss,
    *,
    example_weights_fn: ExampleWeights | None = None,
    reference_transform: lpjax.LogitTransform | None = None,
    deferred: tuple[lpjax.LogitTransform, int] | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
    """The plain step, not jitted: ``step(state, inputs, labels, mask, key) -> (state,
    metrics)`` (see :func:`make_train_step`); a method's own step may wrap it.

    ``reference_transform`` (stateless, optional) gives the logits the method's last
    perturbation starts from (LA + LPL: the LA-adjusted logits); the step then also logs
    what the perturbation does to them (:func:`perturbation_metrics`). ``deferred``
    (optional ``(before, start_step)``, both transforms stateless) trains on ``before``'s
    logits until ``start_step`` and on ``transform``'s from it.
    """

    def train_step(state: TrainState, inputs, labels, mask, key):
        step_key = jax.random.fold_in(key, state.step)
        weights = mask.astype(jnp.float32)
        if example_weights_fn is not None:
            weights = weights * example_weights_fn(labels, state.step)
        total_weight = weights.sum()

        def objective(params):
            logits, model_state, transform_extras = model.apply(
                params, state.model_state, inputs, step_key
            )
            perturbed, new_transform_state = transform.apply(
                logits, labels, state.transform_state, where=mask, **transform_extras
            )
            if deferred is not None:
                before, start_step = deferred
                early, _ = before.apply(logits, labels, before.init(), where=mask)
                perturbed = jnp.where(state.step >= start_step, perturbed, early)
            loss = jnp.sum(weights * loss_fn(perturbed, labels, where=mask)) / total_weight
            return loss, (logits, perturbed, new_transform_state, model_state)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (loss, aux), grads = grad_fn(state.params)
        logits, perturbed, transform_state, model_state = aux
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            model_state=model_state,
            opt_state=opt_state,
            transform_state=transform_state,
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            **_train_metrics(logits, perturbed, labels, mask),
        }
        if reference_transform is not None:
            reference, _ = reference_transform.apply(
                logits, labels, reference_transform.init(), where=mask
            )
            metrics.update(perturbation_metrics(reference, perturbed, labels, mask))
        return new_state, metrics

    return train_step


def jit_train_step(
    train_step: Callable, mesh: Mesh, compiler_options: Mapping[str, Any] | None = None
) -> Callable[..., tuple[TrainState, dict]]:
    """``jax.jit`` of a train step: the state donated, the state and metrics replicated.

    The step is traced and run inside ``jax.set_mesh(mesh)``, so that LPL's solver sees
    the devices that hold the batch and works class-sharded (one all-to-all of the
    logits, then a ``[2, B]`` all-reduce per inner step, instead of a ``[B, C]`` one;
    docs/library.md, "What crosses devices").
    """
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(
        train_step,
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
        compiler_options=compiler_options,
    )
    return OnMesh(jitted, mesh)


class OnMesh:
    """A jitted function traced and run inside ``jax.set_mesh(mesh)``.

    Calls and ``lower`` enter the mesh; every other attribute is the jitted function's.
    """

    def __init__(self, jitted, mesh: Mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.jitted.lower(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.jitted, name)


def make_train_step(
    model: ModelFns,
    tx: optax.GradientTransformation,
    transform: lpjax.LogitTransform,
    loss_fn: PerExampleLoss,
    *,
    mesh: Mesh,
    example_weights_fn: ExampleWeights | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    reference_transform: lpjax.LogitTransform | None = None,
    deferred: tuple[lpjax.LogitTransform, int] | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
    """Builds the plain ``train_step(state, inputs, labels, mask, key, extras=None) ->
    (state, metrics)``.

    One function of the global batch, jitted with the state donated and replicated
    (``out_shardings``): ``model.apply`` (batch norm over the global batch),
    ``transform.apply`` with the model's ``transform_extras`` (LPL's class statistics
    over the global batch), ``loss_fn`` on the perturbed logits, the weighted mean loss
    over the global batch, its gradient from one ``jax.value_and_grad``, one Optax
    update. ``inputs`` (any pytree of arrays), ``labels`` (``[batch]`` integers or
    ``[batch, C]`` multi-hot) and ``mask`` (boolean ``[batch]``, False on padding rows)
    are sharded along ``"data"`` (see :func:`global_batch`); XLA inserts the
    cross-device reductions. The dropout key is ``fold_in(key, step)``, one per step,
    and the masks are drawn for the global batch: the result does not depend on how
    many devices share the batch, dropout included (float rounding aside). ``extras``
    (a method's extra inputs) is ignored: the plain step needs none.

    Args:
      model: the model's :class:`ModelFns`.
      tx: the Optax optimizer (weight decay included in it, applied once).
      transform: the logit transform (``lpjax.identity()`` for none); its state is
        ``state.transform_state`` (see :func:`create_train_state`).
      loss_fn: ``loss_fn(perturbed_logits, labels, *, where) -> [batch]``, e.g.
        :func:`lpjax.softmax_cross_entropy_with_integer_labels`.
      mesh: a mesh with a ``"data"`` axis (:func:`make_data_mesh`).
      example_weights_fn: optional ``(labels, step) -> [batch]`` loss weights.
      compiler_options: XLA options for this executable only (``jax.jit``'s
        ``compiler_options``).
      reference_transform: optional stateless transform giving the logits the last
        perturbation starts from; adds :func:`perturbation_metrics` to ``metrics``.
      deferred: optional ``(before, start_step)``: ``before``'s logits until ``start_step``.

    Returns:
      The jitted step. ``metrics`` (replicated) holds ``loss`` (the objective: the
      weighted mean of ``loss_fn``), ``grad_norm`` (global L2 norm of the gradients),
      ``plain_loss`` and ``accuracy`` on the plain logits, and for single-label data
      ``relative_loss_variation`` ``[C]`` (NaN for classes absent from the batch).
    """
    plain = train_step_fn(
        model,
        tx,
        transform,
        loss_fn,
        example_weights_fn=example_weights_fn,
        reference_transform=reference_transform,
        deferred=deferred,
    )

    def train_step(state: TrainState, inputs, labels, mask, key, extras=None):
        del extras
        return plain(state, inputs, labels, mask, key)

    return jit_train_step(train_step, mesh, compiler_options)


def perturbation_metrics(reference, perturbed, labels, mask) -> dict:
    """What a perturbation ``delta = perturbed - reference`` does to single-label logits.

    Over the real rows of the batch: ``delta_l1``, the mean per-row L1 norm of ``delta``
    (logits moved per sample); ``reference_margin``, the median of ``|z_y - max_{j != y}
    z_j|`` of the reference logits (how far a row is from changing its prediction);
    ``flips``, the number of rows whose arg-max differs between the two (per batch).
    """
    delta = jax.lax.stop_gradient(perturbed - reference)
    reference = jax.lax.stop_gradient(reference)
    num_classes = reference.shape[-1]
    target = jnp.take_along_axis(reference, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, reference)
    margin = jnp.abs(target - others.max(-1))
    flipped = jnp.argmax(perturbed, -1) != jnp.argmax(reference, -1)
    real = mask.sum()
    # Median over the real rows: padding rows sort last (+inf) and are not counted.
    sorted_margin = jnp.sort(jnp.where(mask, margin, jnp.inf))
    lower = sorted_margin[jnp.maximum((real - 1) // 2, 0)]
    upper = sorted_margin[jnp.maximum(real // 2, 0)]
    return {
        "delta_l1": jnp.sum(jnp.where(mask, jnp.abs(delta).sum(-1), 0)) / real,
        "reference_margin": (lower + upper) / 2,
        "flips": jnp.sum(jnp.where(mask, flipped, False)).astype(jnp.float32),
    }


def _train_metrics(logits, perturbed, labels, mask) -> dict:
    """Means over the real rows of the global batch, on the plain logits."""
    if labels.ndim == 2:  # multi-label: per-class binary cross-entropy
        plain = optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1)
        correct = jnp.mean((logits > 0) == (labels > 0), axis=-1)
        extra = {}
    else:
        plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = jnp.argmax(logits, -1) == labels
        extra = {
            "relative_loss_variation": lpjax.relative_loss_variation(
                logits, perturbed, labels, where=mask
            )
        }

    def mean(x):
        return jnp.sum(jnp.where(mask, x, 0)) / mask.sum()

    return {
        "plain_loss": mean(plain),
        "accuracy": mean(correct.astype(jnp.float32)),
        **extra,
    }


def make_predict_step(
    model: ModelFns,
    *,
    mesh: Mesh,
    logit_transform: lpjax.LogitTransform | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> Callable[[TrainState, Any], jax.Array]:
    """Builds ``predict(state, inputs) -> logits`` (inference mode), sharded along ``"data"``.

    ``logit_transform`` is a label-free test-time transform, e.g.
    ``lpjax.posthoc_logit_adjustment_transform(counts)``; by default the plain
    logits are returned, as every method of the paper predicts with them.
    """

    def predict(state: TrainState, inputs):
        logits = model.predict(state.params, state.model_state, inputs)
        if logit_transform is not None:
            logits, _ = logit_transform.apply(logits, None, logit_transform.init())
        return logits

    return jax.jit(
        predict,
        out_shardings=NamedSharding(mesh, P(DATA_AXIS)),
        compiler_options=compiler_options,
    )
