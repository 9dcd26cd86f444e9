"""The LPL inner solver: class-level projected-gradient steps on the logits."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple

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

    **Devices.** On a batch split over :math:`N > 1` devices the solver works in the
    class layout: one all-to-all gives each device all rows of its :math:`\lceil C/N
    \rceil` columns, after which an inner step all-reduces one ``[2, B]`` float32 array
    (the softmax normalizer's parts; ``[2, B]`` and ``[num_slots]`` with ``normalize``),
    and one more all-to-all returns :math:`\delta`. Per train step that is about
    :math:`2 (N-1)/N \cdot BC/N` logits plus :math:`2BK` floats, where the row layout
    all-reduced :math:`[B, C]` at each of the :math:`K` steps. Which devices hold the
    batch is read from ``axis_name``, from ``Explicit`` shardings, or from the mesh set
    with ``jax.set_mesh`` (every ``Auto`` axis); with none of these (one device, or ``Auto``
    axes and no mesh set) the row layout runs. docs/library.md, "What crosses devices".

    A sample with a NaN or infinite logit is treated as masked: it enters no
    class statistic and gets a zero perturbation (its own loss stays whatever
    its logits give, e.g. NaN), so it cannot change any other sample's result.

    Args:
      logits: ``[batch, num_classes]`` floating logits ``u`` (or ``[..., num_classes]``:
        every leading position is a sample).
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
    lead, logits, flat = _batch.flatten_leading(logits, labels=labels, where=where)
    labels, where = flat["labels"], flat["where"]
    _checks.check_batch(logits, labels, where, axis_name)
    _checks.check_positive_scalar("step_size", step_size)
    delta = check_and_solve(
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
    return _batch.unflatten_leading(lead, delta)


def check_signs_and_bounds(
    num_classes: int, step_size, max_inner_steps: int, *, signs, bounds
) -> None:
    """Checks ``[num_classes]`` signs in {-1, 0, +1} and bounds >= 0 within the step cap."""
    _checks.check_class_vector("signs", signs, num_classes)
    _checks.check_class_vector("bounds", bounds, num_classes)
    _checks.check_nonnegative("bounds", bounds)
    _checks.check_signs("signs", signs)
    check_inner_steps(bounds, step_size, max_inner_steps, signs)


def check_and_solve(logits, labels, signs, bounds, step_size, where, **solver_options):
    """Checks ``signs`` and ``bounds`` for the logits' classes, then :func:`solve`: the LPL
    step of every transform whose signs and bounds come from a rule or a state."""
    check_signs_and_bounds(
        jnp.shape(logits)[-1],
        step_size,
        solver_options["max_inner_steps"],
        signs=signs,
        bounds=bounds,
    )
    return solve(logits, labels, signs, bounds, step_size, where, **solver_options)


# --- Layouts --------------------------------------------------------------------------
#
# One device: the "row" kernel alone. A batch split over N > 1 devices (``axis_name``
# under ``jax.shard_map`` / ``jax.pmap``, or the global view's batch axes, see
# :func:`lpjax._batch.global_batch_axes`): the "class" kernel, whose inner steps move
# per-row scalars only. The row kernel on N devices (class sums all-reduced at every
# inner step) stays reachable through :func:`row_layout`, for benchmarks.

_ROW_LAYOUT_ON_DEVICES = False


@contextlib.contextmanager
def row_layout():
    """Within this context, a batch on several devices runs the row-layout solver.

    Takes effect when a function is traced: wrap a fresh function for each layout, since
    ``jax.jit`` reuses a trace made outside the context.
    """
    global _ROW_LAYOUT_ON_DEVICES
    previous, _ROW_LAYOUT_ON_DEVICES = _ROW_LAYOUT_ON_DEVICES, True
    try:
        yield
    finally:
        _ROW_LAYOUT_ON_DEVICES = previous


def solve(
    logits, labels, signs, bounds, step_size, where, *, axis_name, max_inner_steps, normalize
):
    """:func:`lpl_perturbation` on inputs its caller has checked, in the batch's layout."""
    options = dict(max_inner_steps=max_inner_steps, normalize=normalize)
    logits = lax.stop_gradient(jnp.asarray(logits))
    replicated = tuple(lax.stop_gradient(jnp.asarray(x)) for x in (signs, bounds, step_size))
    if axis_name is not None:
        if _ROW_LAYOUT_ON_DEVICES or lax.axis_size(axis_name) == 1:
            return _solve_rows(logits, labels, *replicated, where, axis_name=axis_name, **options)
        return _solve_classes(logits, labels, *replicated, where, axis_name=axis_name, **options)
    batch_axes = () if _ROW_LAYOUT_ON_DEVICES else _batch.global_batch_axes(logits)
    if batch_axes:
        kernel = functools.partial(_solve_classes, **options)
        return _batch.map_over_batch_shards(kernel, batch_axes, logits, labels, where, replicated)
    return _solve_rows(logits, labels, *replicated, where, axis_name=None, **options)


