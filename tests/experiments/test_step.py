"""experiments.step: the global-view step on 8 devices equals plain single-device code."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lpjax
from experiments import models
from experiments import step as train_step

NUM_CLASSES = 6
COUNTS = np.array([60, 40, 20, 10, 5, 3])


class TinyNet(nn.Module):
    """Dense + batch norm + a last layer named freely: the step assumes no layer names."""

    num_classes: int = NUM_CLASSES
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, train, return_features=False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train)(x)
        features = nn.relu(x)
        if self.dropout_rate:
            features = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return (logits, features) if return_features else logits


def _transform():
    return lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS),
        lpjax.lpl_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=0.1, delta_epsilon=0.2, step_size=0.02
        ),
    )


def _tx():
    return optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.1, momentum=0.9, nesterov=True))


def _batches(num_steps, batch_size=32):
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.normal(size=(batch_size, 4, 4, 1)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
            # Padding rows spread over the devices, not only the last one's.
            "mask": rng.permutation(np.arange(batch_size) < batch_size - 5),
        }
        for _ in range(num_steps)
    ]


def _drw_weights(labels, step):
    """LDAM-DRW-like weights that switch on at step 1 (exercises example_weights_fn)."""
    weights = jnp.asarray(lpjax.class_balanced_weights(COUNTS, beta=0.99))
    return jnp.where(step >= 1, weights[labels], 1.0)


def _sharded_run(devices, batches, tx, fns=None, *, model=None, example_weights_fn=None):
    mesh = train_step.make_data_mesh(devices)
    model = model or TinyNet()
    transform = _transform()
    fns = fns or models.linen_model_fns(model, input_shape=(1, 4, 4, 1))
    state = train_step.create_train_state(fns, tx, transform, key=jax.random.key(0), mesh=mesh)
    step = train_step.make_train_step(
        fns,
        tx,
        transform,
        lpjax.softmax_cross_entropy_with_integer_labels,
        mesh=mesh,
        example_weights_fn=example_weights_fn,
    )
    history = []
    for batch in batches:
        inputs = train_step.global_batch(mesh, (batch["image"], batch["label"], batch["mask"]))
        state, metrics = step(state, *inputs, jax.random.key(1))
        history.append(jax.device_get(metrics))
    return state, history


def _reference_run(batches, tx, *, example_weights_fn=None):
    """The same training written directly: no mesh, no sharding, one device."""
    model = TinyNet()
    transform = _transform()
    state0 = transform.init()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    history = []
    for step, batch in enumerate(batches):
        mask = batch["mask"]
        weights = mask.astype(np.float32)
        if example_weights_fn is not None:
            weights = weights * np.asarray(example_weights_fn(batch["label"], step))

        def objective(params, batch=batch, batch_stats=batch_stats, weights=weights):
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
            return (weights * loss).sum() / weights.sum(), (updates, logits, perturbed)

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, logits, perturbed = aux
        plain = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = np.argmax(logits, -1) == batch["label"]
        history.append(
            {
                "loss": float(loss),
                "grad_norm": float(optax.tree.norm(grads)),
                "plain_loss": float(plain[mask].mean()),
                "accuracy": float(correct[mask].mean()),
                "relative_loss_variation": np.asarray(
                    lpjax.relative_loss_variation(logits, perturbed, batch["label"], where=mask)
                ),
            }
        )
        param_updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, param_updates)
        batch_stats = updates["batch_stats"]
    return params, batch_stats, history


def _assert_same_metrics(history, reference):
    for got, want in zip(history, reference, strict=True):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_global_view_step_equals_plain_single_device_training(num_devices):
    tx = _tx()
    batches = _batches(3)
    state, history = _sharded_run(jax.devices()[:num_devices], batches, tx)
    params, batch_stats, reference = _reference_run(batches, tx)

    _assert_same_metrics(history, reference)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params, params
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state.model_state["batch_stats"],
        batch_stats,
    )
    assert int(state.step) == 3


def test_example_weights_give_the_weighted_mean_over_the_global_batch():
    tx = _tx()
    batches = _batches(3)
    state, history = _sharded_run(jax.devices(), batches, tx, example_weights_fn=_drw_weights)
    params, _, reference = _reference_run(batches, tx, example_weights_fn=_drw_weights)
    _assert_same_metrics(history, reference)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params, params
    )


def test_dropout_masks_do_not_depend_on_the_device_count():
    # One key per step, masks drawn for the global batch: 1 and 8 devices agree.
    tx = _tx()
    batches = _batches(3)
    model = TinyNet(dropout_rate=0.5)
    runs = [_sharded_run(jax.devices()[:n], batches, tx, model=model) for n in (1, 8)]
    _assert_same_metrics(runs[1][1], runs[0][1])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        runs[1][0].params,
        runs[0][0].params,
    )
    # ... and dropout acts: the run differs from the one without it.
    plain_state, _ = _sharded_run(jax.devices()[:1], batches, tx)
    assert not np.allclose(
        plain_state.params["head"]["kernel"], runs[0][0].params["head"]["kernel"]
    )


class TinyNnxNet(nnx.Module):
    """TinyNet in Flax nnx, with TinyNet's initial weights (``TinyNet().init(key(0))``)."""

    def __init__(self, linen_variables):
        params, stats = linen_variables["params"], linen_variables["batch_stats"]
        rngs = nnx.Rngs(0)
        self.dense = nnx.Linear(16, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)  # no axis_name: the global view
        self.head = nnx.Linear(16, NUM_CLASSES, rngs=rngs)
        for layer, name in ((self.dense, "Dense_0"), (self.head, "head")):
            layer.kernel[...] = jnp.asarray(params[name]["kernel"])
            layer.bias[...] = jnp.asarray(params[name]["bias"])
        self.norm.scale[...] = jnp.asarray(params["BatchNorm_0"]["scale"])
        self.norm.bias[...] = jnp.asarray(params["BatchNorm_0"]["bias"])
        self.norm.mean[...] = jnp.asarray(stats["BatchNorm_0"]["mean"])
        self.norm.var[...] = jnp.asarray(stats["BatchNorm_0"]["var"])

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.dense(x.reshape(x.shape[0], -1)))))


