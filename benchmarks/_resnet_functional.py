"""A flax-free CIFAR ResNet (6n+2 layers, option-A shortcuts) for the CPU-step experiments.

The same network as ``experiments.models.ResNetCifar`` (conv-BN-ReLU basic blocks, widths
16/32/64, zero-padded identity shortcuts, global average pool, dense classifier), written
with ``lax.conv_general_dilated`` so that the layout (NHWC or NCHW) and the batch-norm
formulation can be switched:

* ``bn="autodiff"``: batch norm as plain jnp code (two-pass mean/variance), differentiated
  by JAX, as flax's ``nn.BatchNorm`` is;
* ``bn="fused"``: batch norm + (optional) ReLU as one ``jax.custom_vjp`` with the
  closed-form backward ``dx = g * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))``, which
  needs two reductions instead of autodiff's longer chain;
* ``bn="none"``: no normalisation (a diagnostic: what batch norm costs at most).

Only for benchmarks; the trainer uses experiments/models.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

EPS = 1e-5
MOMENTUM = 0.9


def _channel_axis(layout: str) -> int:
    return 3 if layout == "NHWC" else 1


def _reduce_axes(layout: str) -> tuple[int, ...]:
    return (0, 1, 2) if layout == "NHWC" else (0, 2, 3)


def _bshape(layout: str, c: int) -> tuple[int, ...]:
    return (1, 1, 1, c) if layout == "NHWC" else (1, c, 1, 1)


def init_params(key, *, depth=32, num_classes=10, in_channels=3, layout="NHWC"):
    """Parameters (conv kernels, BN scale/bias, classifier) and BN running statistics."""
    n = (depth - 2) // 6
    keys = iter(jax.random.split(key, 6 * n + 4))

    def conv(cin, cout):
        std = np.sqrt(2.0 / (9 * cout))  # kaiming normal, fan_out
        w = std * jax.random.normal(next(keys), (3, 3, cin, cout), jnp.float32)
        return w if layout == "NHWC" else w.transpose(3, 2, 0, 1)  # HWIO or OIHW

    def bn(c):
        params = {"scale": jnp.ones(c), "bias": jnp.zeros(c)}
        return params, {"mean": jnp.zeros(c), "var": jnp.ones(c)}

    params, stats = {"stem": {"conv": conv(in_channels, 16)}}, {}
    params["stem"]["bn"], stats["stem"] = bn(16)
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            name = f"s{stage}b{i}"
            p, s = {"conv0": conv(cin, width), "conv1": conv(width, width)}, {}
            p["bn0"], s["bn0"] = bn(width)
            p["bn1"], s["bn1"] = bn(width)
            params[name], stats[name] = p, s
            cin = width
    bound = 1.0 / np.sqrt(64)
    params["classifier"] = {
        "kernel": jax.random.uniform(next(keys), (64, num_classes), jnp.float32, -bound, bound),
        "bias": jnp.zeros(num_classes),
    }
    return params, stats


def _conv(x, w, stride, layout):
    dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
    return lax.conv_general_dilated(
        x, w.astype(x.dtype), (stride, stride), ((1, 1), (1, 1)), dimension_numbers=dn
    )


def _bn_autodiff(x, p, layout, relu):
    axes = _reduce_axes(layout)
    xf = x.astype(jnp.float32)
    mean = xf.mean(axes)
    var = jnp.square(xf - mean.reshape(_bshape(layout, mean.size))).mean(axes)
    shape = _bshape(layout, mean.size)
    y = (xf - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + EPS)
    y = y * p["scale"].reshape(shape) + p["bias"].reshape(shape)
    y = jnp.maximum(y, 0) if relu else y
    return y.astype(x.dtype), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_fused_core(x, scale, bias, layout, relu):
    """``(y, mean, var)``; mean and var are for the running averages (no gradient)."""
    y, mean, var, _ = _bn_fused_fwd_impl(x, scale, bias, layout, relu)
    return y, mean, var


def _bn_fused_fwd_impl(x, scale, bias, layout, relu):
    axes = _reduce_axes(layout)
    shape = _bshape(layout, scale.size)
    xf = x.astype(jnp.float32)
    mean = xf.mean(axes)
    var = jnp.maximum(jnp.square(xf).mean(axes) - jnp.square(mean), 0.0)  # one pass
    rstd = lax.rsqrt(var + EPS)
    y = (xf - mean.reshape(shape)) * (rstd * scale).reshape(shape) + bias.reshape(shape)
    if relu:
        y = jnp.maximum(y, 0)
    return y.astype(x.dtype), mean, var, rstd


def _bn_fused_fwd(x, scale, bias, layout, relu):
    y, mean, var, rstd = _bn_fused_fwd_impl(x, scale, bias, layout, relu)
    return (y, mean, var), (x, y, mean, rstd, scale)


def _bn_fused_bwd(layout, relu, res, cotangents):
    x, y, mean, rstd, scale = res
    dy = cotangents[0].astype(jnp.float32)  # mean and var only feed the running averages
    axes = _reduce_axes(layout)
    shape = _bshape(layout, scale.size)
    if relu:
        dy = jnp.where(y > 0, dy, 0.0)
    xhat = (x.astype(jnp.float32) - mean.reshape(shape)) * rstd.reshape(shape)
    dbias = dy.sum(axes)
    dscale = (dy * xhat).sum(axes)
    count = x.size // scale.size
    dx = (scale * rstd).reshape(shape) * (
        dy - (dbias / count).reshape(shape) - xhat * (dscale / count).reshape(shape)
    )
    return dx.astype(x.dtype), dscale, dbias


_bn_fused_core.defvjp(_bn_fused_fwd, _bn_fused_bwd)


def _bn_fused(x, p, layout, relu):
    return _bn_fused_core(x, p["scale"], p["bias"], layout, relu)


def _norm(x, p, s, *, bn, layout, relu):
    """Batch norm (+ReLU) in training mode; returns output and updated running stats."""
    if bn == "none":
        y = x + p["bias"].reshape(_bshape(layout, p["bias"].size)).astype(x.dtype)
        return (jnp.maximum(y, 0) if relu else y), s
    fn = _bn_fused if bn == "fused" else _bn_autodiff
    y, mean, var = fn(x, p, layout, relu)
    new_s = {
        "mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * lax.stop_gradient(mean),
        "var": MOMENTUM * s["var"] + (1 - MOMENTUM) * lax.stop_gradient(var),
    }
    return y, new_s


def _shortcut(x, width, stride, layout):
    cax = _channel_axis(layout)
    if stride == 1 and x.shape[cax] == width:
        return x
    if layout == "NHWC":
        x = x[:, ::stride, ::stride, :]
    else:
        x = x[:, :, ::stride, ::stride]
    pad = width - x.shape[cax]
    pads = [(0, 0)] * 4
    pads[cax] = (pad // 2, pad - pad // 2)
    return jnp.pad(x, pads)


def apply(params, stats, x, *, depth=32, layout="NHWC", bn="autodiff", dtype=jnp.float32):
    """Training-mode forward pass: ``(logits float32 [B, C], new running stats)``.

    ``x`` is NHWC float32 whatever ``layout`` is; it is transposed once at the input.
    """
    n = (depth - 2) // 6
    norm = functools.partial(_norm, bn=bn, layout=layout)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    x = x.astype(dtype)
    new_stats = {}
    x = _conv(x, params["stem"]["conv"], 1, layout)
    x, new_stats["stem"] = norm(x, params["stem"]["bn"], stats["stem"], relu=True)
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            name = f"s{stage}b{i}"
            p, s = params[name], stats[name]
            stride = 2 if stage > 0 and i == 0 else 1
            y = _conv(x, p["conv0"], stride, layout)
            y, s0 = norm(y, p["bn0"], s["bn0"], relu=True)
            y = _conv(y, p["conv1"], 1, layout)
            y, s1 = norm(y, p["bn1"], s["bn1"], relu=False)
            x = jnp.maximum(y + _shortcut(x, width, stride, layout), 0)
            new_stats[name] = {"bn0": s0, "bn1": s1}
    features = x.astype(jnp.float32).mean(axis=(1, 2) if layout == "NHWC" else (2, 3))
    logits = features @ params["classifier"]["kernel"] + params["classifier"]["bias"]
    return logits, new_stats
