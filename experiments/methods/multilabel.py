"""Builders of the multi-label methods: ``build(config, inputs) -> Method``.

Labels are ``[batch, C]`` multi-hot; every loss is element-wise, averaged over the
classes (float32 at least), and ``inputs.class_counts`` counts positive images. The
registry has checked the blocks (e.g. ``lpl.split_rule``) before a builder runs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

import lpjax
from experiments.methods.method import Method, MethodInputs


def _class_mean(elementwise_loss: Callable) -> Callable:
    """``loss_fn(logits, labels, *, where)``: ``elementwise_loss`` averaged over classes.

    In float32 at least (bfloat16 logits are upcast); 0 where ``where`` is False.
    """

    def loss_fn(logits, labels, *, where=None):
        dtype = jnp.promote_types(logits.dtype, jnp.float32)
        loss = elementwise_loss(logits.astype(dtype), labels.astype(dtype)).mean(axis=-1)
        return loss if where is None else jnp.where(where, loss, 0)

    return loss_fn


_BINARY_CROSS_ENTROPY = _class_mean(optax.sigmoid_binary_cross_entropy)


def bce(config, inputs: MethodInputs) -> Method:
    return Method(lpjax.identity(), _BINARY_CROSS_ENTROPY)


def focal(config, inputs: MethodInputs) -> Method:
    gamma = config.focal.gamma
    loss_fn = _class_mean(
        lambda logits, labels: optax.sigmoid_focal_loss(logits, labels, gamma=gamma)
    )
    return Method(lpjax.identity(), loss_fn)


def asl(config, inputs: MethodInputs) -> Method:
    asl = config.asl

    def elementwise(logits, labels):
        return lpjax.asymmetric_loss(
            logits,
            labels,
            gamma_negative=asl.gamma_negative,
            gamma_positive=asl.gamma_positive,
            clip=asl.clip,
            stop_focusing_gradient=asl.stop_focusing_gradient,
        )

    return Method(lpjax.identity(), _class_mean(elementwise))


def lpl_multilabel(config, inputs: MethodInputs) -> Method:
    lpl = config.lpl
    if lpl.split_rule == "mean":
        transform = lpjax.lpl_multilabel_mean_rule_transform(
            epsilon=lpl.epsilon, step_size=lpl.step_size, delta_epsilon=lpl.delta_epsilon
        )
    else:  # longtail
        transform = lpjax.lpl_multilabel_longtail_transform(
            inputs.class_counts,
            num_head_classes=lpl.num_head_classes,
            epsilon=lpl.epsilon,
            step_size=lpl.step_size,
            delta_epsilon=lpl.delta_epsilon,
            head_scale=lpl.head_scale,
        )
    return Method(transform, _BINARY_CROSS_ENTROPY)