class _Slots(NamedTuple):
    """The distinct labels of the global batch ("slots": class statistics live in
    ``[num_slots, ...]``, ``num_slots = min(B, C)``, never ``[C, C]``) and their schedule."""

    index: jax.Array  # [B] int: each sample's slot
    steps: jax.Array  # [num_slots] int: K_c of the slot's class (0 for the sentinel)
    signs: jax.Array  # [num_slots]: s_c
    counts: jax.Array  # [num_slots, 1]: max(N_c, 1)


def _slots(global_labels, signs, bounds, step_size, max_inner_steps, num_classes) -> _Slots:
    """Slots of ``global_labels`` (``[B]``, ``num_classes`` for a sample that is masked).

    With ``min(B, C)`` slots a masked sample may share the last slot; its weight and its
    residual are zero, so no statistic sees it.
    """
    num_slots = min(global_labels.shape[0], num_classes)
    slot_classes = jnp.unique(global_labels, size=num_slots, fill_value=num_classes)
    index = jnp.minimum(jnp.searchsorted(slot_classes, global_labels), num_slots - 1)
    class_steps = jnp.where(signs != 0, num_inner_steps(bounds, step_size, max_inner_steps), 0)
    weight = (global_labels < num_classes).astype(signs.dtype)
    counts = jax.ops.segment_sum(weight, index, num_segments=num_slots)
    return _Slots(
        index,
        jnp.append(class_steps, 0)[slot_classes],
        jnp.append(signs, 0)[slot_classes],
        jnp.maximum(counts, 1)[:, None],
    )


def _step_update(k, slots: _Slots, class_sum, norm, step_size):
    """``s_c alpha d_c^k`` for the slots still moving at step ``k``.

    ``d_c = g_c = G_c / N_c`` (the paper's step) or, given the class sums' norms
    ``|G_c|`` (``[num_slots, 1]``), ``G_c / max(|G_c|, N_c 1e-12) = g_c / max(|g_c|,
    1e-12)`` (the unit step).
    """
    if norm is None:
        direction = class_sum / slots.counts
    else:
        direction = class_sum / jnp.maximum(norm, slots.counts * 1e-12)
    moving = jnp.where(k < slots.steps, slots.signs, 0)
    return (step_size * moving)[:, None] * direction


@_batch.batch_statistics(_batch.per_sample)
def _solve_rows(
    logits, labels, signs, bounds, step_size, where, *, axis_name, max_inner_steps, normalize
):
    """The solver in the row layout: each device holds rows ``[b, C]`` of the batch.

    With ``axis_name``, each inner step all-reduces the ``[num_slots, C]`` class sums.
    """
    num_classes = logits.shape[-1]
    dtype = _checks.compute_dtype(logits.dtype)
    u = logits.astype(dtype)
    labels = jnp.asarray(labels).astype(jnp.int32)
    signs, bounds, step_size = signs.astype(dtype), bounds.astype(dtype), step_size.astype(dtype)

    valid = _batch.valid_samples(labels, num_classes, where, u)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * valid[:, None]
    masked_labels = jnp.where(valid, labels, num_classes)
    global_labels = (
        masked_labels if axis_name is None else _gather_over_devices(masked_labels, axis_name)
    )
    slots = _slots(global_labels, signs, bounds, step_size, max_inner_steps, num_classes)
    local = slots.index
    if axis_name is not None:  # this device's samples among the global batch's
        block = labels.shape[0]
        local = lax.dynamic_slice_in_dim(local, lax.axis_index(axis_name) * block, block)

    def step(k, slot_delta):
        residual = _softmax_minus_onehot(u + slot_delta[local], onehot)
        residual = jnp.where(valid[:, None], residual, 0)  # NaN * 0 would be NaN
        class_sum = _batch.sum_over_devices(
            jax.ops.segment_sum(residual, local, num_segments=slots.steps.shape[0]), axis_name
        )
        norm = jnp.linalg.norm(class_sum, axis=-1, keepdims=True) if normalize else None
        return slot_delta + _step_update(k, slots, class_sum, norm, step_size)

    slot_delta = lax.fori_loop(
        0, jnp.max(slots.steps), step, jnp.zeros((slots.steps.shape[0], num_classes), dtype)
    )
    delta = jnp.where(valid[:, None], slot_delta[local], 0)
    return delta.astype(logits.dtype)


