"""The LPL inner solver: class-level projected-gradient steps on the logits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lpjax import _batch, _checks

# Added to eps / alpha before the floor, so that a bound that is a whole
# number of steps is not rounded down by floating-point error.
_STEP_COUNT_TOLERANCE = 1e-6

#: The most inner steps one call may take (per class): concrete bounds that need more
#: raise; traced ones are clamped to it, so no input makes the solver loop for ever.
DEFAULT_MAX_INNER_STEPS = 10_000


def num_inner_steps(bounds: jax.Array, step_size, max_steps: int = DEFAULT_MAX_INNER_STEPS):
    """Per-class step counts ``K_c = min(floor(eps_c / alpha + 1e-6), max_steps)`` (int32).

    The ratio is formed in the bounds' float dtype; the tolerance also covers
    one float32 rounding of the ratio, so ``eps = 10 * alpha`` gives 10 steps.
    An infinite ratio (``alpha = 0``) gives ``max_steps``, a NaN one 0.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> lpjax.num_inner_steps(jnp.array([0.1, 0.25, 0.0]), 0.05)
      Array([2, 5, 0], dtype=int32)
    """
    bounds = jnp.asarray(bounds)
    ratio = bounds / jnp.asarray(step_size, bounds.dtype)
    tolerance = jnp.maximum(_STEP_COUNT_TOLERANCE, 4 * jnp.finfo(ratio.dtype).eps * ratio)
    steps = jnp.minimum(jnp.floor(ratio + tolerance), max_steps)
    return jnp.where(jnp.isnan(steps), 0, steps).astype(jnp.int32)


def check_max_inner_steps(max_steps) -> None:
    """Checks the solver's cap ``max_inner_steps`` is an int >= 1."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_inner_steps must be an int >= 1; got {max_steps!r}.")


def check_inner_steps(bounds, step_size, max_steps: int, signs=None) -> None:
    """Raises if concrete ``bounds`` / ``step_size`` need more than ``max_steps`` steps.

    Traced values cannot be checked; :func:`num_inner_steps` clamps them instead.
    """
    check_max_inner_steps(max_steps)
    if not (_checks.is_concrete(bounds) and _checks.is_concrete(step_size)):
        return
    bounds = np.asarray(bounds, np.float64)
    if signs is not None and _checks.is_concrete(signs):
        bounds = np.where(np.asarray(signs) != 0, bounds, 0)
    if bounds.size == 0:
        return
    needed = math.floor(float(bounds.max()) / float(step_size) + _STEP_COUNT_TOLERANCE)
    if needed > max_steps:
        raise ValueError(
            f"LPL would take {needed:,} inner steps (largest bound eps = "
            f"{float(bounds.max()):g}, step_size alpha = {float(step_size):g}), more than "
            f"max_inner_steps = {max_steps:,}. Lower the bounds, raise step_size, or pass a "
            "larger max_inner_steps."
        )


def _softmax_minus_onehot(logits: jax.Array, onehot: jax.Array) -> jax.Array:
    """``softmax(u) - onehot(y)`` without cancellation on the true class.

    For a confident sample ``p_y`` rounds to 1 and ``p_y - 1`` to 0, while the
    exact value is ``-sum_{j != y} p_j``; computing it that way keeps the
    class direction right for logit gaps beyond float32's resolution.
    """
    probs = jax.nn.softmax(logits)
    others = probs * (1 - onehot)
    return others - onehot * others.sum(axis=-1, keepdims=True)


def _gather_over_devices(x: jax.Array, axis_name) -> jax.Array:
    """All devices' ``x`` concatenated, identical on every device.

    Built with ``psum`` (each device writes its block into zeros), so the
    result is device-invariant under ``shard_map``'s replication checks and
    the solver's loop carry stays invariant too.
    """
    block = x.shape[0]
    gathered = jnp.zeros((lax.axis_size(axis_name) * block, *x.shape[1:]), x.dtype)
    gathered = lax.dynamic_update_slice_in_dim(
        gathered, x, lax.axis_index(axis_name) * block, axis=0
    )
    return lax.psum(gathered, axis_name)


