"""Logit transforms: optax-style ``init`` / ``apply`` pairs that perturb logits.

A :class:`LogitTransform` maps a batch of logits to perturbed logits
(``u -> u + delta``), possibly carrying state (running statistics) from one
batch to the next. Transforms compose with :func:`chain`; a loss is then applied
to the perturbed logits (:func:`lpjax.softmax_cross_entropy_with_integer_labels`,
or any optax loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lpjax import _batch, _checks, _priors, _signs_and_bounds, _solver

#: The state of a :class:`LogitTransform`: any pytree (``optax.EmptyState()`` when stateless).
TransformState = Any


class LogitTransform(NamedTuple):
    """Pure functions perturbing logits, in the manner of ``optax.GradientTransformation``.

    Attributes:
      init: ``init() -> state``.
      apply: ``apply(logits, labels, state, *, where=None, axis_name=None,
        **extra_args) -> (perturbed_logits, new_state)``. ``logits`` is
        ``[..., num_classes]`` (the classes last: ``[B, C]``, or ``[B, T, C]`` for a
        sequence, ``[B, H, W, C]`` for a dense head), ``labels`` integers of the leading
        shape (multi-label transforms: 0/1 of the logits' shape; ``None`` is
        accepted by transforms that do not use labels, e.g. post-hoc
        adjustment at test time), ``where`` booleans of the leading shape. Class
        statistics run over every leading position: the result is that of the
        flattened ``[B*T, C]`` batch, reshaped. Unused ``extra_args`` are ignored, so
        transforms needing more inputs (ISDA's features, ``[..., D]``) chain with the
        rest. A rule given to :func:`lpl_transform` sees the flattened batch.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.logit_adjustment_transform(jnp.array([90, 10]))
      >>> isinstance(transform, lpjax.LogitTransform), transform.init()
      (True, EmptyState())
    """

    init: Callable[[], TransformState]
    apply: Callable[..., tuple[jax.Array, TransformState]]


def stateless(perturb: Callable[..., jax.Array]) -> LogitTransform:
    """A transform without state from ``perturb(logits, labels, where, axis_name)``.

    ``perturb`` returns the perturbed ``[batch, num_classes]`` logits; its state is
    ``optax.EmptyState()``. The logits and the ``where`` mask are checked here, once,
    before ``perturb`` is called.

    Example -- add a fixed class vector::

      >>> import jax.numpy as jnp, lpjax
      >>> shift = lpjax.stateless(lambda logits, labels, where, axis_name: logits + 1.0)
      >>> perturbed, state = shift.apply(jnp.zeros((2, 3)), None, shift.init())
      >>> perturbed.tolist()
      [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    @_batch.apply_over_leading_axes
    def apply(logits, labels, state, *, where=None, axis_name=None, **extra_args):
        del extra_args
        batch_size, _ = _checks.check_logits(logits)
        _checks.check_where(where, batch_size)
        return perturb(jnp.asarray(logits), labels, where, axis_name), state

    return LogitTransform(optax.EmptyState, apply)


def _add_class_vector(logits: jax.Array, vector: jax.Array) -> jax.Array:
    _, num_classes = _checks.check_logits(logits)
    _checks.check_class_vector("the class vector", vector, num_classes)
    dtype = _checks.compute_dtype(logits.dtype)
    return (logits.astype(dtype) + vector.astype(dtype)).astype(logits.dtype)


def identity() -> LogitTransform:
    """The transform that returns the logits unchanged (plain cross-entropy).

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.identity()
      >>> transform.apply(jnp.ones((1, 2)), jnp.array([0]), transform.init())
      (Array([[1., 1.]], dtype=float32), EmptyState())
    """
    return stateless(lambda logits, labels, where, axis_name: logits)


def chain(*transforms: LogitTransform) -> LogitTransform:
    """Applies ``transforms`` in order, each to the previous one's output.

    ``chain(logit_adjustment_transform(counts), lpl_longtail_transform(...))``
    is LA + LPL: LPL's inner solver runs on the adjusted logits.
    Its state is the tuple of the transforms' states (reach one member's with
    :func:`get_transform_state` / :func:`set_transform_state`); extra keyword
    arguments of ``apply`` (ISDA's ``features``, Meta-LPL's ``theta``) go to every
    member, and those that do not use them ignore them.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> counts = jnp.array([90, 10])
      >>> transform = lpjax.chain(lpjax.logit_adjustment_transform(counts),
      ...                         lpjax.posthoc_logit_adjustment_transform(counts))
      >>> perturbed, state = transform.apply(jnp.zeros((1, 2)), jnp.array([0]), transform.init())
      >>> perturbed, state  # the two offsets cancel
      (Array([[0., 0.]], dtype=float32), (EmptyState(), EmptyState()))
    """

    def init():
        return tuple(t.init() for t in transforms)

    def apply(logits, labels, state, *, where=None, axis_name=None, **extra_args):
        if not isinstance(state, tuple):
            raise TypeError(
                f"a chain's state is the tuple returned by its init(); got {type(state).__name__}."
            )
        if len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transforms got a state of {len(state)} entries."
            )
        new_state = []
        for transform, transform_state in zip(transforms, state, strict=True):
            logits, transform_state = transform.apply(
                logits, labels, transform_state, where=where, axis_name=axis_name, **extra_args
            )
            new_state.append(transform_state)
        return logits, tuple(new_state)

    return LogitTransform(init, apply)


def _is_chain_state(state) -> bool:
    # A chain's state is a plain tuple; a NamedTuple is one transform's state.
    return type(state) is tuple


def _state_paths(state, state_type: type, path: tuple[int, ...] = ()):
    if isinstance(state, state_type):
        yield path
    elif _is_chain_state(state):
        for index, member in enumerate(state):
            yield from _state_paths(member, state_type, (*path, index))


def _only_path(state, state_type: type) -> tuple[int, ...]:
    paths = list(_state_paths(state, state_type))
    if len(paths) != 1:
        found = "none" if not paths else f"{len(paths)}, at {paths}"
        raise ValueError(
            f"expected exactly one {state_type.__name__} in the transform state; found {found}."
        )
    return paths[0]


def get_transform_state(state: TransformState, state_type: type) -> TransformState:
    """The state of the one transform in ``state`` whose state is a ``state_type``.

    ``state`` is a transform's state: one transform's (returned as is if it is a
    ``state_type``) or a :func:`chain`'s tuple, chains nested in chains included. Like
    ``optax.tree_utils.tree_get`` for a chain of optimizers, it finds a member's state
    without knowing its position in the chain.

    Args:
      state: the state of a transform, e.g. from ``chain(...).init()``.
      state_type: the state class of the member wanted, e.g. :class:`lpjax.MetaLplState`.

    Returns:
      That member's state.

    Raises:
      ValueError: no member, or more than one, has a state of that type.

    Example -- the Meta-LPL state of logit adjustment then Meta-LPL::

      >>> import optax, lpjax
      >>> meta = lpjax.lpl_meta_transform(
      ...     3, max_epsilon=1.0, step_size=0.1, meta_optimizer=optax.sgd(0.1))
      >>> la = lpjax.logit_adjustment_transform([30, 20, 10])
      >>> state = lpjax.chain(la, meta).init()
      >>> meta.theta(lpjax.get_transform_state(state, lpjax.MetaLplState)).tolist()
      [0.0, 0.0, 0.0]
      >>> new = lpjax.MetaLplState(phi=state[1].phi + 1.0, opt_state=state[1].opt_state)
      >>> state = lpjax.set_transform_state(state, lpjax.MetaLplState, new)
      >>> state[1].phi.tolist()
      [1.0, 1.0, 1.0]
    """
    for index in _only_path(state, state_type):
        state = state[index]
    return state


def set_transform_state(
    state: TransformState, state_type: type, new_state: TransformState
) -> TransformState:
    """``state`` with the one ``state_type`` member's state replaced by ``new_state``.

    The counterpart of :func:`get_transform_state` (like ``optax.tree_utils.tree_set``):
    a new tuple, ``state`` itself is unchanged; a ``state`` that is itself a
    ``state_type`` is replaced whole.

    Raises:
      ValueError: no member, or more than one, has a state of that type.

    Example -- adaptive LPL's bounds, reset inside LA + adaptive LPL::

      >>> import jax.numpy as jnp, lpjax
      >>> adaptive = lpjax.lpl_adaptive_longtail_transform(
      ...     [30, 20, 10], num_head_classes=1, target=0.3, step_size=0.1, initial_epsilon=1.0)
      >>> state = lpjax.chain(lpjax.logit_adjustment_transform([30, 20, 10]), adaptive).init()
      >>> state = lpjax.set_transform_state(
      ...     state, lpjax.AdaptiveLplState, lpjax.AdaptiveLplState(jnp.full(3, 0.5)))
      >>> state[1].bounds.tolist()
      [0.5, 0.5, 0.5]
    """

    def replace(state, path):
        if not path:
            return new_state
        index, rest = path[0], path[1:]
        return (*state[:index], replace(state[index], rest), *state[index + 1 :])

    return replace(state, _only_path(state, state_type))


def logit_adjustment_transform(class_counts, *, tau: float = 1.0) -> LogitTransform:
    r"""Logit-adjusted training: :math:`u + \tau \log \pi` (see :func:`lpjax.logit_adjustment`).

    Lowers head-class losses and raises tail-class ones. Predict with the
    plain logits afterwards. Menon et al., ICLR 2021.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.logit_adjustment_transform(jnp.array([75, 25]), tau=1.0)
      >>> perturbed, _ = transform.apply(jnp.zeros((1, 2)), jnp.array([0]), transform.init())
      >>> [round(float(x), 4) for x in perturbed[0]]  # log(0.75), log(0.25)
      [-0.2877, -1.3863]
    """
    offsets = _priors.logit_adjustment(class_counts, tau=tau)
    return stateless(lambda logits, labels, where, axis_name: _add_class_vector(logits, offsets))


def posthoc_logit_adjustment_transform(class_counts, *, tau: float = 1.0) -> LogitTransform:
    r"""Post-hoc logit adjustment for prediction: :math:`u - \tau \log \pi`.

    Applied at test time to a model trained with plain cross-entropy; needs no
    labels (``apply(logits, None, state)``). Menon et al., ICLR 2021.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.posthoc_logit_adjustment_transform(jnp.array([75, 25]))
      >>> adjusted, _ = transform.apply(jnp.zeros((1, 2)), None, transform.init())
      >>> [round(float(x), 4) for x in adjusted[0]]  # the tail class is favoured at test time
      [0.2877, 1.3863]
    """
    offsets = -_priors.logit_adjustment(class_counts, tau=tau)
    return stateless(lambda logits, labels, where, axis_name: _add_class_vector(logits, offsets))


def balanced_softmax_transform(class_counts) -> LogitTransform:
    r"""Balanced Softmax: :math:`u + \log n` (logit adjustment with :math:`\tau = 1`).

    References:
      J. Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
      NeurIPS 2020.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.balanced_softmax_transform(jnp.array([100, 10]))
      >>> perturbed, _ = transform.apply(jnp.zeros((1, 2)), jnp.array([0]), transform.init())
      >>> [round(float(x), 4) for x in perturbed[0]]  # log n
      [4.6052, 2.3026]
    """
    _checks.check_class_counts(class_counts)
    offsets = jnp.log(jnp.asarray(class_counts, jnp.float32))
    return stateless(lambda logits, labels, where, axis_name: _add_class_vector(logits, offsets))


def ldam_transform(class_counts, *, max_margin: float = 0.5, scale: float = 30.0) -> LogitTransform:
    r"""LDAM: :math:`s\,(u - m_y e_y)`, margins from :func:`lpjax.ldam_margins`.

    The margin is subtracted from the true-class logit only, then all logits
    are scaled by ``scale`` (30 in the LDAM code). Predict with plain logits.
    Cao et al., NeurIPS 2019.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> transform = lpjax.ldam_transform(jnp.array([100, 1]), max_margin=0.5, scale=1.0)
      >>> perturbed, _ = transform.apply(jnp.zeros((2, 2)), jnp.array([0, 1]), transform.init())
      >>> [[round(float(x), 4) for x in row] for row in perturbed]  # the margin off the label
      [[-0.1581, 0.0], [0.0, -0.5]]
    """
    margins = _priors.ldam_margins(class_counts, max_margin=max_margin)
    _checks.check_positive_scalar("scale", scale)

    def perturb(logits, labels, where, axis_name):
        _checks.require_labels(labels, "ldam_transform")
        _, num_classes = _checks.check_batch(
            logits, labels, where, axis_name, reduces_over_batch=False
        )
        labels = jnp.asarray(labels)
        _checks.check_class_vector("class_counts", margins, num_classes)
        dtype = _checks.compute_dtype(logits.dtype)
        margin = _batch.class_values(margins, labels)  # 0 for out-of-range labels
        onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
        return (scale * (logits.astype(dtype) - margin[:, None] * onehot)).astype(logits.dtype)

    return stateless(perturb)


def lpl_transform(
    signs_and_bounds: Callable[..., tuple[jax.Array, jax.Array]],
    *,
    step_size: float,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> LogitTransform:
    """LPL with any rule: ``signs_and_bounds(logits, labels, where, axis_name)``.

    The rule returns ``(signs [C] in {-1, 0, +1}, bounds [C] >= 0)`` for the batch
    (it may reduce statistics over ``axis_name``); the transform then adds
    :func:`lpjax.lpl_perturbation`'s ``delta`` to the logits (``normalize``: its step
    rule, the paper's by default). The built-in :func:`lpl_mean_rule_transform` and
    :func:`lpl_longtail_transform` are this with :func:`lpjax.mean_rule_signs_and_bounds`
    and :func:`lpjax.longtail_signs_and_bounds`.

    Example -- maximise only the classes whose batch accuracy is below one half::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> def low_accuracy_rule(logits, labels, where, axis_name):
      ...     correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
      ...     onehot = jax.nn.one_hot(labels, logits.shape[-1])
      ...     accuracy = (onehot * correct[:, None]).sum(0) / jnp.maximum(onehot.sum(0), 1)
      ...     signs = jnp.where((onehot.sum(0) > 0) & (accuracy < 0.5), 1, 0)
      ...     return signs, jnp.full(logits.shape[-1], 0.2)
      >>> t = lpjax.lpl_transform(low_accuracy_rule, step_size=0.05)
      >>> perturbed, _ = t.apply(jnp.zeros((2, 3)), jnp.array([0, 1]), t.init())
      >>> perturbed.shape
      (2, 3)
    """
    return _lpl_transform(signs_and_bounds, step_size, max_inner_steps, normalize=normalize)


def _lpl_transform(
    signs_and_bounds,
    step_size,
    max_inner_steps,
    *,
    check_and_solve=_solver.check_and_solve,
    labels_kind: str = "integer",
    **solver_options,
) -> LogitTransform:
    """LPL on the incoming logits: ``logits + delta`` with the rule's signs and bounds.

    The batch is checked once here; ``signs_and_bounds(logits, labels, where, axis_name)``
    gives the rule's arrays, which ``check_and_solve`` checks before it runs the unchecked
    solver (with ``solver_options``, e.g. the step rule). The multi-label transforms reuse
    this with their own ``check_and_solve`` and :class:`lpjax.MultilabelSignsAndBounds`.
    """
    _checks.check_positive_scalar("step_size", step_size)
    _solver.check_max_inner_steps(max_inner_steps)

    @_batch.apply_over_leading_axes
    def apply(logits, labels, state, *, where=None, axis_name=None, **extra_args):
        del extra_args
        _checks.require_labels(labels, "an LPL transform")
        _checks.check_batch(logits, labels, where, axis_name, labels_kind=labels_kind)
        logits = jnp.asarray(logits)
        delta = check_and_solve(
            logits,
            labels,
            *signs_and_bounds(logits, labels, where, axis_name),
            step_size,
            where,
            axis_name=axis_name,
            max_inner_steps=max_inner_steps,
            **solver_options,
        )
        return logits + delta, state

    return LogitTransform(optax.EmptyState, apply)


def lpl_mean_rule_transform(
    *,
    epsilon: float,
    step_size: float,
    delta_epsilon: float = 0.0,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> LogitTransform:
    """LPL for balanced data: the mean rule's signs and bounds recomputed on every batch.

    Signs and bounds from :func:`lpjax.mean_rule_signs_and_bounds` on the
    incoming logits, then :func:`lpjax.lpl_perturbation` (``normalize``: its step
    rule, the paper's by default). ``delta_epsilon = 0`` is LPL with fixed bounds,
    ``> 0`` with varied bounds. The largest bound, ``epsilon + delta_epsilon``, may
    need at most ``max_inner_steps`` steps (else ``ValueError`` here). Li et al.,
    TNNLS 2023.

    Example::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> transform = lpjax.lpl_mean_rule_transform(epsilon=0.3, step_size=0.1)
      >>> logits = jax.random.normal(jax.random.key(0), (6, 3))
      >>> perturbed, _ = transform.apply(logits, jnp.arange(6) % 3, transform.init())
      >>> perturbed.shape, bool((perturbed != logits).any())
      ((6, 3), True)
    """
    _checks.check_nonnegative("epsilon", epsilon)
    _checks.check_nonnegative("delta_epsilon", delta_epsilon)
    _checks.check_positive_scalar("step_size", step_size)
    _solver.check_inner_steps(jnp.asarray([epsilon + delta_epsilon]), step_size, max_inner_steps)

    def signs_and_bounds(logits, labels, where, axis_name):
        return _signs_and_bounds.batch_mean_rule(
            logits,
            labels,
            where,
            epsilon=epsilon,
            delta_epsilon=delta_epsilon,
            axis_name=axis_name,
        )

    return _lpl_transform(signs_and_bounds, step_size, max_inner_steps, normalize=normalize)


def lpl_longtail_transform(
    class_counts,
    *,
    num_head_classes: int,
    epsilon: float,
    step_size: float,
    delta_epsilon: float = 0.0,
    head_scale: float = 1.0,
    normalize: bool = False,
    max_inner_steps: int = _solver.DEFAULT_MAX_INNER_STEPS,
) -> LogitTransform:
    """LPL for long-tailed data: head classes minimised, tail classes maximised.

    Signs and bounds from :func:`lpjax.longtail_signs_and_bounds` (fixed for the
    whole run; ``head_scale`` scales the head budgets), then
    :func:`lpjax.lpl_perturbation` on every batch (``normalize``: its step rule, the
    paper's by default). Chain after :func:`logit_adjustment_transform` for LA + LPL.
    Bounds needing more than ``max_inner_steps`` steps raise ``ValueError`` here.
    Li et al., TNNLS 2023.

    Example::

      >>> import jax, jax.numpy as jnp, lpjax
      >>> transform = lpjax.lpl_longtail_transform(
      ...     jnp.array([500, 100, 20]), num_head_classes=1, epsilon=0.3, step_size=0.1)
      >>> logits = jax.random.normal(jax.random.key(0), (6, 3))
      >>> perturbed, _ = transform.apply(logits, jnp.arange(6) % 3, transform.init())
      >>> perturbed.shape, bool((perturbed != logits).any())
      ((6, 3), True)
    """
    signs, bounds = _signs_and_bounds.longtail_signs_and_bounds(
        class_counts,
        num_head_classes=num_head_classes,
        epsilon=epsilon,
        delta_epsilon=delta_epsilon,
        head_scale=head_scale,
    )
    _checks.check_positive_scalar("step_size", step_size)
    _solver.check_inner_steps(bounds, step_size, max_inner_steps, signs)
    return _lpl_transform(
        lambda logits, labels, where, axis_name: (signs, bounds),
        step_size,
        max_inner_steps,
        normalize=normalize,
    )
