"""Experiment configs: every file loads, follows method.md section 7, and trains on mock CIFAR."""

import json
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpjax
from experiments import methods, models, optimizers
from experiments.config import base as common
from experiments.config import command_line as configuration
from experiments.data import in_memory

CONFIG_DIR = configuration.CONFIG_DIR
# experiments/configs/ holds config files only: every module there is one.
CONFIG_FILES = sorted(p for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")

# method.md section 7, written out independently of the config files:
# name -> (dataset, model, imbalance_ratio, default method).
BALANCED = {
    "cifar10_resnet32": ("cifar10", "resnet32"),
    "cifar100_resnet32": ("cifar100", "resnet32"),
    "cifar10_resnet110": ("cifar10", "resnet110"),
    "cifar100_resnet110": ("cifar100", "resnet110"),
    "cifar10_se_resnet110": ("cifar10", "se_resnet110"),
    "cifar10_wrn16_8": ("cifar10", "wrn16_8"),
    "cifar10_wrn28_10": ("cifar10", "wrn28_10"),
    "cifar100_wrn28_10": ("cifar100", "wrn28_10"),
}
LONGTAIL = {  # the paper's best method per column
    "cifar10_lt_r100": ("cifar10", 100.0, "la_lpl", 4),
    "cifar10_lt_r10": ("cifar10", 10.0, "lpl_varied", 4),
    "cifar100_lt_r100": ("cifar100", 100.0, "la_lpl", 27),
    "cifar100_lt_r10": ("cifar100", 10.0, "lpl_varied", 27),
}
# (num_epochs, milestones, decay_factor, weight_decay, warmup_epochs) per backbone.
RECIPES = {
    "resnet32": (160, (80, 120), 0.1, 1e-4, 0),
    "resnet110": (160, (80, 120), 0.1, 1e-4, 0),
    "se_resnet110": (200, (80, 120, 160), 0.1, 1e-4, 0),
    "wrn16_8": (240, (60, 120, 160, 200), 0.2, 5e-4, 0),
    "wrn28_10": (240, (60, 120, 160, 200), 0.2, 5e-4, 0),
    "ldam_drw": (200, (160, 180), 0.01, 2e-4, 5),
}


def _load(name):
    return configuration.load_config(CONFIG_DIR / f"{name}.py")


def _leaf_keys(tree, prefix=""):
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _max_inner_steps(lpl):
    return math.floor((lpl.epsilon + lpl.delta_epsilon) / lpl.step_size + 1e-6)


def test_every_table_row_has_a_config():
    names = {p.stem for p in CONFIG_FILES}
    assert set(BALANCED) | set(LONGTAIL) | {"multilabel_digits", "default"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_with_the_base_fields_only(path):
    config = configuration.load_config(path)
    # A config sets base fields; a new (misspelt) field would be silently ignored by train.py.
    assert _leaf_keys(config.to_dict()) == _leaf_keys(common.get_base_config().to_dict())
    assert config.model.name in models.MODELS
    assert config.method.name in methods.NAMES
    assert config.run.checkpoint_every_steps % config.run.log_every_steps == 0
    assert config.optim.batch_size % 8 == 0 and config.run.eval_batch_size % 8 == 0  # 1..8 devices


def test_every_base_field_is_defined_once_with_a_comment():
    """Each leaf of the base config has one commented line: in common.py, or for a method
    block in the methods registry, which owns those blocks."""
    import inspect
    import re

    from experiments.methods import registry

    sources = {"common.py": inspect.getsource(common), "registry.py": inspect.getsource(registry)}
    for key in _leaf_keys(common.get_base_config().to_dict()):
        block, _, field = key.rpartition(".")
        if block in methods.BLOCK_NAMES:
            where, pattern = "registry.py", rf"^\s*{block}\.{field} = .*  # \S"
        else:
            where, pattern = "common.py", rf"^\s*config\.{re.escape(key)} = .*  # \S"
        lines = re.findall(pattern, sources[where], flags=re.M)
        assert len(lines) == 1, f"{key}: {len(lines)} commented definitions in {where}"
    assert set(methods.default_blocks()) == set(methods.BLOCK_NAMES)
    assert all(name in common.get_base_config() for name in methods.BLOCK_NAMES)


@pytest.mark.parametrize("name", sorted(BALANCED) + sorted(LONGTAIL) + ["multilabel_digits"])
def test_every_field_set_has_a_comment(name):
    for line in (CONFIG_DIR / f"{name}.py").read_text().splitlines():
        if line.strip().startswith("config.") and " = " in line and "get_base_config" not in line:
            assert "  # " in line, f"{name}.py: field without a comment: {line.strip()}"


@pytest.mark.parametrize("name", sorted(BALANCED))
def test_balanced_cifar_recipe(name):
    config = _load(name)
    dataset, model = BALANCED[name]
    assert (config.data.name, config.model.name, config.data.imbalance_ratio) == (
        dataset,
        model,
        1.0,
    )
    assert config.method.name == "lpl_varied" and config.lpl.split_rule == "mean"
    assert (config.optim.batch_size, config.optim.learning_rate, config.optim.momentum) == (
        128,
        0.1,
        0.9,
    )
    assert config.optim.nesterov and config.data.augment and config.optim.schedule == "multistep"
    recipe = (
        config.optim.num_epochs,
        tuple(config.optim.milestones),
        config.optim.decay_factor,
        config.optim.weight_decay,
        config.optim.warmup_epochs,
    )
    assert recipe == RECIPES[model]
    # method.md 7: alpha 0.005-0.01 with 20-40 inner steps on balanced data.
    assert 0.005 <= config.lpl.step_size <= 0.01
    assert math.floor(config.lpl.epsilon / config.lpl.step_size + 1e-6) >= 20
    assert _max_inner_steps(config.lpl) <= 40
    assert config.run.eval_batch_size and 10_000 % config.run.eval_batch_size == 0


@pytest.mark.parametrize("name", sorted(LONGTAIL))
def test_longtail_cifar_recipe(name):
    config = _load(name)
    dataset, ratio, method, num_head = LONGTAIL[name]
    assert (config.data.name, config.data.imbalance_ratio, config.model.name) == (
        dataset,
        ratio,
        "resnet32",
    )
    assert config.method.name == method and config.lpl.split_rule == "longtail"
    assert config.lpl.num_head_classes == num_head
    assert (config.optim.batch_size, config.optim.learning_rate, config.optim.momentum) == (
        128,
        0.1,
        0.9,
    )
    recipe = (
        config.optim.num_epochs,
        tuple(config.optim.milestones),
        config.optim.decay_factor,
        config.optim.weight_decay,
        config.optim.warmup_epochs,
    )
    assert recipe == RECIPES["ldam_drw"]
    assert config.ldam.drw_start_epoch == 160 and config.la.tau == 1.0
    # The authors' scripts: the rarest class takes 10 (CIFAR-10-LT) or 50 (CIFAR-100-LT)
    # steps of 0.15 / 0.2, the largest head class 0.6 / 0.2 times as many.
    steps, alpha, head = {"cifar10": (10, 0.15, 0.6), "cifar100": (50, 0.2, 0.2)}[dataset]
    counts = in_memory.longtail_class_counts(5000, 10 if dataset == "cifar10" else 100, ratio)
    signs, bounds = lpjax.longtail_signs_and_bounds(
        counts,
        num_head_classes=num_head,
        epsilon=config.lpl.epsilon,
        delta_epsilon=config.lpl.delta_epsilon,
        head_scale=config.lpl.head_scale,
    )
    per_class = np.asarray(lpjax.num_inner_steps(bounds, config.lpl.step_size))
    assert config.lpl.step_size == alpha and per_class[-1] == steps
    assert per_class[0] == round(head * steps) and (signs == -1).sum() == num_head
    assert config.lpl.epsilon == 0 and not config.lpl.normalize  # the paper's step


def test_multilabel_digits_config():
    config = _load("multilabel_digits")
    assert (config.data.name, config.model.name, config.method.name) == (
        "multilabel_digits",
        "small_cnn",
        "lpl_multilabel",
    )
    assert config.lpl.split_rule == "longtail" and config.lpl.num_head_classes == 3
    assert config.data.imbalance_ratio == 10.0 and not config.data.augment
    assert config.data.multilabel_num_test % config.run.eval_batch_size == 0
    positive_counts = np.array([1788, 1435, 1170, 957, 742, 558, 440, 323, 294, 214])
    for method in ("lpl_multilabel", "bce", "focal", "asl"):
        override = configuration.apply_overrides(config, {"method.name": method})
        built = methods.make_method(override, positive_counts, steps_per_epoch=62)
        labels = jnp.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]])
        perturbed, _ = built.transform.apply(jnp.zeros((2, 10)), labels, built.transform.init())
        loss = built.loss_fn(perturbed, labels)
        # At zero logits every entry's BCE is log 2; the methods reweight or perturb it.
        assert loss.shape == (2,) and bool(jnp.all(jnp.isfinite(loss) & (loss > 0))), method