def test_nnx_model_trains_like_the_plain_linen_reference():
    tx = _tx()
    batches = _batches(3)
    linen_variables = TinyNet().init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)), train=False)
    fns = models.nnx_model_fns(TinyNnxNet(linen_variables))
    state, history = _sharded_run(jax.devices(), batches, tx, fns)
    params, batch_stats, reference = _reference_run(batches, tx)

    _assert_same_metrics(history, reference)
    got = {
        "Dense_0": state.params["dense"],
        "head": state.params["head"],
        "BatchNorm_0": state.params["norm"],
    }
    for layer, values in got.items():
        for name, value in values.items():
            np.testing.assert_allclose(value, params[layer][name], rtol=1e-5, atol=1e-6)
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            state.model_state["norm"][name],
            batch_stats["BatchNorm_0"][name],
            rtol=1e-5,
            atol=1e-6,
        )
    # Prediction uses the running statistics (eval mode), like linen's train=False.
    mesh = train_step.make_data_mesh()
    predict = train_step.make_predict_step(fns, mesh=mesh)
    images = train_step.global_batch(mesh, batches[0]["image"][:24])
    expected = TinyNet().apply(
        {"params": params, "batch_stats": batch_stats}, batches[0]["image"][:24], train=False
    )
    np.testing.assert_allclose(predict(state, images), expected, rtol=1e-5, atol=1e-5)


def test_step_compiles_once_and_makes_no_host_transfers():
    tx = optax.sgd(0.05)
    mesh = train_step.make_data_mesh()
    transform = _transform()
    linen_fns = models.linen_model_fns(TinyNet(), input_shape=(1, 4, 4, 1))
    traces = []

    def counted_apply(*args):
        traces.append(1)  # runs only when the step is traced
        return linen_fns.apply(*args)

    fns = linen_fns._replace(apply=counted_apply)
    state = train_step.create_train_state(fns, tx, transform, key=jax.random.key(0), mesh=mesh)
    step = train_step.make_train_step(
        fns, tx, transform, lpjax.softmax_cross_entropy_with_integer_labels, mesh=mesh
    )
    batches = [
        train_step.global_batch(mesh, (b["image"], b["label"], b["mask"])) for b in _batches(4)
    ]
    key = jax.random.key(1)
    state, _ = step(state, *batches[0], key)
    with jax.transfer_guard("disallow"):
        for batch in batches[1:]:
            state, metrics = step(state, *batch, key)
    assert len(traces) == 1 and step._cache_size() == 1
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    for leaf in jax.tree.leaves((state, metrics)):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    assert np.isfinite(float(metrics["loss"]))


