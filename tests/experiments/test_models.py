"""Tests for experiments.models: parameter counts, the shared conventions, a digits run.

Large models are only traced (``jax.eval_shape``); forward passes run only for ResNet-32,
SmallCNN, a WRN-10-1 and ResNet-50 (64x64), on tiny batches.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.config import command_line, names
from experiments.models import (
    MODELS,
    ResNet,
    ResNetCifar,
    SEResNetCifar,
    SmallCNN,
    WideResNet,
    create_model,
    resnet32,
    resnet50,
    resnet110,
    resnext50_32x4d,
)

CIFAR = (2, 32, 32, 3)
DIGITS = (2, 8, 8, 1)
IMAGENET_SMALL = (2, 64, 64, 3)  # ImageNet networks at a quarter of 224 (2x2 final maps)
IMAGENET_MODELS = ("resnet50", "resnext50_32x4d")
# RBG keys: flax init and dropout compile several times faster on CPU than with threefry.
RNGS = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}


def _input_shape(name):
    if name in IMAGENET_MODELS:
        return IMAGENET_SMALL
    return DIGITS if name == "small_cnn" else CIFAR


def _abstract_variables(model, shape):
    return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros(shape), train=False))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _param_count(model, shape=CIFAR):
    return _count(_abstract_variables(model, shape)["params"])


def _init(model, x):
    return jax.jit(partial(model.init, train=False))(RNGS, x)


def _filled_variables(model, shape, seed=0):
    """Concrete variables of the right shapes without compiling ``model.init``."""
    rng = np.random.default_rng(seed)
    abstract = _abstract_variables(model, shape)
    fill = lambda draw: lambda a: draw(size=a.shape).astype(a.dtype)
    return {
        "params": jax.tree.map(fill(partial(rng.normal, 0.0, 0.1)), abstract["params"]),
        # positive running means and variances
        "batch_stats": jax.tree.map(fill(partial(rng.uniform, 0.5, 1.5)), abstract["batch_stats"]),
    }


def _apply(model, variables, x, **kwargs):
    """Jitted apply (eager op-by-op execution is slow on CPU)."""
    return jax.jit(partial(model.apply, **kwargs))(variables, x)


# --- hand formulas (conv kernels have no bias; BatchNorm has scale + bias) -----------------


def _conv(k, cin, cout):
    return k * k * cin * cout


def _bn(c):
    return 2 * c


def _resnet_cifar_formula(depth, num_classes, se_reduction=None):
    n = (depth - 2) // 6
    total = _conv(3, 3, 16) + _bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += _conv(3, cin, width) + _bn(width) + _conv(3, width, width) + _bn(width)
            if se_reduction is not None:  # two dense layers with bias
                h = max(width // se_reduction, 1)
                total += width * h + h + h * width + width
            cin = width  # option-A shortcut: no parameters
    return total + 64 * num_classes + num_classes


def _wrn_formula(depth, k, num_classes):
    n = (depth - 4) // 6
    total = _conv(3, 3, 16)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(cin) + _conv(3, cin, width) + _bn(width) + _conv(3, width, width)
            if cin != width:
                total += _conv(1, cin, width)
            cin = width
    return total + _bn(cin) + cin * num_classes + num_classes


# --- parameter counts ----------------------------------------------------------------------


def test_resnet32_param_count_exact():
    n = _param_count(resnet32(10))
    assert n == _resnet_cifar_formula(32, 10) == 464_154
    assert abs(n - 0.46e6) <= 0.01 * 0.46e6


def test_resnet110_param_count():
    n = _param_count(resnet110(10))
    assert n == _resnet_cifar_formula(110, 10)
    assert abs(n - 1.7e6) <= 0.02 * 1.7e6


def test_se_resnet110_param_count():
    base = _param_count(resnet110(10))
    n = _param_count(create_model("se_resnet110", num_classes=10))
    assert n == _resnet_cifar_formula(110, 10, se_reduction=16)
    assert base < n < 1.01 * base  # the SE gates add under 1%


@pytest.mark.parametrize(
    ("name", "depth", "k", "expected"), [("wrn16_8", 16, 8, 11.0e6), ("wrn28_10", 28, 10, 36.5e6)]
)
def test_wrn_param_count(name, depth, k, expected):
    n = _param_count(create_model(name, num_classes=10))
    assert n == _wrn_formula(depth, k, 10)
    assert abs(n - expected) <= 0.01 * expected


def _imagenet_resnet_formula(num_classes, groups=1, width_per_group=64):
    """Bottleneck v1.5 count: stem, [3, 4, 6, 3] blocks, projection shortcuts, dense head."""
    total = _conv(7, 3, 64) + _bn(64)
    cin = 64
    for stage, num_blocks in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**stage
        width = planes * width_per_group // 64 * groups
        for _ in range(num_blocks):
            total += _conv(1, cin, width) + _bn(width)
            total += _conv(3, width // groups, width) + _bn(width)  # grouped: in/groups
            total += _conv(1, width, 4 * planes) + _bn(4 * planes)
            if cin != 4 * planes:
                total += _conv(1, cin, 4 * planes) + _bn(4 * planes)
            cin = 4 * planes
    return total + cin * num_classes + num_classes


# torchvision's published counts (torchvision.models ResNet50_Weights / ResNeXt50_32X4D_Weights
# "num_params"), for 1000 classes.
@pytest.mark.parametrize(
    ("name", "groups", "width", "torchvision_count"),
    [("resnet50", 1, 64, 25_557_032), ("resnext50_32x4d", 32, 4, 25_028_904)],
)
def test_imagenet_resnet_param_count_is_torchvisions(name, groups, width, torchvision_count):
    model = create_model(name, num_classes=1000)
    n = _param_count(model, (1, 224, 224, 3))
    assert n == torchvision_count
    assert n == _imagenet_resnet_formula(1000, groups, width)
    # The head scales with the classes: iNaturalist 2018's 8,142 add 2049 per class.
    n_inat = _param_count(create_model(name, num_classes=8142), IMAGENET_SMALL)
    assert n_inat == torchvision_count + 7142 * 2049


def test_small_cnn_is_small():
    assert 10_000 < _param_count(SmallCNN(num_classes=10), DIGITS) < 50_000


# --- shared conventions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("resnet32", 64),
        ("resnet110", 64),
        ("se_resnet110", 64),
        ("wrn16_8", 512),
        ("wrn28_10", 640),
        ("small_cnn", 64),
        ("small_cnn28", 64),
        ("resnet50", 2048),
        ("resnext50_32x4d", 2048),
    ],
)
def test_abstract_outputs_and_classifier(name, dim):
    model = create_model(name, num_classes=7, dtype=jnp.bfloat16)
    shape = _input_shape(name)
    variables = _abstract_variables(model, shape)
    assert variables["params"]["classifier"]["kernel"].shape == (dim, 7)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    logits, feats = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros(shape), train=False, return_features=True), variables
    )
    assert logits.shape == (shape[0], 7) and logits.dtype == jnp.float32
    assert feats.shape == (shape[0], dim) and feats.dtype == jnp.float32


def test_resnet32_forward_bfloat16():
    model = resnet32(10, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(2), CIFAR)
    variables = _init(model, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))

    @jax.jit
    def forward(v, x):
        return model.apply(v, x, train=False), model.apply(v, x, train=False, return_features=True)

    logits, (logits2, feats) = forward(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert feats.shape == (2, 64) and feats.dtype == jnp.float32
    np.testing.assert_array_equal(logits, logits2)
    assert bool(jnp.all(jnp.isfinite(logits)))
    # logits are the classifier applied to the returned features
    head = variables["params"]["classifier"]
    np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)


def _intermediate_shapes(model, shape):
    def init():
        x = jnp.zeros(shape)
        return model.init(RNGS, x, train=False, capture_intermediates=True)["intermediates"]

    return jax.tree.map(lambda a: a.shape, jax.eval_shape(init))


def test_imagenet_resnet_layout_is_torchvision_v1_5():
    shapes = _intermediate_shapes(resnext50_32x4d(10), (1, 224, 224, 3))
    assert shapes["Conv_0"]["__call__"] == ((1, 112, 112, 64),)  # 7x7 stem, stride 2
    first = shapes["_Bottleneck_0"]  # after the 3x3 max-pool: 56x56
    assert first["__call__"] == ((1, 56, 56, 256),)
    # First block of stage 2: the 1x1 keeps 56x56, the (grouped) 3x3 strides to 28x28 (v1.5).
    down = shapes["_Bottleneck_3"]
    assert down["Conv_0"]["__call__"] == ((1, 56, 56, 256),)
    assert down["Conv_1"]["__call__"] == ((1, 28, 28, 256),)
    assert shapes["_Bottleneck_15"]["__call__"] == ((1, 7, 7, 2048),)  # 224 -> 7x7
    params = _abstract_variables(resnext50_32x4d(10), IMAGENET_SMALL)["params"]
    # 32 groups of 4 channels (x2 per stage): the 3x3 kernel sees width / 32 inputs.
    assert params["_Bottleneck_3"]["Conv_1"]["kernel"].shape == (3, 3, 8, 256)
    plain = _abstract_variables(resnet50(10), IMAGENET_SMALL)["params"]
    assert plain["_Bottleneck_3"]["Conv_1"]["kernel"].shape == (3, 3, 128, 128)


def test_resnet50_forward_bfloat16():
    model = resnet50(10, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(6), IMAGENET_SMALL)
    variables = _filled_variables(model, x.shape)

    @jax.jit
    def forward(v, x):
        return model.apply(v, x, train=False, return_features=True)

    logits, feats = forward(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert feats.shape == (2, 2048) and feats.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits))) and bool(jnp.all(feats >= 0))  # after ReLU
    head = variables["params"]["classifier"]
    np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)
    # LDAM's cosine classifier replaces the dense layer under the same name.
    cosine = create_model("resnet50", num_classes=10, cosine_scale=30.0)
    assert set(_abstract_variables(cosine, IMAGENET_SMALL)["params"]["classifier"]) == {"kernel"}


def test_zero_init_residual_starts_every_block_as_the_identity():
    kwargs = dict(stage_sizes=(1, 1), num_classes=3, width_per_group=4)  # a small ResNet
    x = jax.random.normal(jax.random.key(7), (2, 32, 32, 3))
    zero = ResNet(**kwargs, zero_init_residual=True)
    variables = _init(zero, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    for i in range(2):  # the last BN of every block starts at gamma = 0, the others at 1
        block = variables["params"][f"_Bottleneck_{i}"]
        np.testing.assert_array_equal(block["BatchNorm_2"]["scale"], 0.0)
        np.testing.assert_array_equal(block["BatchNorm_1"]["scale"], 1.0)
    _, inter = _apply(zero, variables, x, train=False, capture_intermediates=True,
                      mutable=["intermediates"])  # fmt: skip
    block = inter["intermediates"]["_Bottleneck_0"]
    # The residual branch is zero, so the block returns relu(shortcut) = relu(BN(conv(x))).
    np.testing.assert_allclose(
        block["__call__"][0], jax.nn.relu(block["BatchNorm_3"]["__call__"][0]), atol=1e-6
    )
    assert not ResNet(**kwargs).zero_init_residual  # torchvision's default: gamma = 1


def test_batch_stats_updated_only_in_train_mode():
    model = SmallCNN(num_classes=10)
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1)) * 3.0 + 1.0
    variables = _init(model, x)
    train_out, updated = _apply(model, variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updated["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
    full, same = _apply(model, variables, x, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, variables["batch_stats"], same["batch_stats"])
    # eval mode uses running statistics: a sample's logits do not depend on its batch
    one = _apply(model, variables, x[:1], train=False)
    np.testing.assert_allclose(full[:1], one, rtol=1e-5, atol=1e-5)
    assert not np.allclose(train_out, full, atol=1e-3)


def test_wrn_dropout_only_in_train_mode():
    model = WideResNet(depth=10, widen_factor=1, num_classes=3)
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 3))
    variables = _filled_variables(model, x.shape)
    train_fn = jax.jit(partial(model.apply, train=True, mutable=["batch_stats"]))
    out = lambda seed: train_fn(variables, x, rngs={"dropout": jax.random.key(seed, impl="rbg")})[0]
    assert not np.allclose(out(0), out(1))
    np.testing.assert_array_equal(out(0), out(0))
    eval_out = _apply(model, variables, x, train=False)  # no dropout rng needed
    np.testing.assert_array_equal(eval_out, _apply(model, variables, x, train=False))


def test_registry_and_unknown_name():
    assert set(MODELS) == {"resnet32", "resnet110", "se_resnet110", "wrn16_8", "wrn28_10",
                           "resnet50", "resnext50_32x4d", "small_cnn", "small_cnn28"}  # fmt: skip
    assert isinstance(create_model("resnext50_32x4d", num_classes=5), ResNet)
    m = create_model("wrn16_8", num_classes=5, dropout_rate=0.0, cosine_scale=30.0)
    assert isinstance(m, WideResNet) and m.dropout_rate == 0.0 and m.cosine_scale == 30.0
    assert isinstance(create_model("se_resnet110", num_classes=5), SEResNetCifar)
    assert isinstance(create_model("resnet32", num_classes=5), ResNetCifar)
    config = command_line.load_config()  # a name is checked once, by the config
    config.model.name = "resnet33"
    with pytest.raises(ValueError, match="config.model.name must be one of resnet32"):
        names.check_names(config)


def test_batch_statistics_on_a_sharded_batch_are_the_global_batch_ones():
    # The trainer's global view: jit over a batch sharded along "data"; batch norm's
    # mean and variance cover the whole batch (XLA inserts the reductions).
    n_dev = len(jax.devices())
    if n_dev < 2:
        pytest.skip("needs several devices")
    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jax.random.normal(jax.random.key(5), (2 * n_dev, 8, 8, 1))
    x = x * jnp.arange(2 * n_dev)[:, None, None, None]  # shards with different statistics
    model = SmallCNN(num_classes=10)
    variables = _init(model, x)

    def step(v, xb):
        return model.apply(v, xb, train=True, mutable=["batch_stats"])

    logits, stats = jax.jit(step)(
        jax.device_put(variables, NamedSharding(mesh, P())),
        jax.device_put(x, NamedSharding(mesh, P("data"))),
    )
    ref_logits, ref_stats = _apply(model, variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), stats, ref_stats
    )


# --- a real (short) training run ----------------------------------------------------------


def test_small_cnn_trains_on_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # [0, 1]
    labels = digits.target
    rng = np.random.default_rng(0)
    test_idx = np.concatenate(  # stratified: 40 test images per class
        [rng.permutation(np.flatnonzero(labels == c))[:40] for c in range(10)]
    )
    is_test = np.zeros(len(labels), bool)
    is_test[test_idx] = True
    mean, std = images[~is_test].mean(), images[~is_test].std()
    images = ((images - mean) / std)[..., None]
    x_tr, y_tr, x_te, y_te = images[~is_test], labels[~is_test], images[is_test], labels[is_test]

    model = create_model("small_cnn", num_classes=10)
    variables = _init(model, x_tr[:2])
    tx = optax.sgd(0.1)
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, stats, opt_state, xb, yb):
        def loss_fn(p):
            logits, upd = model.apply(
                {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, upd["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    for _ in range(400):
        idx = rng.integers(0, len(y_tr), 64)
        params, stats, opt_state = train_step(params, stats, opt_state, x_tr[idx], y_tr[idx])

    logits = _apply(model, {"params": params, "batch_stats": stats}, x_te, train=False)
    accuracy = float(np.mean(np.asarray(logits.argmax(-1)) == y_te))
    assert accuracy > 0.9, accuracy


def test_cosine_classifier_gives_scaled_cosines():
    model = create_model("small_cnn", num_classes=4, cosine_scale=30.0)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    logits, features = model.apply(variables, x, train=False, return_features=True)
    kernel = np.asarray(variables["params"]["classifier"]["kernel"])
    f = np.asarray(features, np.float64)
    expected = (
        30.0
        * (f / np.linalg.norm(f, axis=1, keepdims=True))
        @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    )
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(np.asarray(logits)) <= 30.0 + 1e-4)
    assert set(variables["params"]["classifier"]) == {"kernel"}