@pytest.mark.parametrize(
    "model, num_classes, input_shape",
    [(m, 100, (2, 32, 32, 3)) for m in sorted(m for m in models.MODELS if m != "small_cnn")]
    + [("small_cnn", 10, (2, 8, 24, 1))],
)
def test_config_models_build(model, num_classes, input_shape):
    net = models.create_model(model, num_classes=num_classes)
    out = jax.eval_shape(
        lambda: net.init_with_output(
            jax.random.key(0), jnp.zeros(input_shape), train=False, return_features=True
        )[0]
    )
    logits, features = out
    assert logits.shape == (input_shape[0], num_classes) and features.ndim == 2


_COMPARED_METHODS = {  # the methods each kind of config is meant to be switched to
    "mean": ("lpl_varied", "lpl_fixed", "isda", "ce"),
    "longtail": ("la_lpl", "lpl_varied", "lpl_fixed", "la", "ldam_drw", "ce"),
}


@pytest.mark.parametrize("name", sorted(BALANCED) + sorted(LONGTAIL))
def test_compared_methods_build_from_the_config(name):
    from experiments.data import in_memory

    config = _load(name)
    num_classes = 10 if config.data.name == "cifar10" else 100
    counts = in_memory.longtail_class_counts(
        5000 if num_classes == 10 else 500, num_classes, config.data.imbalance_ratio
    )
    for method in _COMPARED_METHODS[config.lpl.split_rule]:
        override = configuration.apply_overrides(config, {"method.name": method})
        if method == "lpl_fixed" and config.lpl.epsilon == 0:  # the long-tail recipes
            with pytest.raises(ValueError, match="lpl_fixed needs config.lpl.epsilon > 0"):
                methods.make_method(override, counts, steps_per_epoch=97, feature_dim=64)
            override = configuration.apply_overrides(override, {"lpl.epsilon": "1.0"})
        built = methods.make_method(override, counts, steps_per_epoch=97, feature_dim=64)
        features = jnp.ones((2, 64))
        classifier = {"kernel": jnp.zeros((64, num_classes)), "bias": jnp.zeros(num_classes)}
        labels = jnp.array([0, num_classes - 1])
        perturbed, _ = built.transform.apply(
            jnp.zeros((2, num_classes)),
            labels,
            built.transform.init(),
            features=features,
            classifier=classifier,
        )
        loss = built.loss_fn(perturbed, labels)
        assert loss.shape == (2,) and perturbed.shape == (2, num_classes)
        # Plain CE at zero logits is log C; a perturbation changes it, finitely.
        assert bool(jnp.all(jnp.isfinite(loss))), method
        if method == "ce":
            np.testing.assert_allclose(loss, np.log(num_classes), rtol=1e-6)


