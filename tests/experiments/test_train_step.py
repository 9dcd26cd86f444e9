"""lpjax.training: the sharded train step equals plain single-device JAX code."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lpjax
from lpjax import training

NUM_CLASSES = 6
COUNTS = np.array([60, 40, 20, 10, 5, 3])


class TinyNet(nn.Module):
    """Dense + batch norm + a last layer named freely: the library assumes no layer names."""

    num_classes: int = NUM_CLASSES
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train, return_features=False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name)(x)
        features = nn.relu(x)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits


def _transform():
    return lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS),
        lpjax.lpl_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=0.1, delta_epsilon=0.2, step_size=0.02
        ),
    )


def _batches(num_steps, batch_size=32):
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.normal(size=(batch_size, 4, 4, 1)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
            "mask": np.arange(batch_size) < batch_size - 3,
        }
        for _ in range(num_steps)
    ]


def _sharded_run(devices, batches, tx, fns=None):
    mesh = training.make_data_mesh(devices)
    model = TinyNet(bn_axis_name=training.DATA_AXIS)
    transform = _transform()
    fns = fns or training.linen_model_fns(model, input_shape=(1, 4, 4, 1))
    state = training.create_train_state(fns, tx, transform, key=jax.random.key(0), mesh=mesh)
    step = training.make_train_step(
        fns, tx, transform, lpjax.softmax_cross_entropy_with_integer_labels, mesh=mesh
    )
    losses = []
    for batch in batches:
        inputs = training.global_batch(mesh, (batch["image"], batch["label"], batch["mask"]))
        state, metrics = step(state, *inputs, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return state, losses


def _reference_run(batches, tx):
    """The same training written directly: no mesh, no shard_map, one device."""
    model = TinyNet()
    transform = _transform()
    state0 = transform.init()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for batch in batches:

        def objective(params, batch=batch, batch_stats=batch_stats):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                batch["image"],
                train=True,
                mutable=["batch_stats"],
            )
            perturbed, _ = transform.apply(logits, batch["label"], state0, where=batch["mask"])
            loss = lpjax.softmax_cross_entropy_with_integer_labels(
                perturbed, batch["label"], where=batch["mask"]
            )
            return loss.sum() / batch["mask"].sum(), updates

        (loss, updates), grads = jax.value_and_grad(objective, has_aux=True)(params)
        param_updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, param_updates)
        batch_stats = updates["batch_stats"]
        losses.append(float(loss))
    return params, batch_stats, losses


@pytest.mark.parametrize("num_devices", [1, 8])
def test_sharded_step_equals_plain_single_device_training(num_devices):
    tx = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9, nesterov=True))
    batches = _batches(3)
    state, losses = _sharded_run(jax.devices()[:num_devices], batches, tx)
    params, batch_stats, reference_losses = _reference_run(batches, tx)

    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state.params, params
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        state.model_state["batch_stats"],
        batch_stats,
    )
    assert int(state.step) == 3


class TinyNnxNet(nnx.Module):
    """TinyNet in Flax nnx, with TinyNet's initial weights (``TinyNet().init(key(0))``)."""

    def __init__(self, linen_variables):
        params, stats = linen_variables["params"], linen_variables["batch_stats"]
        rngs = nnx.Rngs(0)
        self.dense = nnx.Linear(16, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, axis_name=training.DATA_AXIS, rngs=rngs)
        self.head = nnx.Linear(16, NUM_CLASSES, rngs=rngs)
        for layer, name in ((self.dense, "Dense_0"), (self.head, "head")):
            layer.kernel.value = jnp.asarray(params[name]["kernel"])
            layer.bias.value = jnp.asarray(params[name]["bias"])
        self.norm.scale.value = jnp.asarray(params["BatchNorm_0"]["scale"])
        self.norm.bias.value = jnp.asarray(params["BatchNorm_0"]["bias"])
        self.norm.mean.value = jnp.asarray(stats["BatchNorm_0"]["mean"])
        self.norm.var.value = jnp.asarray(stats["BatchNorm_0"]["var"])

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.dense(x.reshape(x.shape[0], -1)))))


def test_nnx_model_trains_like_the_plain_linen_reference():
    tx = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9, nesterov=True))
    batches = _batches(3)
    linen_variables = TinyNet().init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), train=False)
    fns = training.nnx_model_fns(TinyNnxNet(linen_variables))
    state, losses = _sharded_run(jax.devices(), batches, tx, fns)
    params, batch_stats, reference_losses = _reference_run(batches, tx)

    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    got = {
        "Dense_0": state.params["dense"],
        "head": state.params["head"],
        "BatchNorm_0": state.params["norm"],
    }
    for layer, values in got.items():
        for name, value in values.items():
            np.testing.assert_allclose(value, params[layer][name], rtol=1e-4, atol=1e-6)
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            state.model_state["norm"][name],
            batch_stats["BatchNorm_0"][name],
            rtol=1e-4,
            atol=1e-6,
        )
    # Prediction uses the running statistics (eval mode), like linen's train=False.
    mesh = training.make_data_mesh()
    predict = training.make_predict_step(fns, mesh=mesh)
    images = training.global_batch(mesh, batches[0]["image"][:24])
    expected = TinyNet().apply(
        {"params": params, "batch_stats": batch_stats}, batches[0]["image"][:24], train=False
    )
    np.testing.assert_allclose(predict(state, images), expected, rtol=1e-4, atol=1e-5)


def test_step_compiles_once_and_makes_no_host_transfers():
    tx = optax.sgd(0.05)
    mesh = training.make_data_mesh()
    model = TinyNet(bn_axis_name=training.DATA_AXIS)
    transform = _transform()
    fns = training.linen_model_fns(model, input_shape=(1, 4, 4, 1))
    state = training.create_train_state(fns, tx, transform, key=jax.random.key(0), mesh=mesh)
    step = training.make_train_step(
        fns, tx, transform, lpjax.softmax_cross_entropy_with_integer_labels, mesh=mesh
    )
    batches = [
        training.global_batch(mesh, (b["image"], b["label"], b["mask"])) for b in _batches(4)
    ]
    key = jax.random.key(1)
    state, _ = step(state, *batches[0], key)
    with jax.transfer_guard("disallow"):
        for batch in batches[1:]:
            state, metrics = step(state, *batch, key)
    assert step._cache_size() == 1
    assert np.isfinite(float(metrics["loss"]))


def test_predict_step_applies_the_posthoc_transform():
    tx = optax.sgd(0.05)
    mesh = training.make_data_mesh()
    model = TinyNet(bn_axis_name=training.DATA_AXIS)
    fns = training.linen_model_fns(model, input_shape=(1, 4, 4, 1))
    state = training.create_train_state(fns, tx, lpjax.identity(), key=jax.random.key(0), mesh=mesh)
    images = _batches(1)[0]["image"]
    plain = training.make_predict_step(fns, mesh=mesh)
    adjusted = training.make_predict_step(
        fns, mesh=mesh, logit_transform=lpjax.posthoc_logit_adjustment_transform(COUNTS)
    )
    batch = training.global_batch(mesh, images)
    expected = np.asarray(plain(state, batch)) - np.log(COUNTS / COUNTS.sum())
    np.testing.assert_allclose(np.asarray(adjusted(state, batch)), expected, rtol=1e-5, atol=1e-5)
