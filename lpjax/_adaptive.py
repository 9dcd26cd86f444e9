"""Adaptive LPL: per-class bounds steered by the measured loss variation (lpjax's extension).

Not in the paper. LPL's fixed bound ``eps_c`` changes a class's loss by an amount that
depends on how confident the network is: early in training a logit step of 1 barely
moves a loss of 2, late in training it multiplies a loss of 0.01 many times over. Adaptive
LPL instead fixes *what the perturbation does* -- the class's loss ratio -- and lets a
per-class bound, carried in the transform state, find the logit budget that achieves it.
Specification: docs/method.md, section 8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec

from lpjax import _batch, _checks, _signs_and_bounds, _solver
from lpjax._transforms import LogitTransform

# One step changes log(eps_c) by at most rate * _MAX_ERROR: a single odd batch (a class
# seen once, a loss near 0) cannot throw a bound across its range.
_MAX_ERROR = 1.0

SignsAndTargets = Callable[..., tuple[jax.Array, jax.Array]]


class AdaptiveLplState(NamedTuple):
    """State of :func:`lpl_adaptive_transform`: the current per-class bounds (float32 ``[C]``).

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> lpjax.AdaptiveLplState(bounds=jnp.full(3, 0.5, jnp.float32)).bounds.tolist()
      [0.5, 0.5, 0.5]
    """

    bounds: jax.Array


def adaptive_bounds_update(
    bounds: jax.typing.ArrayLike,
    signs: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    loss_sums: jax.typing.ArrayLike,
    perturbed_loss_sums: jax.typing.ArrayLike,
    *,
    rate: float,
    min_bound: float,
    max_bound: float,
) -> jax.Array:
    r"""One step of adaptive LPL's bound controller (docs/method.md, section 8).

    With :math:`L_c` and :math:`L'_c` the summed plain and perturbed losses of class
    :math:`c` in the (global) batch and :math:`m_c = \log(L'_c / L_c)`:

    .. math::
      e_c = \mathrm{clip}(\kappa_c - s_c\, m_c, -1, 1), \qquad
      \epsilon_c \leftarrow \mathrm{clip}(\epsilon_c\, e^{\eta\, e_c},
      \epsilon_{\min}, \epsilon_{\max})

    for every class with :math:`s_c \neq 0` whose :math:`L_c, L'_c` are positive and
    finite; the other bounds stay. A maximised class (:math:`s_c = +1`) whose loss rose
    by less than the factor :math:`e^{\kappa_c}` gets a larger budget, a minimised one
    (:math:`s_c = -1`) whose loss fell by less than :math:`e^{-\kappa_c}` too; overshoot
    shrinks the budget. Bounds never leave :math:`[\epsilon_{\min}, \epsilon_{\max}]`.

    Args:
      bounds: ``[C]`` current bounds :math:`\epsilon_c`.
      signs: ``[C]`` in {-1, 0, +1}.
      targets: ``[C]`` target magnitudes :math:`\kappa_c \ge 0` of the log loss ratio.
      loss_sums, perturbed_loss_sums: ``[C]`` class sums of the plain and perturbed losses.
      rate: :math:`\eta > 0`.
      min_bound, max_bound: the range of the bounds, ``0 < min_bound <= max_bound``.

    Returns:
      float32 ``[C]`` new bounds.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> new = lpjax.adaptive_bounds_update(
      ...     jnp.array([0.5, 0.5]), jnp.array([1, -1]), jnp.array([0.3, 0.3]),
      ...     loss_sums=jnp.array([2.0, 2.0]), perturbed_loss_sums=jnp.array([2.1, 1.0]),
      ...     rate=0.1, min_bound=0.01, max_bound=10.0)
      >>> [round(float(b), 4) for b in new]  # too little rise: grows; overshoot: shrinks
      [0.5127, 0.4807]
    """
    bounds = jnp.asarray(bounds, jnp.float32)
    signs = jnp.asarray(signs).astype(jnp.float32)
    loss_sums = jnp.asarray(loss_sums, jnp.float32)
    perturbed_loss_sums = jnp.asarray(perturbed_loss_sums, jnp.float32)
    measurable = (
        (signs != 0)
        & jnp.isfinite(loss_sums)
        & jnp.isfinite(perturbed_loss_sums)
        & (loss_sums > 0)
        & (perturbed_loss_sums > 0)
    )
    log_ratio = jnp.log(jnp.where(measurable, perturbed_loss_sums, 1)) - jnp.log(
        jnp.where(measurable, loss_sums, 1)
    )
    error = jnp.clip(jnp.asarray(targets, jnp.float32) - signs * log_ratio, -_MAX_ERROR, _MAX_ERROR)
    updated = jnp.clip(bounds * jnp.exp(rate * error), min_bound, max_bound)
    return jnp.where(measurable, updated, bounds)


@_batch.batch_statistics(lambda batch_axes: PartitionSpec())
def _class_loss_sums(logits, labels, valid, *, num_classes, axis_name):
    """Summed softmax cross-entropy per class over the valid samples of all devices."""
    safe_labels = jnp.where(valid, labels, 0)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, safe_labels)
    loss = jnp.where(valid, loss, 0)  # also drops NaN losses of excluded samples
    sums = jax.ops.segment_sum(loss, safe_labels, num_segments=num_classes)
    return _batch.sum_over_devices(sums, axis_name)


def lpl_adaptive_transform(
    signs_and_targets: SignsAndTargets,
    *,
    num_classes: int,
    step_size: float,
    initial_epsilon: float,
    rate: float = 0.05,
    max_epsilon: float = 10.0,
    min_epsilon: float | None = None,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> LogitTransform:
    r"""Adaptive LPL: LPL whose per-class bounds follow a target loss variation.

    Per batch, with the bounds :math:`\epsilon_c` of the state:

    1. ``signs, targets = signs_and_targets(logits, labels, where, axis_name)`` --
       :math:`s_c` and :math:`\kappa_c \ge 0` (e.g. LPL's head/tail or mean rule, with the
       target in place of the bound);
    2. :math:`\delta` = :func:`lpjax.lpl_perturbation` with those signs, the state's
       bounds and ``step_size``; the logits become :math:`u + \delta`;
    3. the class loss sums :math:`L_c` (on :math:`u`) and :math:`L'_c` (on
       :math:`u + \delta`), summed over ``axis_name``, update the bounds by
       :func:`adaptive_bounds_update`.

    The inner solver runs at most ``max_epsilon / step_size`` steps (which must not
    exceed ``max_inner_steps``). Samples with a non-finite logit or masked out enter no
    statistic and get no perturbation. The bounds are
    replicated state (identical on every device), checkpointed with the train state.

    Args:
      signs_and_targets: ``(logits, labels, where, axis_name) -> (signs [C], targets [C])``.
      num_classes: the number of classes C.
      step_size: inner step :math:`\alpha > 0`.
      initial_epsilon: every class's bound at ``init()``.
      rate: controller gain :math:`\eta > 0` (per step, in log-bound units).
      max_epsilon: upper limit of the bounds.
      min_epsilon: lower limit (default ``step_size``: at least one inner step).
      normalize: the solver's step rule (:func:`lpjax.lpl_perturbation`): the paper's
        (False, the default) or the unit step (True).
      max_inner_steps: the solver's cap on the steps of a class.

    Returns:
      A :class:`LogitTransform` with state :class:`AdaptiveLplState`.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> signs, targets = jnp.array([-1, 1, 1]), jnp.array([0.3, 0.3, 0.6])
      >>> t = lpjax.lpl_adaptive_transform(
      ...     lambda logits, labels, where, axis_name: (signs, targets),
      ...     num_classes=3, step_size=0.05, initial_epsilon=0.5)
      >>> state = t.init()
      >>> logits, state = t.apply(jnp.zeros((3, 3)), jnp.array([0, 1, 2]), state)
      >>> state.bounds.shape
      (3,)
    """
    _checks.check_positive_scalar("step_size", step_size)
    _checks.check_positive_scalar("rate", rate)
    _checks.check_positive_scalar("initial_epsilon", initial_epsilon)
    _checks.check_positive_scalar("max_epsilon", max_epsilon)
    min_epsilon = step_size if min_epsilon is None else min_epsilon
    _checks.check_positive_scalar("min_epsilon", min_epsilon)
    if not min_epsilon <= initial_epsilon <= max_epsilon:
        raise ValueError(
            f"need min_epsilon <= initial_epsilon <= max_epsilon; got {min_epsilon}, "
            f"{initial_epsilon}, {max_epsilon}."
        )
    _solver.check_inner_steps(jnp.asarray([max_epsilon]), step_size, max_inner_steps)
    num_classes = int(num_classes)

    def init():
        return AdaptiveLplState(jnp.full((num_classes,), initial_epsilon, jnp.float32))

    @_batch.apply_over_leading_axes
    def apply(logits, labels, state, *, where=None, axis_name=None, **extra_args):
        del extra_args
        if not isinstance(state, AdaptiveLplState):
            raise TypeError(f"expected an AdaptiveLplState (from init()); got {type(state)}.")
        _checks.require_labels(labels, "lpl_adaptive_transform")
        _, classes = _checks.check_batch(logits, labels, where, axis_name)
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        _checks.check_num_classes(classes, num_classes)
        signs, targets = signs_and_targets(logits, labels, where, axis_name)
        delta = _solver.check_and_solve(
            logits,
            labels,
            signs,
            state.bounds,
            step_size,
            where,
            axis_name=axis_name,
            max_inner_steps=max_inner_steps,
            normalize=normalize,
        )
        perturbed = logits + delta
        dtype = _checks.compute_dtype(logits.dtype)
        plain = lax.stop_gradient(logits).astype(dtype)
        valid = _batch.valid_samples(labels, num_classes, where, plain)
        loss_sums, perturbed_sums = (
            _class_loss_sums(x, labels, valid, num_classes=num_classes, axis_name=axis_name)
            for x in (plain, plain + delta.astype(dtype))
        )
        bounds = adaptive_bounds_update(
            state.bounds,
            signs,
            targets,
            loss_sums,
            perturbed_sums,
            rate=rate,
            min_bound=min_epsilon,
            max_bound=max_epsilon,
        )
        return perturbed, AdaptiveLplState(lax.stop_gradient(bounds))

    return LogitTransform(init, apply)


def lpl_adaptive_longtail_transform(
    class_counts,
    *,
    num_head_classes: int,
    target: float,
    step_size: float,
    initial_epsilon: float,
    delta_target: float = 0.0,
    head_scale: float = 1.0,
    rate: float = 0.05,
    max_epsilon: float = 10.0,
    min_epsilon: float | None = None,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> LogitTransform:
    r"""Adaptive LPL with LPL's head/tail signs: head losses scaled toward
    :math:`e^{-\kappa_c}`, tail losses toward :math:`e^{+\kappa_c}`.

    Signs and targets are :func:`lpjax.longtail_signs_and_bounds` with ``epsilon=target``,
    ``delta_epsilon=delta_target`` (so ``delta_target > 0`` gives the extreme classes
    the largest targets) and ``head_scale`` (the head classes' targets scaled); see
    :func:`lpl_adaptive_transform` for the rest. Chain after
    :func:`lpjax.logit_adjustment_transform` for LA + adaptive LPL.

    Example::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> transform = lpjax.lpl_adaptive_longtail_transform(
      ...     jnp.array([500, 100, 20]), num_head_classes=1, target=0.3, step_size=0.1,
      ...     initial_epsilon=0.5)
      >>> logits = jax.random.normal(jax.random.key(0), (8, 3))
      >>> perturbed, state = transform.apply(logits, jnp.arange(8) % 3, transform.init())
      >>> perturbed.shape, state.bounds.shape
      ((8, 3), (3,))
    """
    signs, targets = _signs_and_bounds.longtail_signs_and_bounds(
        class_counts,
        num_head_classes=num_head_classes,
        epsilon=target,
        delta_epsilon=delta_target,
        head_scale=head_scale,
    )
    return lpl_adaptive_transform(
        lambda logits, labels, where, axis_name: (signs, targets),
        num_classes=signs.shape[0],
        step_size=step_size,
        initial_epsilon=initial_epsilon,
        rate=rate,
        max_epsilon=max_epsilon,
        min_epsilon=min_epsilon,
        normalize=normalize,
        max_inner_steps=max_inner_steps,
    )