def _solve_classes(
    logits, labels, signs, bounds, step_size, where, *, axis_name, max_inner_steps, normalize
):
    r"""The solver in the class layout, on this device's rows ``[b, C]`` of a batch over N devices.

    One all-to-all gives each of the N devices the columns :math:`J_d` (``C`` padded to
    ``N \lceil C / N \rceil`` with columns no statistic sees) of every row, and a ``[B]``
    all-gather the rows' labels and maxima :math:`m_i`. Each inner step is then local
    but for one ``[2, B]`` all-reduce (plus a ``[num_slots]`` one for the unit step's
    norms): with :math:`e_{ij} = \exp(u_{ij} + \delta_{y_i j} - m_i - t_i)`,

    .. math::
      A_i = \textstyle\sum_j e_{ij}, \quad B_i = \sum_{j \ne y_i} e_{ij}, \quad
      r_{ij} = e_{ij} / A_i \ (j \ne y_i), \quad r_{i y_i} = -B_i / A_i,

    softmax minus one-hot in the cancellation-free form, where the shift
    :math:`t_i = \alpha \min(k, K_{y_i}) \ge \|\delta_{y_i}\|_\infty` (every step moves
    an entry by at most :math:`\alpha`) keeps every exponent :math:`\le 0`. The class
    sums :math:`G_{c, J_d}` and the update of :math:`\delta_{c, J_d}` need no other
    device; a last all-to-all brings :math:`\delta` back to the rows.
    """
    num_classes = logits.shape[-1]
    num_devices = lax.axis_size(axis_name)
    block = -(-num_classes // num_devices)
    dtype = _checks.compute_dtype(logits.dtype)
    labels = jnp.asarray(labels).astype(jnp.int32)
    signs, bounds, step_size = signs.astype(dtype), bounds.astype(dtype), step_size.astype(dtype)

    # In the row layout: the mask, the row maxima, the classes padded.
    valid = _batch.valid_samples(labels, num_classes, where, logits)
    rows = jnp.where(valid[:, None], logits, 0)
    row_max = jnp.max(rows, axis=-1).astype(dtype)
    rows = jnp.pad(rows, ((0, 0), (0, num_devices * block - num_classes)))
    # To the class layout: [b, N * block] -> [B, block], rows in the global batch's order.
    columns = lax.all_to_all(rows, axis_name, split_axis=1, concat_axis=0, tiled=True)
    global_labels = lax.all_gather(jnp.where(valid, labels, num_classes), axis_name, tiled=True)
    row_max = lax.all_gather(row_max, axis_name, tiled=True)

    column = lax.axis_index(axis_name) * block + jnp.arange(block)
    global_valid = global_labels < num_classes
    onehot = ((global_labels[:, None] == column) & global_valid[:, None]).astype(dtype)
    u = jnp.where(column < num_classes, columns.astype(dtype) - row_max[:, None], -jnp.inf)
    slots = _slots(global_labels, signs, bounds, step_size, max_inner_steps, num_classes)

    def step(k, slot_delta):
        shift = step_size * jnp.minimum(k, slots.steps).astype(dtype)
        e = jnp.exp(u + slot_delta[slots.index] - shift[slots.index, None])
        others = e * (1 - onehot)
        total, off_label = lax.psum(jnp.stack([e.sum(-1), others.sum(-1)]), axis_name)
        residual = (others - onehot * off_label[:, None]) / total[:, None]
        residual = jnp.where(global_valid[:, None], residual, 0)
        class_sum = jax.ops.segment_sum(residual, slots.index, num_segments=slots.steps.shape[0])
        norm = None
        if normalize:
            norm = jnp.sqrt(lax.psum(jnp.sum(class_sum**2, axis=-1, keepdims=True), axis_name))
        return slot_delta + _step_update(k, slots, class_sum, norm, step_size)

    initial = jnp.zeros((slots.steps.shape[0], block), dtype)
    initial = lax.pcast(initial, axis_name, to="varying")  # the carry differs per device
    slot_delta = lax.fori_loop(0, jnp.max(slots.steps), step, initial)
    delta = jnp.where(global_valid[:, None], slot_delta[slots.index], 0).astype(logits.dtype)
    # Back to the row layout: [B, block] -> [b, N * block].
    delta = lax.all_to_all(delta, axis_name, split_axis=0, concat_axis=1, tiled=True)
    return delta[:, :num_classes]
