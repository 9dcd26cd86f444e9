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
no batch keys and no layer names. :func:`linen_model_fns` builds them for a Flax linen
module, :func:`nnx_model_fns` for a Flax nnx model; for anything else write the three
functions by hand. As in flax's imagenet example, the trainer owns its ``TrainState``
and step: the ``lpjax`` library ships losses and transforms only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

if TYPE_CHECKING:
    from experiments.methods import MetaLearning

__all__ = [
    "DATA_AXIS",
    "ModelFns",
    "TrainState",
    "create_train_state",
    "global_batch",
    "linen_model_fns",
    "make_data_mesh",
    "make_predict_step",
    "make_train_step",
    "nnx_model_fns",
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


def linen_model_fns(module: nn.Module, *, input_shape: tuple[int, ...]) -> ModelFns:
    """:class:`ModelFns` of a Flax linen module called as ``module(x, train=...)``.

    Every variable collection other than ``"params"`` is the model state (mutable in
    training); the ``"dropout"`` rng gets the step's key. The transform gets no extras.
    """

    def init(key):
        variables = module.init(
            {"params": key, "dropout": key}, jnp.zeros(input_shape, jnp.float32), train=False
        )
        params = variables.pop("params")
        return params, dict(variables)

    def apply(params, model_state, inputs, key):
        logits, updates = module.apply(
            {"params": params, **model_state},
            inputs,
            train=True,
            mutable=list(model_state),
            rngs={"dropout": key},
        )
        return logits, dict(updates), {}

    def predict(params, model_state, inputs):
        return module.apply({"params": params, **model_state}, inputs, train=False)

    return ModelFns(init, apply, predict)


def nnx_model_fns(model) -> ModelFns:
    """:class:`ModelFns` of a Flax nnx model called as ``model(x)``.

    The parameters are the model's ``nnx.Param`` variables and the model state all its
    other variables (batch-norm statistics, RNG counters), from ``nnx.split``, kept as
    plain nested dicts of arrays (``nnx.to_pure_dict``); the functions ``nnx.merge``
    them and switch ``model.train()`` / ``model.eval()``. nnx
    models are initialised when constructed, so ``init`` returns the model's current
    variables (its key is unused), and dropout draws from the model's own ``nnx.Rngs``,
    carried in the model state (the step's key is unused). Build ``nnx.BatchNorm``
    without ``axis_name``: in the global view its batch mean is over the global batch.
    """
    from flax import nnx

    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

    def as_state(template, pure):
        # The train state holds plain nested dicts of arrays (optax- and orbax-friendly);
        # fresh nnx Variables are made from them inside each trace.
        state = jax.tree.map(lambda x: x, template)
        nnx.replace_by_pure_dict(state, pure)
        return state

    def merge(pure_params, pure_model_state):
        return nnx.merge(
            graphdef, as_state(params, pure_params), as_state(model_state, pure_model_state)
        )

    def init(key):
        del key
        return nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)

    def apply(params, model_state, inputs, key):
        del key
        module = merge(params, model_state)
        module.train()
        logits = module(inputs)
        _, _, new_model_state = nnx.split(module, nnx.Param, ...)
        return logits, nnx.to_pure_dict(new_model_state), {}

    def predict(params, model_state, inputs):
        module = merge(params, model_state)
        module.eval()
        return module(inputs)

    return ModelFns(init, apply, predict)


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
    sharded along ``"data"``.

    Each process passes only its own rows (``global_batch_size / process_count``);
    ``jax.make_array_from_process_local_data`` makes one global array per leaf.
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.tree.map(
        lambda value: jax.make_array_from_process_local_data(sharding, value), local_batch
    )


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