def test_unknown_override_key_lists_valid_keys():
    config = _load("cifar10_lt_r100")
    with pytest.raises(ValueError, match="Unknown config key 'lpl.epsilonn'") as info:
        configuration.apply_overrides(config, {"lpl.epsilonn": "0.1"})
    assert "did you mean lpl.epsilon" in str(info.value) and len(str(info.value)) < 200
    changed = configuration.apply_overrides(
        config, {"method.name": "ldam_drw", "lpl.epsilon": "0.15"}
    )
    assert changed.method.name == "ldam_drw" and changed.lpl.epsilon == 0.15
    assert config.method.name == "la_lpl"  # the original is untouched


# A short run of the real trainer on mocked CIFAR (random images). The configs' backbones
# take minutes to compile on two CPU cores, so the run swaps in small_cnn (their shapes are
# checked above); everything else (data, long-tail profile, optimiser, method) is the config's.
_MOCK_RUNS = {
    # 1200 mocked images give n_max >= 100, so the r = 100 profile keeps every class.
    "cifar10_lt_r100": (1200, {}),
    "cifar100_resnet32": (128, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_MOCK_RUNS))
def test_short_run_on_mock_cifar(name, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from experiments import train

    num_examples, extra = _MOCK_RUNS[name]
    overrides = {"optim.num_epochs": "1", "optim.batch_size": "32", "run.eval_batch_size": "64"}
    overrides |= {"model.name": "small_cnn", **extra}
    config = configuration.apply_overrides(_load(name), overrides)
    with tfds.testing.mock_data(num_examples=num_examples):
        returned = train.train_and_evaluate(config, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    num_classes = 10 if config.data.name == "cifar10" else 100
    assert results["method"] == config.method.name and results["dataset"] == config.data.name
    assert results["imbalance_ratio"] == config.data.imbalance_ratio and results["seed"] == 0
    assert results["num_steps"] >= 1 and np.isfinite(results["final_train_loss"])
    assert 0.0 <= results["accuracy"] <= 1.0
    assert len(results["per_class_accuracy"]) == num_classes
    for group in ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert group in results
    # LPL perturbs the logits, so the per-class diagnostic is recorded.
    assert len(results["relative_loss_variation"]) == num_classes
    assert (tmp_path / "per_class_accuracy.png").is_file()
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "checkpoints").is_dir()


# --- ImageNet-scale benchmarks -----------------------------------------------------------
# name -> (dataset, model, default method, classes, LPL head classes), written out from the
# papers independently of the config files: the head of a long-tailed set is its many-shot
# group (> 100 training images): 385 classes of ImageNet-LT, 842 of iNaturalist 2018.
LARGE = {
    "imagenet_lt_resnet50": ("imagenet_lt", "resnet50", "la_lpl", 1000, 385),
    "imagenet_lt_resnext50": ("imagenet_lt", "resnext50_32x4d", "la_lpl", 1000, 385),
    "inaturalist2018_resnet50": ("inaturalist2018", "resnet50", "la_lpl", 8142, 842),
    "coco2017_resnet50": ("coco2017", "resnet50", "lpl_multilabel", 80, 20),
}
# Synthetic class counts of the right size: exponential profiles with the data sets' largest
# and smallest class (ImageNet-LT 1280 / 5, iNaturalist 2018 1000 / 2; COCO's positive
# images per class, "person" 64k to about 200).
_LARGE_COUNTS = {
    "imagenet_lt": (1280, 1000, 256.0),
    "inaturalist2018": (1000, 8142, 500.0),
    "coco2017": (64115, 80, 320.0),
}
_LARGE_COMPARED = {  # what each kind of large config is meant to be switched to
    "longtail": (
        "la_lpl",
        "la",
        "la_posthoc",
        "balanced_softmax",
        "ldam_drw",
        "lpl_varied",
        "lpl_fixed",
        "ce",
    ),
    "multilabel": ("lpl_multilabel", "asl", "focal", "bce"),
}


def _large_counts(dataset):
    from experiments.data import in_memory

    return in_memory.longtail_class_counts(*_LARGE_COUNTS[dataset])


def test_every_large_benchmark_has_a_config_and_commented_recipes():
    import inspect

    from experiments.config import recipes

    assert set(LARGE) <= {p.stem for p in CONFIG_FILES}
    for recipe in (recipes.imagenet_scale_longtail, recipes.coco_multilabel):
        for line in inspect.getsource(recipe).splitlines():
            if line.strip().startswith("config.") and " = " in line and "get_base" not in line:
                assert "  # " in line, f"{recipe.__name__}: field without a comment: {line}"


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_config_recipe_and_validation(name):
    from experiments.config import rules as validation

    config = _load(name)
    dataset, model, method, _, num_head = LARGE[name]
    assert (config.data.name, config.model.name, config.method.name) == (dataset, model, method)
    assert config.lpl.split_rule == "longtail" and config.lpl.num_head_classes == num_head
    assert (config.data.image_size, config.model.dtype, config.data.augment) == (
        224,
        "bfloat16",
        True,
    )
    assert config.data.imbalance_ratio == 1.0  # the data sets' own long tails
    if dataset == "coco2017":  # ASL (Ridnik et al., ICCV 2021)
        recipe = ("adam", 40, 128, 1e-4, 1e-4, "onecycle", 8)
    else:  # LA (Menon et al., ICLR 2021); LDAM-DRW defers re-weighting to epoch 60 of 90
        weight_decay = 5e-4 if dataset == "imagenet_lt" else 1e-4
        recipe = ("sgd", 90, 512, 0.4, weight_decay, "cosine", 5)
        assert config.optim.momentum == 0.9 and config.ldam.drw_start_epoch == 60
    assert recipe == (
        config.optim.name,
        config.optim.num_epochs,
        config.optim.batch_size,
        config.optim.learning_rate,
        config.optim.weight_decay,
        config.optim.schedule,
        config.optim.warmup_epochs,
    )
    assert _max_inner_steps(config.lpl) <= 30  # a cheap inner solver at this scale
    assert validation.validate_config(config) == []  # valid, and no option is ignored


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_config_builds_its_model_and_methods(name):
    config = _load(name)
    dataset, _, _, num_classes, num_head = LARGE[name]
    counts = _large_counts(dataset)
    assert counts.shape == (num_classes,)
    kind = "multilabel" if dataset == "coco2017" else "longtail"
    batch = 4
    shape = (batch, config.data.image_size, config.data.image_size, 3)
    for cosine_scale in (None, 30.0) if kind == "longtail" else (None,):  # LDAM's classifier
        net = models.create_model(
            config.model.name,
            num_classes=num_classes,
            dtype=jnp.bfloat16,
            cosine_scale=cosine_scale,
        )
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        variables = jax.eval_shape(partial(net.init, train=False), jax.random.key(0), x)
        logits, features = jax.eval_shape(
            partial(net.apply, train=False, return_features=True), variables, x
        )
        assert logits.shape == (batch, num_classes) and logits.dtype == jnp.float32
        assert features.shape == (batch, 2048)
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.choice(num_classes, batch, p=counts / counts.sum()))
    if kind == "multilabel":
        labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32).at[:, 0].set(1)
    # ImageNet-LT's two configs differ only in the backbone: the methods are checked once.
    for method in () if name == "imagenet_lt_resnext50" else _LARGE_COMPARED[kind]:
        override = configuration.apply_overrides(config, {"method.name": method})
        assert methods.model_options(override).get("cosine_scale") in (None, 30.0)
        built = methods.make_method(override, counts, steps_per_epoch=226, feature_dim=2048)
        perturbed, _ = built.transform.apply(
            jnp.zeros((batch, num_classes)), labels, built.transform.init()
        )
        loss = built.loss_fn(perturbed, labels)
        assert perturbed.shape == (batch, num_classes) and loss.shape == (batch,)
        assert bool(jnp.all(jnp.isfinite(loss))), method
        if method == "ce":  # plain CE at zero logits is log C
            np.testing.assert_allclose(loss, np.log(num_classes), rtol=1e-6)
        if method in ("la_lpl", "lpl_multilabel"):
            assert not np.allclose(perturbed, 0.0), method  # the perturbation acts
    # The head of the LPL split is the num_head most frequent classes, signed -1.
    signs, _ = lpjax.longtail_signs_and_bounds(
        counts, num_head_classes=num_head, epsilon=config.lpl.epsilon
    )
    assert int((np.asarray(signs) < 0).sum()) == num_head


