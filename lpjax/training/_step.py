"""A data-parallel train step: any model + lpjax loss + Optax, under ``jax.shard_map``.

The step sees a model only through :class:`ModelFns`, three pure functions; it assumes
no batch keys and no layer names. :func:`linen_model_fns` builds them for a Flax linen
module, :func:`nnx_model_fns` for a Flax nnx model; for anything else write the three
functions by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

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
        transform_extras)`` in training mode; ``key`` is this device's and step's PRNG
        key (dropout), ``transform_extras`` a dict of keyword arguments for the logit
        transform (e.g. ISDA's ``features`` and ``classifier``; ``{}`` if none). Inside the step it
        runs under ``shard_map``: cross-device batch norm uses ``axis_name="data"``.
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
    carried in the model state (the step's key is unused, and every device draws the same
    masks). Cross-device batch norm: build ``nnx.BatchNorm(..., axis_name="data")``.
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
    """A one-dimensional mesh over all (or the given) devices, its axis named ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(devices, (DATA_AXIS,))


def global_batch(mesh: Mesh, local_batch):
    """Assembles this process's rows of a batch (any pytree of arrays) into global arrays
    split over ``"data"``.

    Each process passes only its own slice (``global_batch_size / process_count``
    rows); the result is one global array per leaf, sharded along the batch.
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
    """Initialises a replicated :class:`TrainState` directly on the mesh's devices."""

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
    compiler_options: Mapping[str, Any] | None = None,
) -> Callable[..., tuple[TrainState, dict]]:
    """Builds ``train_step(state, inputs, labels, mask, key) -> (state, metrics)``, jitted
    over ``mesh``.

    Per step: ``model.apply`` (batch norm over the global batch when the model
    reduces over ``"data"``), ``transform.apply`` with ``axis_name="data"`` (so LPL's
    class statistics are global) and the model's ``transform_extras``, ``loss_fn`` on
    the perturbed logits, the weighted mean loss over the global batch, gradients
    summed over devices, one Optax update. The state is
    replicated and donated; ``inputs`` (any pytree of arrays), ``labels`` (``[batch]``
    integers or ``[batch, C]`` multi-hot) and ``mask`` (boolean ``[batch]``, False on
    padding rows) are split along ``"data"`` (see :func:`global_batch`). The result does
    not depend on how many devices share the batch (dropout masks aside: each device
    draws its own).

    Args:
      model: the model's :class:`ModelFns`.
      tx: the Optax optimizer (weight decay included in it, applied once).
      transform: the logit transform (``lpjax.identity()`` for none); its state is
        ``state.transform_state`` (see :func:`create_train_state`).
      loss_fn: ``loss_fn(perturbed_logits, labels, *, where) -> [batch]``, e.g.
        :func:`lpjax.softmax_cross_entropy_with_integer_labels`.
      mesh: a mesh with a ``"data"`` axis.
      example_weights_fn: optional ``(labels, step) -> [batch]`` loss weights.
      compiler_options: XLA options for this executable only (``jax.jit``'s
        ``compiler_options``).

    Returns:
      The jitted step. ``metrics`` holds the global ``loss`` (the objective:
      weighted mean of ``loss_fn``), ``grad_norm`` (global L2 norm of the summed
      gradients), ``plain_loss`` and ``accuracy`` on the plain logits,
      and ``relative_loss_variation`` ``[C]`` (NaN for classes absent from the
      batch) for single-label data.
    """

    def local_step(state: TrainState, inputs, labels, mask, key):
        step_key = jax.random.fold_in(
            jax.random.fold_in(key, state.step), lax.axis_index(DATA_AXIS)
        )
        weights = mask.astype(jnp.float32)
        if example_weights_fn is not None:
            weights = weights * example_weights_fn(labels, state.step)
        total_weight = lax.psum(weights.sum(), DATA_AXIS)

        def objective(params):
            logits, model_state, transform_extras = model.apply(
                params, state.model_state, inputs, step_key
            )
            perturbed, transform_state = transform.apply(
                logits,
                labels,
                state.transform_state,
                where=mask,
                axis_name=DATA_AXIS,
                **transform_extras,
            )
            loss = loss_fn(perturbed, labels, where=mask)
            local_loss = jnp.sum(weights * loss) / total_weight
            return local_loss, (logits, perturbed, transform_state, model_state)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (local_loss, aux), grads = grad_fn(state.params)
        logits, perturbed, transform_state, model_state = aux
        grads = lax.psum(grads, DATA_AXIS)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, param_updates),
            model_state=model_state,
            opt_state=opt_state,
            transform_state=transform_state,
        )
        metrics = {
            "loss": lax.psum(local_loss, DATA_AXIS),
            "grad_norm": optax.global_norm(grads),
            **_train_metrics(logits, perturbed, labels, mask),
        }
        return new_state, metrics

    replicated, split = P(), P(DATA_AXIS)
    # pmap-style semantics: each device differentiates its share of the loss
    # and the gradients are summed explicitly (tested equal to one device).
    sharded_step = jax.shard_map(
        local_step,
        mesh=mesh,
        in_specs=(replicated, split, split, split, replicated),
        out_specs=(replicated, replicated),
        check_vma=False,
    )
    return jax.jit(sharded_step, donate_argnums=0, compiler_options=compiler_options)


def _train_metrics(logits, perturbed, labels, mask) -> dict:
    """Global metrics of the plain logits (and the loss variation), identical on every device."""
    count = lax.psum(mask.sum(), DATA_AXIS)
    if labels.ndim == 2:  # multi-label: per-class binary cross-entropy
        plain = optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1)
        correct = jnp.mean((logits > 0) == (labels > 0), axis=-1)
        extra = {}
    else:
        plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = jnp.argmax(logits, -1) == labels
        extra = {
            "relative_loss_variation": lpjax.relative_loss_variation(
                logits, perturbed, labels, where=mask, axis_name=DATA_AXIS
            )
        }

    def global_mean(x):
        return lax.psum(jnp.sum(jnp.where(mask, x, 0)), DATA_AXIS) / count

    return {
        "plain_loss": global_mean(plain),
        "accuracy": global_mean(correct.astype(jnp.float32)),
        **extra,
    }


def make_predict_step(
    model: ModelFns,
    *,
    mesh: Mesh,
    logit_transform: lpjax.LogitTransform | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> Callable[[TrainState, Any], jax.Array]:
    """Builds ``predict(state, inputs) -> logits`` (inference mode), split along ``"data"``.

    ``logit_transform`` is a label-free test-time transform, e.g.
    ``lpjax.posthoc_logit_adjustment_transform(counts)``; by default the plain
    logits are returned, as every method of the paper predicts with them.
    """

    def local_predict(state: TrainState, inputs):
        logits = model.predict(state.params, state.model_state, inputs)
        if logit_transform is not None:
            logits, _ = logit_transform.apply(logits, None, logit_transform.init())
        return logits

    sharded = jax.shard_map(
        local_predict,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS)),
        out_specs=P(DATA_AXIS),
        check_vma=False,
    )
    return jax.jit(sharded, compiler_options=compiler_options)