def lpl_perturbation(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    signs: jax.typing.ArrayLike,
    bounds: jax.typing.ArrayLike,
    step_size: float | jax.typing.ArrayLike,
    normalize: bool = False,
    where: jax.typing.ArrayLike | None = None,
    axis_name=None,
    max_inner_steps: int = DEFAULT_MAX_INNER_STEPS,
) -> jax.Array:
    r"""Class-level logit perturbation found by LPL's PGD-like inner solver.

    Every sample of class :math:`c` receives the same vector :math:`\delta_c`,
    found by :math:`K_c = \lfloor \epsilon_c / \alpha + 10^{-6} \rfloor` steps
    (none when :math:`s_c = 0`) starting from :math:`u^0 = u`:

    .. math::
      g_c^k = \frac{1}{N_c} \sum_{i \in S_c} (\mathrm{softmax}(u_i^k) - e_{y_i}), \qquad
      u_i^{k+1} = u_i^k + s_c \, \alpha \, d_c^k \quad (k < K_c),

    so :math:`s_c = +1` ascends class :math:`c`'s mean cross-entropy (positive
    augmentation) and :math:`s_c = -1` descends it. Two step rules:

    * the paper's step (Eq. 11 / 12; ``normalize=False``, the default):
      :math:`d_c^k = g_c^k`. A class the network already fits well (small
      :math:`g_c`) barely moves; :math:`\|\delta_c\|_2 \le K_c \alpha \max_k
      \|g_c^k\|_2 \le \sqrt{2}\, \epsilon_c`, so the bound sets the number of steps
      rather than the length of :math:`\delta_c`;
    * the unit step (L2 PGD; ``normalize=True``):
      :math:`d_c^k = g_c^k / \max(\|g_c^k\|_2, 10^{-12})`, so
      :math:`\|\delta_c\|_2 \le K_c \alpha \le \epsilon_c`: every class moves its
      whole budget, however well it is fit.

    The result is :math:`\delta_i = u_i^K - u_i`, under ``stop_gradient`` (Danskin: the
    training gradient treats it as a constant).

    The ``10^{-6}`` in :math:`K_c` is widened to four float32 ulps of
    :math:`\epsilon_c / \alpha` when that is larger, so that a bound computed
    as :math:`K \alpha` in float32 gives :math:`K` steps.

    One ``lax.fori_loop`` over :math:`\max_c K_c` steps with per-class masks;
    memory :math:`O(B C)`: class statistics are kept per distinct label of the
    (global) batch, never as a ``[C, C]`` matrix. Statistics are computed in
    float32 (at least) and the result is cast to the logits' dtype. Values of
    ``signs``, ``bounds`` and ``step_size`` may be traced: changing them does not
    recompile. In the global view (``jax.jit`` over logits sharded on a mesh, with
    ``Auto`` or ``Explicit`` axes) the statistics cover the global batch with no
    ``axis_name``.

    A sample with a NaN or infinite logit is treated as masked: it enters no
    class statistic and gets a zero perturbation (its own loss stays whatever
    its logits give, e.g. NaN), so it cannot change any other sample's result.

    Args:
      logits: ``[batch, num_classes]`` floating logits ``u``.
      labels: ``[batch]`` integer labels. A label outside ``[0, num_classes)``
        (which jitted code cannot report) makes its sample masked; see
        :func:`lpjax.validate_labels` for a checked path.
      signs: ``[num_classes]`` values in {-1, 0, +1}: +1 maximises the class's
        loss, -1 minimises it, 0 leaves it untouched.
      bounds: ``[num_classes]`` budgets ``eps_c >= 0``.
      step_size: the step length ``alpha > 0``.
      normalize: False for the paper's step (the class-mean gradient itself), True
        for the unit step (its direction).
      where: optional boolean ``[batch]``; False marks padding samples, which
        are excluded from every statistic and get a zero perturbation.
      axis_name: mapped axis (``jax.shard_map`` / ``jax.pmap``) the batch is
        split over; class statistics are then summed over all devices, so the
        result equals that of the whole batch on one device.
      max_inner_steps: the most steps a class may take. Concrete bounds and
        step size that need more raise ``ValueError``; traced ones are clamped
        to it (a traced ``step_size`` of 0 runs ``max_inner_steps`` null steps).

    Returns:
      ``[batch, num_classes]`` perturbation ``delta`` in the logits' dtype;
      train on ``logits + delta``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> logits = jnp.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
      >>> labels = jnp.array([0, 0, 1])
      >>> delta = lpjax.lpl_perturbation(
      ...     logits, labels, signs=jnp.array([1, -1]), bounds=jnp.array([0.2, 0.2]),
      ...     step_size=0.1)
      >>> delta.shape
      (3, 2)
      >>> # Class 0 is maximised: its true-class logit goes down, the other one up.
      >>> bool(delta[0, 0] < 0 < delta[0, 1])
      True

    References:
      M. Li, F. Su, O. Wu, J. Zhang, "Class-Level Logit Perturbation",
      IEEE TNNLS 2023 (arXiv:2209.05668), Eq. 11-12 and Algorithm 1.
    """
    _, num_classes = _checks.check_batch(logits, labels, where, axis_name)
    _checks.check_positive_scalar("step_size", step_size)
    check_split(num_classes, step_size, max_inner_steps, signs=signs, bounds=bounds)
    return solve(
        logits,
        labels,
        signs,
        bounds,
        step_size,
        where,
        axis_name=axis_name,
        max_inner_steps=max_inner_steps,
        normalize=normalize,
    )


