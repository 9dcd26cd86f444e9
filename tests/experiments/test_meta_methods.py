"""Meta-LPL in the trainer: the held-out meta set, the meta step of the train step, and the
two controls (docs/method.md, section 9)."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax
from experiments import methods, models, optimizers
from experiments import step as train_step
from experiments.config import command_line as configuration
from experiments.config import rules
from experiments.data import in_memory, meta_set, pipeline, registry
from experiments.methods import meta as meta_methods
from experiments.methods import method as method_lib

NUM_CLASSES = 4


def _dataset(per_class, name="toy", seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), per_class).astype(np.int32)
    images = rng.integers(0, 255, (len(labels), 4, 4, 1)).astype(np.uint8)
    return in_memory.Dataset(images, labels, NUM_CLASSES, [0.5], [0.25], name)


# ----------------------------------------------------------------------------- the meta set


def test_meta_set_comes_from_validation_and_is_the_same_for_every_seed():
    train = pipeline.ArraySplit(_dataset(20), augment=True)
    validation = pipeline.ArraySplit(_dataset(12, seed=1))
    sets = [meta_set.hold_out(train, validation, per_class=3, seed=s) for s in (0, 5)]
    for new_train, new_validation, meta in sets:
        assert new_train is train  # the training split is untouched
        assert not meta.augment
        np.testing.assert_array_equal(meta.class_counts, [3] * NUM_CLASSES)
        np.testing.assert_array_equal(new_validation.class_counts, [9] * NUM_CLASSES)
        # Meta and validation images are disjoint and together the old validation split.
        together = np.concatenate([meta.dataset.images, new_validation.dataset.images])
        assert sorted(map(bytes, together)) == sorted(map(bytes, validation.dataset.images))
    np.testing.assert_array_equal(sets[0][2].dataset.images, sets[1][2].dataset.images)


def test_meta_set_from_training_without_validation_and_into_training():
    train = pipeline.ArraySplit(_dataset(10), augment=True)
    new_train, validation, meta = meta_set.hold_out(train, None, per_class=2, seed=3)
    assert validation is None and new_train.augment
    np.testing.assert_array_equal(new_train.class_counts, [8] * NUM_CLASSES)
    np.testing.assert_array_equal(meta.class_counts, [2] * NUM_CLASSES)
    # The control trained on training + meta images gets every image back.
    full, _, _ = meta_set.hold_out(train, None, per_class=2, seed=3, into_training=True)
    np.testing.assert_array_equal(full.class_counts, train.class_counts)
    with pytest.raises(ValueError, match="class 0 .* has 10; lower config.meta.per_class"):
        meta_set.hold_out(train, None, per_class=10, seed=0)
    with pytest.raises(ValueError, match="per_class must be an int >= 1"):
        meta_set.hold_out(train, None, per_class=0, seed=0)


# ----------------------------------------------------------------------------- the controls


def test_fitted_offsets_match_class_frequencies_and_recover_a_shift():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, NUM_CLASSES))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(NUM_CLASSES, p=p) for p in probs])
    shift = np.array([1.0, -0.5, 0.3, -0.8])
    offsets = meta_methods.fit_logit_offsets(true_logits - shift, labels)
    # The optimality condition of the fit: mean predicted probability = label frequency.
    fitted = true_logits - shift + offsets
    mean_prob = (np.exp(fitted) / np.exp(fitted).sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(mean_prob, np.bincount(labels) / len(labels), atol=1e-4)
    # And the offsets undo the shift (up to a constant and sampling noise).
    np.testing.assert_allclose(offsets, shift - shift.mean(), atol=0.1)
    assert abs(offsets.mean()) < 1e-6


@pytest.mark.parametrize("name", ["meta_lpl", "la_meta_lpl", "la_meta_data", "la_meta_offsets"])
def test_registry_entries(name):
    config = configuration.apply_overrides(configuration.load_config(), {"method.name": name})
    method = methods.make_method(
        config, np.array([50, 20, 8, 3]), steps_per_epoch=10, feature_dim=8
    )
    assert (
        methods.entry(name).prepare_data
        == {
            "meta_lpl": meta_methods.meta_batches_data,
            "la_meta_lpl": meta_methods.meta_batches_data,
            "la_meta_data": meta_methods.meta_training_data,
            "la_meta_offsets": meta_methods.meta_offsets_data,
        }[name]
    )
    own_step = method.make_step is not method_lib.plain_step
    assert own_step == name.endswith("meta_lpl")
    assert (method.extra_inputs is not method_lib.no_extra_inputs) == own_step
    assert method.tracked == (("theta",) if own_step else ())
    assert (method.logit_offsets is not method_lib.no_logit_offsets) == (name == "la_meta_offsets")


def test_prepare_data_holds_out_the_meta_set_and_checks_the_meta_batch():
    train = pipeline.ArraySplit(_dataset(20), augment=True)
    splits = registry.Splits(train, None, pipeline.ArraySplit(_dataset(5)))
    config = configuration.load_config()
    for name, train_count, held_out in (
        ("meta_lpl", 16, 4),
        ("la_meta_offsets", 16, 4),
        ("la_meta_data", 20, 4),
        ("la", 20, None),
    ):
        config = configuration.apply_overrides(
            config, {"method.name": name, "meta.per_class": "4", "meta.batch_size": "16"}
        )
        prepared = methods.prepare_data(config, splits)
        np.testing.assert_array_equal(prepared.train.class_counts, [train_count] * NUM_CLASSES)
        if held_out is None:
            assert prepared.held_out is None
        else:
            np.testing.assert_array_equal(prepared.held_out.class_counts, [held_out] * 4)
    config = configuration.apply_overrides(config, {"method.name": "meta_lpl"})
    config = configuration.apply_overrides(config, {"meta.batch_size": "24"})
    with pytest.raises(ValueError, match=r"meta.batch_size \(24\) is larger than the meta set"):
        methods.prepare_data(config, splits)


def test_meta_batches_are_a_function_of_seed_and_step():
    config = configuration.apply_overrides(
        configuration.load_config(),
        {"method.name": "meta_lpl", "meta.every_steps": "3", "meta.start_epoch": "1"},
    )
    method = methods.make_method(config, np.array([50, 20, 8, 3]), steps_per_epoch=4)
    held_out = pipeline.ArraySplit(_dataset(30))
    splits = registry.Splits(None, None, None, held_out)
    assert [method.extra_inputs(splits, 0, s) is None for s in range(3, 12)] == [
        True, False, True, True, False, True, True, False, True,
    ]  # fmt: skip
    images, labels, rate = method.extra_inputs(splits, 0, 7)
    assert images.shape[0] == labels.shape[0] == config.meta.batch_size
    again = method.extra_inputs(splits, 0, 7)
    np.testing.assert_array_equal(again[0], images)  # the same batch when resumed
    assert not np.array_equal(method.extra_inputs(splits, 0, 4)[0], images)
    assert not np.array_equal(method.extra_inputs(splits, 1, 7)[0], images)  # another seed
    # The look-ahead's rate is the schedule's at this step.
    schedule = optimizers.make_schedule(config.optim, 4)
    assert rate.shape == () and rate == np.float32(schedule(7))


def test_meta_window_summary_averages_the_meta_loss_over_meta_steps():
    window = [
        {"loss": 1.0, "meta_loss": np.nan, "theta": np.array([0.1, -0.1])},
        {"loss": 3.0, "meta_loss": 2.0, "theta": np.array([0.3, -0.3])},
    ]
    summary = meta_methods.summarize_window(window)
    assert summary["train_loss"] == 2.0 and summary["train_meta_loss"] == 2.0
    np.testing.assert_allclose(summary["train_theta"], [0.2, -0.2])
    window[1]["meta_loss"] = np.nan
    assert np.isnan(meta_methods.summarize_window(window)["train_meta_loss"])
    window[1]["loss"] = np.inf  # a non-finite step still shows in its window
    assert meta_methods.summarize_window(window)["train_loss"] == np.inf


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("meta.scope", "head", "meta.scope must be one of classifier, model"),
        ("meta.every_steps", "0", "meta.every_steps must be >= 1"),
        ("meta.max_epsilon", "0", "meta.max_epsilon must be > 0"),
    ],
)
def test_meta_block_is_checked(field, value, message):
    config = configuration.apply_overrides(
        configuration.load_config(), {"method.name": "meta_lpl", field: value}
    )
    with pytest.raises(ValueError, match=message):  # the config's one check of it
        rules.validate_config(config)


# ----------------------------------------------------------------------------- the meta step


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train, return_features=False):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train)(x)
        features = nn.relu(x)
        logits = nn.Dense(NUM_CLASSES, name="classifier")(features)
        return (logits, features) if return_features else logits


def _meta_method(scope):
    config = configuration.apply_overrides(
        configuration.load_config(),
        {
            "method.name": "la_meta_lpl",
            "meta.scope": scope,
            "meta.learning_rate": "0.1",
            "lpl.step_size": "0.1",
        },
    )
    return methods.make_method(config, np.array([50, 20, 8, 3]), steps_per_epoch=10)


def _run_steps(scope, devices, meta_steps=(0, 2)):
    method = _meta_method(scope)
    mesh = train_step.make_data_mesh(devices)
    fns = models.classifier_model_fns(TinyNet(), input_shape=(1, 4, 4, 1))
    tx = optax.sgd(0.1, momentum=0.9)
    state = train_step.create_train_state(
        fns, tx, method.transform, key=jax.random.key(0), mesh=mesh
    )
    step = method.make_step(method, methods.StepContext(fns, tx, mesh, None))
    rng = np.random.default_rng(1)
    split = NamedSharding(mesh, P("data"))
    thetas = []
    for i in range(4):
        images = rng.normal(size=(16, 4, 4, 1)).astype(np.float32)
        labels = rng.integers(0, NUM_CLASSES, 16).astype(np.int32)
        batch = [jax.device_put(x, split) for x in (images, labels, np.ones(16, bool))]
        meta_batch = None
        if i in meta_steps:
            meta_images = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
            meta_labels = np.arange(8, dtype=np.int32) % NUM_CLASSES
            meta_batch = train_step.global_batch(mesh, (meta_images, meta_labels, np.float32(0.1)))
        state, metrics = step(state, *batch, jax.random.key(2), meta_batch)
        thetas.append(np.asarray(metrics["theta"]))
        assert np.isnan(metrics["meta_loss"]) == (i not in meta_steps)
    return state, thetas, method


@pytest.mark.parametrize("scope", ["classifier", "model"])
def test_meta_steps_move_theta_and_plain_steps_keep_it(scope):
    state, thetas, method = _run_steps(scope, jax.devices()[:1])
    assert np.abs(thetas[0]).min() > 0  # the first meta step moves every class from 0
    np.testing.assert_array_equal(thetas[1], thetas[0])  # a plain step keeps phi
    assert np.abs(thetas[2] - thetas[1]).max() > 0
    meta_state = lpjax.get_transform_state(state.transform_state, lpjax.MetaLplState)
    assert isinstance(meta_state, lpjax.MetaLplState)
    protocol = method.make_step.__self__  # the MetaProtocol the method's step belongs to
    np.testing.assert_allclose(protocol.meta.theta(meta_state), thetas[3])


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("scope", ["classifier", "model"])
def test_meta_steps_on_eight_devices_equal_one(scope):
    one, thetas_one, _ = _run_steps(scope, jax.devices()[:1])
    eight, thetas_eight, _ = _run_steps(scope, jax.devices()[:8])
    np.testing.assert_allclose(thetas_eight, thetas_one, rtol=2e-4, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5),
        (eight.params, eight.transform_state),
        (one.params, one.transform_state),
    )