def make_train_step(
    model: ModelFns,
    tx: optax.GradientTransformation,
    transform: lpjax.LogitTransform,
    loss_fn: PerExampleLoss,
    *,
    mesh: Mesh,
    example_weights_fn: ExampleWeights | None = None,
    meta: MetaLearning | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
    """Builds ``train_step(state, inputs, labels, mask, key, meta_batch=None) -> (state,
    metrics)``.

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
    many devices share the batch, dropout included (float rounding aside).

    Args:
      model: the model's :class:`ModelFns`.
      tx: the Optax optimizer (weight decay included in it, applied once).
      transform: the logit transform (``lpjax.identity()`` for none); its state is
        ``state.transform_state`` (see :func:`create_train_state`).
      loss_fn: ``loss_fn(perturbed_logits, labels, *, where) -> [batch]``, e.g.
        :func:`lpjax.softmax_cross_entropy_with_integer_labels`.
      mesh: a mesh with a ``"data"`` axis (:func:`make_data_mesh`).
      example_weights_fn: optional ``(labels, step) -> [batch]`` loss weights.
      meta: Meta-LPL's meta step (:class:`experiments.methods.MetaLearning`). A step
        given ``meta_batch = (meta_inputs, meta_labels, learning_rate)`` first updates
        the transform state's :class:`lpjax.MetaLplState` by ``meta.transform.update``:
        one SGD step of ``learning_rate`` on the training loss as a function of the
        signed bounds looks ahead, and the plain cross-entropy of the looked-ahead
        model on the meta batch is the meta loss (``meta.scope``: the last layer only,
        on features under ``stop_gradient``, or the whole model; batch norm in training
        mode, its statistics discarded). Then it trains with the new bounds. Without
        ``meta_batch`` it is the plain step. The two are two traces of one function.
      compiler_options: XLA options for this executable only (``jax.jit``'s
        ``compiler_options``).

    Returns:
      The jitted step. ``metrics`` (replicated) holds ``loss`` (the objective: the
      weighted mean of ``loss_fn``), ``grad_norm`` (global L2 norm of the gradients),
      ``plain_loss`` and ``accuracy`` on the plain logits, and for single-label data
      ``relative_loss_variation`` ``[C]`` (NaN for classes absent from the batch); with
      ``meta``, ``theta`` ``[C]`` (the signed bounds trained with) and ``meta_loss``
      (NaN on steps without a meta batch).
    """

    def train_step(state: TrainState, inputs, labels, mask, key, meta_batch=None):
        step_key = jax.random.fold_in(key, state.step)
        weights = mask.astype(jnp.float32)
        if example_weights_fn is not None:
            weights = weights * example_weights_fn(labels, state.step)
        total_weight = weights.sum()
        transform_state = state.transform_state
        meta_metrics = {}
        if meta is not None:
            meta_loss = jnp.full((), jnp.nan)
            if meta_batch is not None:
                transform_state, meta_loss = _meta_update(
                    meta, model, loss_fn, state, inputs, labels, mask, weights, step_key, meta_batch
                )
            theta = meta.transform.theta(meta.get_state(transform_state))
            meta_metrics = {"theta": theta, "meta_loss": meta_loss}

        def objective(params):
            logits, model_state, transform_extras = model.apply(
                params, state.model_state, inputs, step_key
            )
            perturbed, new_transform_state = transform.apply(
                logits, labels, transform_state, where=mask, **transform_extras
            )
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
            **meta_metrics,
        }
        return new_state, metrics

    replicated = NamedSharding(mesh, P())
    return jax.jit(
        train_step,
        donate_argnums=(0,),
        out_shardings=(replicated, replicated),
        compiler_options=compiler_options,
    )


def _meta_update(meta, model, loss_fn, state, inputs, labels, mask, weights, key, meta_batch):
    """``(transform state, meta loss)`` after one meta step of Meta-LPL (see
    :func:`make_train_step`)."""
    meta_inputs, meta_labels, learning_rate = meta_batch
    if meta.scope == "classifier":
        # The last layer looks ahead on the current features (a dense layer: the models of
        # experiments/models.py pass its parameters to the transform as "classifier").
        _, _, extras = model.apply(state.params, state.model_state, inputs, key)
        _, _, meta_extras = model.apply(state.params, state.model_state, meta_inputs, key)
        features = jax.lax.stop_gradient(extras["features"])
        meta_features = jax.lax.stop_gradient(meta_extras["features"])
        params = extras["classifier"]

        def train_logits(classifier):
            return features @ classifier["kernel"] + classifier["bias"]

        def meta_logits(classifier):
            return meta_features @ classifier["kernel"] + classifier["bias"]

    else:
        params = state.params

        def train_logits(params):
            return model.apply(params, state.model_state, inputs, key)[0]

        def meta_logits(params):
            return model.apply(params, state.model_state, meta_inputs, key)[0]

    def train_loss(params, theta):
        perturbed = meta.perturb(train_logits(params), labels, theta, mask)
        return jnp.sum(weights * loss_fn(perturbed, labels, where=mask)) / weights.sum()

    def meta_loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(
            meta_logits(params).astype(jnp.float32), meta_labels
        ).mean()

    meta_state, value = meta.transform.update(
        meta.get_state(state.transform_state),
        train_loss,
        meta_loss,
        params,
        learning_rate=learning_rate,
    )
    return meta.set_state(state.transform_state, meta_state), value


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