def check_split(num_classes: int, step_size, max_inner_steps: int, *, signs, bounds) -> None:
    """Checks a split: ``[num_classes]`` signs in {-1, 0, +1}, bounds >= 0 within the cap."""
    _checks.check_class_vector("signs", signs, num_classes)
    _checks.check_class_vector("bounds", bounds, num_classes)
    _checks.check_nonnegative("bounds", bounds)
    _checks.check_signs("signs", signs)
    check_inner_steps(bounds, step_size, max_inner_steps, signs)


@_batch.batch_statistics(_batch.per_sample)
def solve(
    logits, labels, signs, bounds, step_size, where, *, axis_name, max_inner_steps, normalize
):
    """:func:`lpl_perturbation` on inputs its caller has checked."""
    num_classes = jnp.shape(logits)[-1]
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u = lax.stop_gradient(logits).astype(dtype)
    labels = jnp.asarray(labels).astype(jnp.int32)
    signs = lax.stop_gradient(jnp.asarray(signs)).astype(dtype)
    bounds = lax.stop_gradient(jnp.asarray(bounds)).astype(dtype)
    step_size = lax.stop_gradient(jnp.asarray(step_size, dtype))

    valid = _batch.valid_samples(labels, num_classes, where, u)
    weight = valid.astype(dtype)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * weight[:, None]

    # Slots: the distinct labels of the global batch (sorted, padded with the
    # sentinel num_classes). Class statistics live in [num_slots, C], never [C, C].
    masked_labels = jnp.where(valid, labels, num_classes)
    global_labels = (
        masked_labels if axis_name is None else _gather_over_devices(masked_labels, axis_name)
    )
    num_slots = global_labels.shape[0]
    slot_classes = jnp.unique(global_labels, size=num_slots, fill_value=num_classes)
    slot = jnp.minimum(jnp.searchsorted(slot_classes, masked_labels), num_slots - 1)

    class_steps = jnp.where(signs != 0, num_inner_steps(bounds, step_size, max_inner_steps), 0)
    slot_steps = jnp.append(class_steps, 0)[slot_classes]
    slot_signs = jnp.append(signs, 0)[slot_classes]
    slot_counts = _batch.sum_over_devices(
        jax.ops.segment_sum(weight, slot, num_segments=num_slots), axis_name
    )
    slot_counts = jnp.maximum(slot_counts, 1)[:, None]

    def step(k, slot_delta):
        residual = _softmax_minus_onehot(u + slot_delta[slot], onehot)
        residual = jnp.where(valid[:, None], residual, 0)  # NaN * 0 would be NaN
        class_sum = _batch.sum_over_devices(
            jax.ops.segment_sum(residual, slot, num_segments=num_slots), axis_name
        )
        if normalize:
            # g_c / max(|g_c|, 1e-12) with g_c = class_sum / N_c, without dividing by N_c.
            norm = jnp.linalg.norm(class_sum, axis=-1, keepdims=True)
            direction = class_sum / jnp.maximum(norm, slot_counts * 1e-12)
        else:
            direction = class_sum / slot_counts  # g_c, the class-mean gradient
        moving = jnp.where(k < slot_steps, slot_signs, 0)
        return slot_delta + (step_size * moving)[:, None] * direction

    slot_delta = lax.fori_loop(
        0, jnp.max(slot_steps), step, jnp.zeros((num_slots, num_classes), dtype)
    )
    delta = jnp.where(valid[:, None], slot_delta[slot], 0)
    return lax.stop_gradient(delta.astype(logits.dtype))
