"""Builders of Meta-LPL and of its two controls (docs/method.md, section 9).

All four hold out a balanced meta set of ``meta.per_class`` images per class
(:mod:`experiments.data.meta_set`):

* ``meta_lpl`` / ``la_meta_lpl``: the signed bounds of :func:`lpjax.lpl_meta_transform`
  learned on meta batches (alone, or after logit adjustment);
* ``la_meta_data``: logit adjustment trained on the training images plus the meta set
  (does the meta data alone explain a gain?);
* ``la_meta_offsets``: logit adjustment, then per-class offsets added to its logits at
  test time, fitted on the meta set (does a learned correction of the prior explain it?).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lpjax
from experiments.methods.method import MetaLearning, Method, MethodInputs

SCOPES = ("classifier", "model")


def _meta_learning(config, inputs: MethodInputs, *, after_la: bool) -> Method:
    meta_config, lpl = config.meta, config.lpl
    meta = lpjax.lpl_meta_transform(
        len(inputs.class_counts),
        max_epsilon=meta_config.max_epsilon,
        step_size=lpl.step_size,
        meta_optimizer=optax.adam(meta_config.learning_rate),
        normalize=lpl.normalize,
    )
    if after_la:
        la = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
        transform = lpjax.chain(la, meta)

        def perturb(logits, labels, theta, where):
            adjusted, _ = la.apply(logits, labels, la.init(), where=where)
            return adjusted + meta.perturbation(adjusted, labels, theta, where=where)

        def get_state(state):
            return state[1]

        def set_state(state, meta_state):
            return (state[0], meta_state)

    else:
        transform = meta

        def perturb(logits, labels, theta, where):
            return logits + meta.perturbation(logits, labels, theta, where=where)

        def get_state(state):
            return state

        def set_state(state, meta_state):
            return meta_state

    return Method(
        transform,
        lpjax.softmax_cross_entropy_with_integer_labels,
        meta=MetaLearning(
            transform=meta,
            perturb=perturb,
            get_state=get_state,
            set_state=set_state,
            scope=meta_config.scope,
            every_steps=meta_config.every_steps,
            start_step=meta_config.start_epoch * inputs.steps_per_epoch,
            batch_size=meta_config.batch_size,
        ),
    )


def meta_lpl(config, inputs: MethodInputs) -> Method:
    return _meta_learning(config, inputs, after_la=False)


def la_meta_lpl(config, inputs: MethodInputs) -> Method:
    return _meta_learning(config, inputs, after_la=True)


def la_meta_data(config, inputs: MethodInputs) -> Method:
    # The meta set is part of the training split (and of its class counts).
    transform = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
    return Method(transform, lpjax.softmax_cross_entropy_with_integer_labels)


def la_meta_offsets(config, inputs: MethodInputs) -> Method:
    transform = lpjax.logit_adjustment_transform(inputs.class_counts, tau=config.la.tau)
    return Method(
        transform,
        lpjax.softmax_cross_entropy_with_integer_labels,
        fit_logit_offsets=fit_logit_offsets,
    )


def fit_logit_offsets(logits: np.ndarray, labels: np.ndarray, *, num_steps: int = 200):
    r"""Per-class offsets :math:`b` minimising the mean cross-entropy of ``logits + b``.

    .. math::
      b = \arg\min_b \frac{1}{M} \sum_i -\log \mathrm{softmax}(u_i + b)_{y_i}

    a convex problem in :math:`b` (C unknowns), solved by L-BFGS from :math:`b = 0`; at the
    optimum the mean predicted probability of every class equals its frequency in
    ``labels``. Only differences of offsets matter; the result has mean 0.

    Args:
      logits: float ``[M, C]`` logits of the meta set.
      labels: int ``[M]`` labels.
      num_steps: L-BFGS iterations.

    Returns:
      float32 ``[C]`` offsets.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)

    def loss(offsets):
        return optax.softmax_cross_entropy_with_integer_labels(logits + offsets, labels).mean()

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        offsets, state = carry
        value, grad = value_and_grad(offsets, state=state)
        updates, state = solver.update(grad, state, offsets, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(offsets, updates), state), None

    offsets = jnp.zeros(logits.shape[1], jnp.float32)
    (offsets, _), _ = jax.lax.scan(step, (offsets, solver.init(offsets)), None, length=num_steps)
    return np.asarray(offsets - offsets.mean())