def test_predict_step_applies_the_posthoc_transform():
    tx = optax.sgd(0.05)
    mesh = train_step.make_data_mesh()
    fns = models.linen_model_fns(TinyNet(), input_shape=(1, 4, 4, 1))
    state = train_step.create_train_state(
        fns, tx, lpjax.identity(), key=jax.random.key(0), mesh=mesh
    )
    images = _batches(1)[0]["image"]
    plain = train_step.make_predict_step(fns, mesh=mesh)
    adjusted = train_step.make_predict_step(
        fns, mesh=mesh, logit_transform=lpjax.posthoc_logit_adjustment_transform(COUNTS)
    )
    batch = train_step.global_batch(mesh, images)
    logits = adjusted(state, batch)
    assert logits.sharding.spec == jax.sharding.PartitionSpec(train_step.DATA_AXIS)
    expected = np.asarray(plain(state, batch)) - np.log(COUNTS / COUNTS.sum())
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


def test_mesh_is_one_auto_data_axis_over_every_device():
    mesh = train_step.make_data_mesh()
    assert mesh.axis_names == (train_step.DATA_AXIS,)
    assert mesh.devices.size == jax.device_count() == 8  # tests/conftest.py
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_the_step_runs_lpl_class_sharded_on_eight_devices():
    """The compiled 8-device step: LPL's loop moves a [2, B] array per inner step, no
    [B, C] one (the trainer traces its step inside jax.set_mesh)."""
    from benchmarks import _hlo

    tx = optax.sgd(0.05)
    mesh = train_step.make_data_mesh()
    transform = _transform()
    fns = models.linen_model_fns(TinyNet(), input_shape=(1, 4, 4, 1))
    state = train_step.create_train_state(fns, tx, transform, key=jax.random.key(0), mesh=mesh)
    step = train_step.make_train_step(
        fns, tx, transform, lpjax.softmax_cross_entropy_with_integer_labels, mesh=mesh
    )
    batch = _batches(1)[0]
    inputs = train_step.global_batch(mesh, (batch["image"], batch["label"], batch["mask"]))
    text = step.lower(state, *inputs, jax.random.key(1)).compile().as_text()
    found = _hlo.collectives(text, loop_trips=10, num_devices=mesh.size)
    in_loop = [c for c in found if c.runs > 1]
    assert [c.kind for c in in_loop] == ["all-reduce"], in_loop
    assert in_loop[0].nbytes == 2 * 4 * len(batch["label"])
    assert any(c.kind == "all-to-all" for c in found)


def test_perturbation_metrics_against_numpy():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(7, 4)).astype(np.float32)
    delta = (0.3 * rng.normal(size=(7, 4))).astype(np.float32)
    labels = rng.integers(0, 4, size=7)
    mask = np.array([True] * 6 + [False])
    got = train_step.perturbation_metrics(
        jnp.asarray(reference), jnp.asarray(reference + delta), jnp.asarray(labels), mask
    )
    real = mask
    margins = []
    for row, y in zip(reference[real], labels[real], strict=True):
        others = np.delete(row, y)
        margins.append(abs(row[y] - others.max()))
    flipped = np.argmax(reference + delta, -1) != np.argmax(reference, -1)
    np.testing.assert_allclose(got["delta_l1"], np.abs(delta[real]).sum(-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["reference_margin"], np.median(margins), rtol=1e-5)
    assert float(got["flips"]) == flipped[real].sum()


def test_deferred_start_trains_on_the_before_transform_until_its_step():
    counts = np.array([50, 20, 5])
    la = lpjax.logit_adjustment_transform(counts, tau=1.0)
    lpl = lpjax.chain(
        la, lpjax.lpl_longtail_transform(counts, num_head_classes=1, epsilon=0.5, step_size=0.1)
    )
    model = train_step.ModelFns(
        init=lambda key: ({"w": jax.random.normal(key, (4, 3))}, {}),
        apply=lambda params, model_state, x, key: (x @ params["w"], model_state, {}),
        predict=lambda params, model_state, x: x @ params["w"],
    )
    tx = optax.sgd(0.1)
    loss = lpjax.softmax_cross_entropy_with_integer_labels
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])
    mask = jnp.ones(6, bool)
    key = jax.random.key(0)

    def run(transform, step, **options):
        params, _ = model.init(jax.random.key(1))
        state = train_step.TrainState(
            step=jnp.asarray(step, jnp.int32),
            params=params,
            model_state={},
            opt_state=tx.init(params),
            transform_state=transform.init(),
        )
        fn = train_step.train_step_fn(model, tx, transform, loss, **options)
        return fn(state, x, y, mask, key)[0].params["w"]

    for step, same_as in ((2, la), (3, lpl), (7, lpl)):
        np.testing.assert_allclose(run(lpl, step, deferred=(la, 3)), run(same_as, step), rtol=1e-6)
    assert not np.allclose(run(la, 0), run(lpl, 0))  # the two differ: the test can fail