def test_large_recipes_learning_rate_schedules():

    steps_per_epoch = 100
    config = _load("imagenet_lt_resnet50")
    _, schedule = optimizers.make_optimizer(config.optim, steps_per_epoch)
    total, warmup = 90 * steps_per_epoch, 5 * steps_per_epoch
    for step in (0, 250, 500, 2000, 6000, 9000):  # linear warm-up to 0.4, then cosine to 0
        t = (step - warmup) / (total - warmup)
        expected = 0.4 * step / warmup if step < warmup else 0.2 * (1 + np.cos(np.pi * t))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-9)

    config = _load("coco2017_resnet50")
    tx, schedule = optimizers.make_optimizer(config.optim, steps_per_epoch)
    total, rise = 40 * steps_per_epoch, 8 * steps_per_epoch
    peak, start = 1e-4, 1e-4 / 25  # PyTorch OneCycleLR: div_factor 25, final_div_factor 1e4
    for step in (0, 400, 800, 2000, 4000):
        if step <= rise:
            expected = start + (peak - start) * (1 - np.cos(np.pi * step / rise)) / 2
        else:
            end = start / 1e4
            expected = end + (peak - end) * (1 + np.cos(np.pi * (step - rise) / (total - rise))) / 2
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)
    # Adam with L2 decay on the gradient (PyTorch Adam): the first step moves every
    # parameter by the rate against the sign of (gradient + decay * parameter).
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-start, start], rtol=1e-3)
    adamw = configuration.apply_overrides(config, {"optim.name": "adamw"})
    tx, _ = optimizers.make_optimizer(adamw.optim, steps_per_epoch)
    updates, _ = tx.update(grads, tx.init(params), params)
    # decoupled: Adam's unit step on the gradient, plus rate * decay * parameter
    np.testing.assert_allclose(updates["w"], [-start * (1 + 1e-4), start * 2e-4], rtol=1e-3)


def test_isda_refuses_a_covariance_too_large_for_a_device():
    config = configuration.apply_overrides(_load("cifar10_lt_r100"), {"method.name": "isda"})
    counts = np.full(1000, 100)
    with pytest.raises(ValueError, match=r"1000 x 2048\^2 x 4 bytes = 15.6 GiB"):
        methods.make_method(config, counts, steps_per_epoch=10, feature_dim=2048)
    built = methods.make_method(config, np.full(100, 100), steps_per_epoch=10, feature_dim=640)
    assert built.transform.init().covariances.shape == (100, 640, 640)
    # The diagonal form holds ImageNet size: [C, D] variances.
    diagonal = configuration.apply_overrides(config, {"isda.covariance": "diagonal"})
    built = methods.make_method(diagonal, counts, steps_per_epoch=10, feature_dim=2048)
    assert built.transform.init().covariances.shape == (1000, 2048)
    from experiments.config import rules
    from experiments.run.errors import UserError

    low_rank = configuration.apply_overrides(config, {"isda.covariance": "low_rank"})
    with pytest.raises(UserError, match=r"config.isda.covariance must be one of"):
        rules.validate_config(low_rank)
