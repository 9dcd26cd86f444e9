r"""Meta-LPL: LPL whose signs and bounds are learned by a look-ahead meta-gradient.

The journal version of LPL determines "the regular or irregular augmentation for each
class" by meta-learning. lpjax's formulation (docs/method.md, section 9): a signed
per-class bound :math:`\theta_c = \epsilon_{\max} \tanh(\phi_c)` -- its sign is the class's sign
(+1 maximise, -1 minimise), its size the bound -- learned on a small balanced meta set
by differentiating the meta loss of a model looked ahead by one SGD step, as in
Meta-Weight-Net (Shu et al., NeurIPS 2019) and MetaSAug (Li et al., CVPR 2021).

Two pieces, both free of any model library: :func:`lpl_meta_transform` (the transform:
``apply`` perturbs with the current :math:`\theta`, ``perturbation`` gives the
perturbation as a function of :math:`\theta` for the meta-gradient, ``update`` takes one
meta step) and :func:`lookahead_meta_gradient` (the look-ahead meta-gradient of any
training loss with respect to any hyperparameter, given plain functions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from lpjax import _batch, _checks, _solver

# |phi_c| is kept below this: tanh(3) = 0.995, so theta reaches 99.5% of max_epsilon
# while the gradient through tanh (1 - tanh^2 >= 0.01) never vanishes.
MAX_ABS_PHI = 3.0


class MetaLplState(NamedTuple):
    """State of :func:`lpl_meta_transform`.

    Attributes:
      phi: float32 ``[num_classes]``; the signed bounds are
        ``theta = max_epsilon * tanh(phi)``.
      opt_state: the meta optimizer's state for ``phi``.

    Example::

      >>> import optax, lpjax
      >>> meta = lpjax.lpl_meta_transform(3, max_epsilon=1.0, step_size=0.1,
      ...                                 meta_optimizer=optax.adam(1e-2))
      >>> meta.init().phi
      Array([0., 0., 0.], dtype=float32)
    """

    phi: jax.Array
    opt_state: optax.OptState


class MetaLplTransform(NamedTuple):
    """A :class:`lpjax.LogitTransform` (``init``, ``apply``) with Meta-LPL's extra functions.

    Attributes:
      init: ``init() -> MetaLplState`` (``phi = 0``: no perturbation).
      apply: ``apply(logits, labels, state, *, where=None, axis_name=None, theta=None,
        **extra_args) -> (logits + delta, state)``, ``delta = perturbation(logits, labels,
        theta(state))`` under ``stop_gradient``; given ``theta`` (``[num_classes]``),
        ``delta = perturbation(logits, labels, theta)``, differentiable in ``theta``: the
        training loss of a look-ahead (``update``), also through :func:`lpjax.chain`,
        which passes ``theta=`` on to its members.
      perturbation: ``perturbation(logits, labels, theta, *, where=None, axis_name=None)
        -> delta``, ``delta_i = theta_{y_i} v_i`` for any ``[num_classes]`` ``theta``
        (``v`` constant, see :func:`lpl_meta_transform`): differentiable in ``theta``,
        not in the logits; use it inside the training loss given to ``update``.
      theta: ``theta(state) -> [num_classes]`` signed bounds.
      update: ``update(state, train_loss_fn, meta_loss_fn, params, *, learning_rate)
        -> (state, meta_loss)``: one meta step (see :func:`lpl_meta_transform`).

    Example::

      >>> import jax.numpy as jnp, optax, lpjax
      >>> meta = lpjax.lpl_meta_transform(3, max_epsilon=1.0, step_size=0.1,
      ...                                 meta_optimizer=optax.adam(1e-2))
      >>> state = meta.init()
      >>> perturbed, state = meta.apply(jnp.zeros((2, 3)), jnp.array([0, 1]), state)
      >>> meta.theta(state)  # phi = 0: no perturbation yet
      Array([0., 0., 0.], dtype=float32)
    """

    init: Callable[[], MetaLplState]
    apply: Callable[..., tuple[jax.Array, MetaLplState]]
    perturbation: Callable[..., jax.Array]
    theta: Callable[[MetaLplState], jax.Array]
    update: Callable[..., tuple[MetaLplState, jax.Array]]


def lookahead_meta_gradient(
    train_loss_fn: Callable[[Any, Any], jax.Array],
    meta_loss_fn: Callable[[Any], jax.Array],
    params: Any,
    hyperparameters: Any,
    *,
    learning_rate: float | jax.typing.ArrayLike,
) -> tuple[jax.Array, Any]:
    r"""The one-step look-ahead meta-gradient of ``meta_loss_fn`` in ``hyperparameters``.

    .. math::
      w' = w - \eta\, \nabla_w L_{\mathrm{train}}(w, h), \qquad
      \text{returns } \big(L_{\mathrm{meta}}(w'),\ \nabla_h L_{\mathrm{meta}}(w')\big)

    by automatic differentiation through the look-ahead step (second order in ``w``).
    ``params`` may be the whole model or a part of it (e.g. only the classifier, the
    features computed outside under ``stop_gradient``): the look-ahead moves exactly
    what ``train_loss_fn`` differentiates.

    Data parallelism: in the global view (``jax.jit`` over sharded batches) nothing is
    needed. Under ``jax.shard_map`` (with its default ``check_vma=True``), let both
    losses return this device's share of the global mean (sum over the device's
    samples divided by the global count): ``params`` and ``hyperparameters`` are
    replicated, so JAX sums their gradients over the devices itself, and the result
    equals one device's on the global batch. The returned meta loss is then this
    device's share (``lax.psum`` it to report it).

    Args:
      train_loss_fn: ``(params, hyperparameters) -> scalar`` training loss.
      meta_loss_fn: ``params -> scalar`` loss on the meta batch.
      params: a pytree of float arrays.
      hyperparameters: a pytree of float arrays (for Meta-LPL, ``phi``).
      learning_rate: :math:`\eta`, the look-ahead step (the training learning rate).

    Returns:
      ``(meta_loss, meta_gradient)``, the gradient shaped like ``hyperparameters``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> # Train loss (w - h)^2, meta loss w^2: looking ahead from w = 1 with step 0.25
      >>> # gives w' = 1 - 0.5 (1 - h), so d/dh w'^2 = 2 w' * 0.5 = 0.5 at h = 0.
      >>> loss, grad = lpjax.lookahead_meta_gradient(
      ...     lambda w, h: (w - h) ** 2, lambda w: w**2, jnp.array(1.0), jnp.array(0.0),
      ...     learning_rate=0.25)
      >>> float(loss), float(grad)
      (0.25, 0.5)

    References:
      J. Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping for Sample
      Weighting", NeurIPS 2019; S. Li et al., "MetaSAug: Meta Semantic Augmentation
      for Long-Tailed Visual Recognition", CVPR 2021.
    """

    def meta_objective(hyperparameters):
        grads = jax.grad(train_loss_fn)(params, hyperparameters)
        lookahead = jax.tree.map(lambda w, g: w - learning_rate * g, params, grads)
        return meta_loss_fn(lookahead)

    return jax.value_and_grad(meta_objective)(hyperparameters)


def _theta(phi: jax.Array, max_epsilon: float) -> jax.Array:
    return max_epsilon * jnp.tanh(phi)


def lpl_meta_transform(
    num_classes: int,
    *,
    max_epsilon: float,
    step_size: float,
    meta_optimizer: optax.GradientTransformation,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> MetaLplTransform:
    r"""Meta-LPL: LPL with per-class signed bounds learned on a meta set (docs/method.md 9).

    **Perturbation.** With :math:`\theta_c = \epsilon_{\max} \tanh(\phi_c)`, the inner
    solver (:func:`lpjax.lpl_perturbation`) runs with :math:`s_c = \mathrm{sign}
    (\theta_c)` and :math:`\epsilon_c = |\theta_c|`, giving :math:`\delta^{\rm PGD}_c`,
    and the perturbation is written linear in :math:`\theta`:

    .. math::
      \delta_c = \theta_c v_c, \qquad v_c = \mathrm{sg}(\delta^{\rm PGD}_c / \theta_c),

    where for :math:`|\theta_c| < \alpha` (the solver takes no step) :math:`v_c` is
    its one-step direction at :math:`u` (:math:`g_c`, or :math:`g_c / \|g_c\|` with
    ``normalize``). So :math:`\delta_c` is the solver's perturbation wherever it takes a
    step, a fraction :math:`|\theta_c| / \alpha` of one step below that (continuous in
    :math:`\theta`, and :math:`0` at :math:`\theta_c = 0`), and at :math:`\phi = 0` the
    meta-gradient is already informative. ``apply`` adds :math:`\delta` to the logits
    under ``stop_gradient`` (the training gradient treats it as a constant).

    **Meta step** (``update``). Given ``train_loss_fn(params, theta)`` (the training loss
    with the logits perturbed by ``perturbation(..., theta)``) and ``meta_loss_fn(params)``
    (plain cross-entropy on a balanced meta batch), :func:`lookahead_meta_gradient` gives
    :math:`\nabla_\phi L_{\mathrm{meta}}(w - \eta \nabla_w L_{\mathrm{train}}(w,
    \theta(\phi)))`; ``meta_optimizer`` (e.g. ``optax.adam(1e-2)``) updates :math:`\phi`,
    which is then kept in :math:`[-3, 3]` (where tanh still has a gradient). Every
    class's bound stays below :math:`\epsilon_{\max}`, so :math:`K_c < \epsilon_{\max} /
    \alpha` steps, which must not exceed ``max_inner_steps`` (checked here).

    ``phi = 0`` is "no perturbation"; chained after
    :func:`lpjax.logit_adjustment_transform` it starts as exactly logit adjustment.

    Args:
      num_classes: C.
      max_epsilon: :math:`\epsilon_{\max} > 0`, the largest bound.
      step_size: the solver's step :math:`\alpha > 0`.
      meta_optimizer: an optax optimizer for ``phi``.
      normalize: the solver's step rule: the paper's (False) or the unit step (True).
      max_inner_steps: the solver's cap on the steps of a class.

    Returns:
      A :class:`MetaLplTransform` with state :class:`MetaLplState`.

    Example -- one meta step for a linear classifier::

      >>> import jax, jax.numpy as jnp, optax, lpjax
      >>> meta = lpjax.lpl_meta_transform(
      ...     3, max_epsilon=1.0, step_size=0.1, meta_optimizer=optax.adam(0.1))
      >>> state = meta.init()
      >>> x, y = jax.random.normal(jax.random.key(0), (8, 4)), jnp.arange(8) % 3
      >>> x_meta, y_meta = x[:3], jnp.arange(3)
      >>> w = jnp.zeros((4, 3))
      >>> def train_loss(w, theta):
      ...     logits = x @ w
      ...     perturbed = logits + meta.perturbation(logits, y, theta)
      ...     return lpjax.softmax_cross_entropy_with_integer_labels(perturbed, y).mean()
      >>> def meta_loss(w):
      ...     return lpjax.softmax_cross_entropy_with_integer_labels(x_meta @ w, y_meta).mean()
      >>> state, loss = meta.update(state, train_loss, meta_loss, w, learning_rate=0.1)
      >>> meta.theta(state).shape
      (3,)

    References:
      M. Li, F. Su, O. Wu, J. Zhang, "Class-Level Logit Perturbation", IEEE TNNLS 2023
      (arXiv:2209.05668): "meta-learning is also leveraged to determine the regular or
      irregular augmentation for each class"; the formulation is lpjax's.
    """
    num_classes = int(num_classes)
    _checks.check_positive_scalar("max_epsilon", max_epsilon)
    _checks.check_positive_scalar("step_size", step_size)
    _solver.check_inner_steps(jnp.asarray([max_epsilon]), step_size, max_inner_steps)

    def theta(state: MetaLplState) -> jax.Array:
        return _theta(state.phi, max_epsilon)

    def init() -> MetaLplState:
        phi = jnp.zeros((num_classes,), jnp.float32)
        return MetaLplState(phi, meta_optimizer.init(phi))

    def check(logits, labels, where, axis_name, theta_values):
        _checks.require_labels(labels, "lpl_meta_transform")
        _, classes = _checks.check_batch(logits, labels, where, axis_name)
        _checks.check_num_classes(classes, num_classes)
        _checks.check_class_vector("theta", theta_values, num_classes)

    def apply(logits, labels, state, *, where=None, axis_name=None, theta=None, **extra_args):
        del extra_args
        if not isinstance(state, MetaLplState):
            raise TypeError(f"expected a MetaLplState (from init()); got {type(state)}.")
        if theta is None:  # the state's bounds, a constant to the training gradient
            delta = perturbation(
                logits,
                labels,
                lax.stop_gradient(_theta(state.phi, max_epsilon)),
                where=where,
                axis_name=axis_name,
            )
            return jnp.asarray(logits) + lax.stop_gradient(delta), state
        # Given bounds (a meta step's look-ahead): the perturbation stays linear in them.
        delta = perturbation(logits, labels, theta, where=where, axis_name=axis_name)
        return jnp.asarray(logits) + delta, state

    def perturbation(logits, labels, theta_values, *, where=None, axis_name=None):
        lead, logits, flat = _batch.flatten_leading(logits, labels=labels, where=where)
        delta = _perturbation(logits, flat["labels"], theta_values, flat["where"], axis_name)
        return _batch.unflatten_leading(lead, delta)

    def _perturbation(logits, labels, theta_values, where, axis_name):
        check(logits, labels, where, axis_name, theta_values)
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        theta_values = jnp.asarray(theta_values)
        fixed_theta = lax.stop_gradient(theta_values)
        delta = _solver.solve(
            logits,
            labels,
            jnp.sign(fixed_theta),
            jnp.abs(fixed_theta),
            step_size,
            where,
            axis_name=axis_name,
            max_inner_steps=max_inner_steps,
            normalize=normalize,
        )
        # One solver step of length 1 along every class's direction: v_c where K_c = 0.
        ones = jnp.ones((num_classes,), jnp.float32)
        direction = _solver.solve(
            logits,
            labels,
            ones,
            ones,
            1.0,
            where,
            axis_name=axis_name,
            max_inner_steps=1,
            normalize=normalize,
        )
        steps = _solver.num_inner_steps(jnp.abs(fixed_theta), step_size, max_inner_steps)
        valid = _batch.valid_samples(labels, num_classes, where)
        sample_theta = jnp.where(valid, _batch.class_values(theta_values, labels), 0)[:, None]
        took_steps = (valid & (_batch.class_values(steps, labels) > 0))[:, None]
        divisor = jnp.where(took_steps, lax.stop_gradient(sample_theta), 1)
        v = lax.stop_gradient(jnp.where(took_steps, delta / divisor, direction))
        return (sample_theta * v.astype(sample_theta.dtype)).astype(delta.dtype)

    def update(state, train_loss_fn, meta_loss_fn, params, *, learning_rate):
        if not isinstance(state, MetaLplState):
            raise TypeError(f"expected a MetaLplState (from init()); got {type(state)}.")
        meta_loss, phi_grad = lookahead_meta_gradient(
            lambda params, phi: train_loss_fn(params, _theta(phi, max_epsilon)),
            meta_loss_fn,
            params,
            state.phi,
            learning_rate=learning_rate,
        )
        updates, opt_state = meta_optimizer.update(phi_grad, state.opt_state, state.phi)
        phi = jnp.clip(optax.apply_updates(state.phi, updates), -MAX_ABS_PHI, MAX_ABS_PHI)
        return MetaLplState(phi, opt_state), meta_loss

    return MetaLplTransform(init, apply, perturbation, theta, update)
