"""Flax (linen) image classifiers for NHWC inputs: CIFAR networks and ImageNet ResNets.

Every model follows the same conventions, which the trainer and ISDA rely on:

* fields ``num_classes`` and ``dtype`` (computation dtype; params stay float32); batch
  norm has no ``axis_name``: the trainer's step is written in the global view
  (:mod:`experiments.step`), where its batch statistics cover the global batch;
* ``__call__(x, *, train, return_features=False)`` returns float32 logits
  ``[B, num_classes]``, or ``(logits, features)`` with ``features`` the float32
  ``[B, D]`` pooled penultimate vector;
* the last layer is ``nn.Dense(num_classes, name="classifier")`` (kernel ``[D, C]``),
  computed in float32 on the float32 features; with ``cosine_scale`` it is LDAM's
  normalized :class:`CosineClassifier` instead;
* BatchNorm momentum 0.9 (PyTorch's 0.1), epsilon 1e-5; convolutions have no bias and
  kaiming-normal (fan_out) init; dropout uses the ``"dropout"`` rng, only when training.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.step import ModelFns

__all__ = [
    "MODELS",
    "CosineClassifier",
    "ResNet",
    "ResNetCifar",
    "SEResNetCifar",
    "SmallCNN",
    "WideResNet",
    "classifier_model_fns",
    "create_model",
    "linen_model_fns",
    "nnx_model_fns",
    "resnet32",
    "resnet50",
    "resnet110",
    "resnext50_32x4d",
    "se_resnet110",
    "small_cnn",
    "small_cnn28",
    "wrn16_8",
    "wrn28_10",
]

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
    features: int,
    kernel: int,
    stride: int,
    dtype: Any,
    name: str | None = None,
    *,
    groups: int = 1,
    torch_padding: bool = False,
):
    """Bias-free conv; ``torch_padding`` pads ``kernel // 2`` on every side (PyTorch's
    ``padding=k // 2``), where ``"SAME"`` would pad a stride-2 conv on even inputs only
    at the end."""
    if torch_padding:
        padding = ((kernel // 2, kernel // 2),) * 2
    else:
        padding = "SAME" if kernel > 1 else "VALID"
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        feature_group_count=groups,
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        name=name,
    )


def _bn(
    train: bool,
    dtype: Any,
    name: str | None = None,
    scale_init: Callable = nn.initializers.ones,
):
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        scale_init=scale_init,
        name=name,
    )


class CosineClassifier(nn.Module):
    """``scale * cos(features, w_c)``: LDAM's normalized last layer (Cao et al., NeurIPS 2019).

    Logits lie in ``[-scale, scale]``; LDAM's margins are meant for this layer.
    """

    num_classes: int
    scale: float

    @nn.compact
    def __call__(self, features):
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (features.shape[-1], self.num_classes)
        )
        unit_features = features / jnp.maximum(
            jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-12
        )
        unit_kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
        return self.scale * unit_features @ unit_kernel


def _head(
    features: jnp.ndarray,
    num_classes: int,
    return_features: bool,
    cosine_scale: float | None,
):
    """Float32 classifier on the pooled features (shared by all models)."""
    features = features.astype(jnp.float32)
    if cosine_scale is None:
        logits = nn.Dense(num_classes, name="classifier")(features)
    else:
        logits = CosineClassifier(num_classes, cosine_scale, name="classifier")(features)
    return (logits, features) if return_features else logits


class _SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018): pool, FC-ReLU-FC-sigmoid."""

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2))
        s = nn.relu(nn.Dense(max(c // self.reduction, 1), dtype=self.dtype, name="fc1")(s))
        s = nn.sigmoid(nn.Dense(c, dtype=self.dtype, name="fc2")(s))
        return x * s[:, None, None, :]


class _BasicBlock(nn.Module):
    """Post-activation basic block with option-A (zero-padded identity) shortcut."""

    features: int
    stride: int
    dtype: Any
    se_reduction: int | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        bn = partial(_bn, train, self.dtype)
        y = nn.relu(bn()(_conv(self.features, 3, self.stride, self.dtype)(x)))
        y = bn()(_conv(self.features, 3, 1, self.dtype)(y))
        if self.se_reduction is not None:
            y = _SqueezeExcite(self.se_reduction, self.dtype)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            # Option A: stride-2 subsampling, then zero-pad the new channels on both sides.
            shortcut = x[:, :: self.stride, :: self.stride, :]
            pad = self.features - x.shape[-1]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
        return nn.relu(y + shortcut)


class ResNetCifar(nn.Module):
    """CIFAR ResNet, 6n+2 layers, widths 16/32/64, option-A shortcuts.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2).
    ResNet-32 has 0.46M parameters and ResNet-110 1.7M (10 classes). Features: D = 64.
    ``se_reduction`` (None here) adds squeeze-and-excitation gates; see ``SEResNetCifar``.
    """

    depth: int
    num_classes: int
    dtype: Any = jnp.float32
    cosine_scale: float | None = None  # a CosineClassifier of this scale instead of nn.Dense
    se_reduction: int | None = None

    @nn.compact
    def __call__(self, x, *, train: bool, return_features: bool = False):
        if (self.depth - 2) % 6 != 0:
            raise ValueError(f"ResNetCifar depth must be 6n+2, got {self.depth}")
        n = (self.depth - 2) // 6
        x = x.astype(self.dtype)
        x = _conv(16, 3, 1, self.dtype)(x)
        x = nn.relu(_bn(train, self.dtype)(x))
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = _BasicBlock(width, stride, self.dtype, self.se_reduction)(x, train)
        return _head(jnp.mean(x, axis=(1, 2)), self.num_classes, return_features, self.cosine_scale)


class SEResNetCifar(ResNetCifar):
    """CIFAR ResNet with a squeeze-and-excitation gate (reduction 16) on every residual branch.

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, on He et al.'s CIFAR ResNet.
    """

    se_reduction: int | None = 16


class _WideBlock(nn.Module):
    """Pre-activation wide basic block (BN-ReLU-conv, dropout between the two convs)."""

    features: int  # output channels
    stride: int  # of the first convolution (and of the shortcut)
    dropout_rate: float  # between the two convolutions, in training only
    dtype: Any  # computation dtype

    @nn.compact
    def __call__(self, x, train: bool):
        bn = partial(_bn, train, self.dtype)
        equal_in_out = self.stride == 1 and x.shape[-1] == self.features
        o = nn.relu(bn()(x))
        y = _conv(self.features, 3, self.stride, self.dtype)(o)
        y = nn.relu(bn()(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = _conv(self.features, 3, 1, self.dtype)(y)
        # As in the reference code: the 1x1 projection acts on the pre-activated input.
        shortcut = x if equal_in_out else _conv(self.features, 1, self.stride, self.dtype)(o)
        return y + shortcut


class WideResNet(nn.Module):
    """Wide residual network WRN-depth-k, widths 16k/32k/64k, 1x1 projection shortcuts.

    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016. WRN-16-8 has 11.0M and
    WRN-28-10 36.5M parameters (10 classes). Features: D = 64 * widen_factor.
    """

    depth: int
    widen_factor: int
    num_classes: int
    dropout_rate: float = 0.3
    dtype: Any = jnp.float32
    cosine_scale: float | None = None  # a CosineClassifier of this scale instead of nn.Dense

    @nn.compact
    def __call__(self, x, *, train: bool, return_features: bool = False):
        if (self.depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {self.depth}")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        x = _conv(16, 3, 1, self.dtype)(x.astype(self.dtype))
        for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = _WideBlock(width, stride, self.dropout_rate, self.dtype)(x, train)
        x = nn.relu(_bn(train, self.dtype)(x))
        return _head(jnp.mean(x, axis=(1, 2)), self.num_classes, return_features, self.cosine_scale)


class SmallCNN(nn.Module):
    """Tiny CNN: three 3x3 conv-BN-ReLU layers (16, 32, 64 channels), global average pool,
    dense. About 24k parameters, not from a paper. Features: D = 64.

    ``strides`` are the three layers' strides: ``(1, 1, 2)`` (``small_cnn``) for 8x8 digits;
    ``(2, 1, 2)`` (``small_cnn28``) for 28x28 Fashion-MNIST, which it sees at 14x14 and 7x7
    (about 21 ms for a training step of 128 images on two CPU cores).
    """

    num_classes: int
    dtype: Any = jnp.float32
    cosine_scale: float | None = None  # a CosineClassifier of this scale instead of nn.Dense
    strides: tuple[int, int, int] = (1, 1, 2)

    @nn.compact
    def __call__(self, x, *, train: bool, return_features: bool = False):
        x = x.astype(self.dtype)
        for width, stride in zip((16, 32, 64), self.strides, strict=True):
            x = _conv(width, 3, stride, self.dtype)(x)
            x = nn.relu(_bn(train, self.dtype)(x))
        return _head(jnp.mean(x, axis=(1, 2)), self.num_classes, return_features, self.cosine_scale)


class _Bottleneck(nn.Module):
    """Bottleneck block v1.5 (torchvision): 1x1, 3x3 (stride, groups), 1x1 (x4); projection
    shortcut (1x1 conv + BN) where the shape changes."""

    planes: int  # the block's base width (its output is 4 x planes channels)
    stride: int  # of the 3x3 convolution (and of the projection)
    groups: int  # grouped 3x3 convolution (ResNeXt: 32)
    width_per_group: int  # channels per group (ResNeXt-50 32x4d: 4)
    dtype: Any  # computation dtype
    zero_init_residual: bool  # the last BN's scale starts at 0 (torchvision's option)

    @nn.compact
    def __call__(self, x, train: bool):
        bn = partial(_bn, train, self.dtype)
        conv = partial(_conv, dtype=self.dtype, torch_padding=True)
        width = self.planes * self.width_per_group // 64 * self.groups
        out_features = 4 * self.planes
        y = nn.relu(bn()(conv(width, 1, 1)(x)))
        y = nn.relu(bn()(conv(width, 3, self.stride, groups=self.groups)(y)))
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = bn(scale_init=last_scale)(conv(out_features, 1, 1)(y))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:
            shortcut = bn()(conv(out_features, 1, self.stride)(x))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ImageNet ResNet / ResNeXt with bottleneck blocks, torchvision's v1.5 layout.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1), with
    the stride of a downsampling block on its 3x3 conv rather than its first 1x1 (as in
    torchvision and Goyal et al. 2017); ResNeXt's grouped 3x3 convs from Xie et al.,
    "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017. Stem: 7x7
    conv (stride 2), BN, ReLU, 3x3 max-pool (stride 2); stages of widths 64/128/256/512
    (x4 at the block outputs); paddings as PyTorch's, so a 224x224 input gives 7x7 maps.
    With 1000 classes ResNet-50 has 25,557,032 parameters and ResNeXt-50 (32x4d)
    25,028,904, torchvision's counts. Features: D = 2048.

    ``zero_init_residual`` starts the last BN scale (gamma) of every block at 0, so each
    block begins as the identity (Goyal et al., "Accurate, Large Minibatch SGD", 2017;
    torchvision's ``zero_init_residual``); off by default, as in torchvision.
    """

    stage_sizes: tuple[int, ...]
    num_classes: int
    groups: int = 1
    width_per_group: int = 64
    dtype: Any = jnp.float32
    cosine_scale: float | None = None  # a CosineClassifier of this scale instead of nn.Dense
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool, return_features: bool = False):
        x = _conv(64, 7, 2, self.dtype, torch_padding=True)(x.astype(self.dtype))
        x = nn.relu(_bn(train, self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for i in range(num_blocks):
                x = _Bottleneck(
                    planes=64 * 2**stage,
                    stride=2 if stage > 0 and i == 0 else 1,
                    groups=self.groups,
                    width_per_group=self.width_per_group,
                    dtype=self.dtype,
                    zero_init_residual=self.zero_init_residual,
                )(x, train)
        return _head(jnp.mean(x, axis=(1, 2)), self.num_classes, return_features, self.cosine_scale)


def resnet32(num_classes: int, **kwargs) -> ResNetCifar:
    return ResNetCifar(depth=32, num_classes=num_classes, **kwargs)


def resnet110(num_classes: int, **kwargs) -> ResNetCifar:
    return ResNetCifar(depth=110, num_classes=num_classes, **kwargs)


def se_resnet110(num_classes: int, **kwargs) -> SEResNetCifar:
    return SEResNetCifar(depth=110, num_classes=num_classes, **kwargs)


def wrn16_8(num_classes: int, **kwargs) -> WideResNet:
    return WideResNet(depth=16, widen_factor=8, num_classes=num_classes, **kwargs)


def wrn28_10(num_classes: int, **kwargs) -> WideResNet:
    return WideResNet(depth=28, widen_factor=10, num_classes=num_classes, **kwargs)


def resnet50(num_classes: int, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes, **kwargs)


def resnext50_32x4d(num_classes: int, **kwargs) -> ResNet:
    return ResNet(
        stage_sizes=(3, 4, 6, 3), num_classes=num_classes, groups=32, width_per_group=4, **kwargs
    )


def small_cnn(num_classes: int, **kwargs) -> SmallCNN:
    return SmallCNN(num_classes=num_classes, **kwargs)


def small_cnn28(num_classes: int, **kwargs) -> SmallCNN:
    return SmallCNN(num_classes=num_classes, strides=(2, 1, 2), **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet32": resnet32,
    "resnet110": resnet110,
    "se_resnet110": se_resnet110,
    "wrn16_8": wrn16_8,
    "wrn28_10": wrn28_10,
    "resnet50": resnet50,
    "resnext50_32x4d": resnext50_32x4d,
    "small_cnn": small_cnn,
    "small_cnn28": small_cnn28,
}


def linen_model_fns(
    module: nn.Module, *, input_shape: tuple[int, ...], transform_extras: bool = False
) -> ModelFns:
    """:class:`~experiments.step.ModelFns` of a Flax linen module called as
    ``module(x, train=...)``.

    Every variable collection other than ``"params"`` is the model state (mutable in
    training); the ``"dropout"`` rng gets the step's key. The transform gets no extras,
    or with ``transform_extras`` (a model of this file, called with
    ``return_features=True``) ``features`` (the pooled penultimate vector) and
    ``classifier`` (the last layer's parameters), which ISDA uses and the other
    transforms ignore.
    """

    def init(key):
        variables = module.init(
            {"params": key, "dropout": key}, jnp.zeros(input_shape, jnp.float32), train=False
        )
        params = variables.pop("params")
        return params, dict(variables)

    def apply(params, model_state, inputs, key):
        output, updates = module.apply(
            {"params": params, **model_state},
            inputs,
            train=True,
            mutable=list(model_state),
            rngs={"dropout": key},
            **({"return_features": True} if transform_extras else {}),
        )
        if not transform_extras:
            return output, dict(updates), {}
        logits, features = output
        return logits, dict(updates), {"features": features, "classifier": params["classifier"]}

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


def classifier_model_fns(module: nn.Module, *, input_shape: tuple[int, ...]) -> ModelFns:
    """:func:`linen_model_fns` of a model of this file, with ISDA's inputs (the trainer's)."""
    return linen_model_fns(module, input_shape=input_shape, transform_extras=True)


def create_model(
    name: str,
    *,
    num_classes: int,
    dtype: Any = jnp.float32,
    **kwargs,
) -> nn.Module:
    """Build a registered model by name (one of ``MODELS``, as experiments.config checks)."""
    return MODELS[name](num_classes=num_classes, dtype=dtype, **kwargs)
