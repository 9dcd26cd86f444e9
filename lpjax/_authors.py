"""LPL as the authors' long-tail *scripts* run it -- not the paper's equations.

An ablation mode (docs/method.md, section 5): it reproduces what the public long-tail
scripts (github.com/limengyang1992/lpl, ``lpl-longtail-*``) do where they depart from
Eq. 11/12 of the paper, so that a study can measure what those departures change. It
is never a default; :func:`lpjax.lpl_longtail_transform` is the paper's LPL.

The three departures it reproduces, each against the paper's LPL (docs/method.md, 3.3):

1. **The gradient flows through the unrolled inner loop.** The paper holds ``delta``
   fixed (Danskin: ``stop_gradient``); the scripts back-propagate the training loss
   through every inner step, which re-weights the classes implicitly.
2. **The step is normalised by column norms.** The paper steps ``s_c alpha g_c`` (or,
   as L2 PGD, divides ``g_c`` by its own norm). The scripts divide each entry ``G[c, j]``
   of the ``[C, C]`` class-mean gradient matrix by the norm of its *column* ``j`` (over
   the classes), ``||G[:, j]||_2`` (``norm(dim=0)`` where a row norm was meant).
3. **Their step counts.** The paper takes ``K_c = floor(eps_c / alpha)``. The scripts
   give the rarest class ``S`` steps, a tail class ``trunc(S n_min / n_c)``, a head class
   ``trunc(h S n_c / n_max)``, with no floor: a class whose share is below one step is
   not perturbed at all (at CIFAR-10-LT r = 100 with ``S = 10``, ``h = 0.6``: the four
   head classes 6, 3, 2, 1 steps; the tail 0, 1, 2, 3, 6, 10).

Not reproduced (they stay bugs, docs/method.md 5): absent classes in the mean rule,
signs recomputed at every inner step, the split hard-coded by class index (here the
classes are ranked by count, as :func:`lpjax.longtail_signs_and_bounds` does), weight
decay applied twice, the best epoch chosen on the test set. The scripts' own loop runs
``num_classes`` iterations; here it runs ``max_c K_c`` (the same perturbation: a class
stops after its ``K_c`` steps either way).

It builds the ``[C, C]`` class-mean gradient matrix, as the scripts do: meant for
ablations at small ``C`` (CIFAR-10, Fashion-MNIST), not for iNaturalist's 8,142 classes.
It does not take an ``axis_name``: use it in the global view (``jax.jit`` over sharded
arrays), where the class means are the global batch's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lpjax import _checks
from lpjax._signs_and_bounds import longtail_signs_and_bounds
from lpjax._transforms import LogitTransform, stateless

# Column norms below this are treated as this (an all-zero column: no class moves along it).
_MIN_COLUMN_NORM = 1e-12


def authors_step_counts(
    class_counts, *, num_head_classes: int, num_steps: int, head_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """The scripts' signs and step counts: ``(signs [C] int32, steps [C] int32)``.

    The ``num_head_classes`` most frequent classes (ranked by count, ties to the lower
    index) are minimised (``-1``) with ``trunc(head_scale num_steps n_c / n_max)`` steps;
    the others maximised (``+1``) with ``trunc(num_steps n_min / n_c)`` steps. No floor:
    a share below one step gives 0 steps.

    Example::

      >>> import lpjax
      >>> signs, steps = lpjax.authors_step_counts(
      ...     [5000, 1000, 200, 50], num_head_classes=1, num_steps=10, head_scale=0.6)
      >>> signs.tolist(), steps.tolist()
      ([-1, 1, 1, 1], [6, 0, 2, 10])
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1; got {num_steps!r}.")
    _checks.check_nonnegative("head_scale", head_scale)
    signs, _ = longtail_signs_and_bounds(
        class_counts, num_head_classes=num_head_classes, epsilon=0.0
    )
    signs = np.asarray(signs, np.int32)
    counts = np.asarray(class_counts, np.float64)
    head = num_steps * head_scale * counts / counts.max()
    tail = num_steps * counts.min() / counts
    # trunc of the float64 share, with the solver's tolerance for whole numbers of steps.
    steps = np.floor(np.where(signs < 0, head, tail) + 1e-6).astype(np.int32)
    return signs, steps


def authors_lpl_perturbation(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    signs: jax.typing.ArrayLike,
    steps: jax.typing.ArrayLike,
    *,
    step_size: float,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""The scripts' perturbed logits ``u^K``, differentiable through every inner step.

    With ``G^k[c] = mean_{i in S_c} (softmax(u_i^k) - e_{y_i})`` (the ``[C, C]`` matrix of
    class-mean gradients, over the real rows) and its column norms
    ``n_j = ||G^k[:, j]||_2``, every sample ``i`` of class ``c`` with ``k < K_c`` moves

    .. math:: u_i^{k+1} = u_i^k + s_c\,\alpha\,G^k[c, :] / n,

    for ``k = 0 .. max_c K_c - 1``. Nothing is held fixed: the training gradient flows
    through ``G^k`` into ``u`` (the paper stops it; see the module's docstring).

    Args:
      logits: ``[batch, num_classes]``.
      labels: ``[batch]`` integer labels.
      signs: ``[num_classes]`` in {-1, 0, +1} (:func:`authors_step_counts`).
      steps: ``[num_classes]`` concrete non-negative step counts ``K_c``.
      step_size: ``alpha``.
      where: optional ``[batch]`` boolean mask; padding rows neither move nor count.

    Returns:
      ``[batch, num_classes]`` perturbed logits, in the logits' dtype (float32 inside).

    Example -- one tail class (sign +1) and one head class (-1), one step each::

      >>> import jax.numpy as jnp, lpjax
      >>> u = lpjax.authors_lpl_perturbation(
      ...     jnp.zeros((2, 2)), jnp.array([0, 1]), jnp.array([-1, 1]), jnp.array([1, 1]),
      ...     step_size=0.1)
      >>> [[round(x, 4) for x in row] for row in u.tolist()]
      [[0.0707, -0.0707], [0.0707, -0.0707]]
    """
    batch_size, num_classes = _checks.check_logits(logits)
    _checks.check_where(where, batch_size)
    steps = np.asarray(steps)
    if steps.shape != (num_classes,) or (steps < 0).any():
        raise ValueError(
            f"steps must be {num_classes} concrete non-negative counts; got {steps!r}."
        )
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    u = logits.astype(dtype)
    labels = jnp.asarray(labels)
    real = jnp.ones(batch_size, bool) if where is None else jnp.asarray(where, bool)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    members = onehot * real[:, None].astype(dtype)  # [B, C]: row i is class y_i, if real
    class_sizes = jnp.maximum(members.sum(0), 1.0)
    sample_sign = jnp.asarray(signs, dtype)[labels] * real.astype(dtype)
    sample_steps = jnp.asarray(steps, jnp.int32)[labels]

    def inner_step(u, k):
        residual = jax.nn.softmax(u, axis=-1) - onehot  # [B, C]
        class_mean = (members.T @ residual) / class_sizes[:, None]  # G[c, j]
        column_norm = jnp.sqrt(jnp.maximum(jnp.sum(class_mean**2, 0), _MIN_COLUMN_NORM**2))
        direction = class_mean / column_norm  # column-normalised, as the scripts
        moving = (k < sample_steps).astype(dtype) * sample_sign
        return u + (step_size * moving)[:, None] * direction[labels], None

    u, _ = jax.lax.scan(inner_step, u, jnp.arange(int(steps.max(initial=0))))
    return u.astype(logits.dtype)


def lpl_authors_longtail_transform(
    class_counts,
    *,
    num_head_classes: int,
    num_steps: int,
    step_size: float,
    head_scale: float = 1.0,
) -> LogitTransform:
    """The authors' long-tail scripts' LPL as a transform (an ablation, not the paper's).

    Signs and step counts from :func:`authors_step_counts`, the perturbation from
    :func:`authors_lpl_perturbation` (column-normalised step, gradient through the
    unrolled loop). The authors' CIFAR-10-LT point: 4 head classes, ``num_steps = 10``,
    ``step_size = 0.15`` (tail budget 1.5), ``head_scale = 0.6``.

    Example::

      >>> import jax.numpy as jnp, lpjax
      >>> t = lpjax.lpl_authors_longtail_transform(
      ...     [500, 50], num_head_classes=1, num_steps=2, step_size=0.1)
      >>> u, _ = t.apply(jnp.zeros((2, 2)), jnp.array([0, 1]), t.init())
      >>> [round(x, 3) for x in u[1].tolist()]  # the tail sample: its loss raised twice
      [0.146, -0.146]

    References:
      Li et al., "Class-Level Logit Perturbation", TNNLS 2023 (the paper's LPL is
      :func:`lpjax.lpl_longtail_transform`); the authors' scripts, docs/method.md 5.
    """
    signs, steps = authors_step_counts(
        class_counts, num_head_classes=num_head_classes, num_steps=num_steps, head_scale=head_scale
    )
    _checks.check_nonnegative("step_size", step_size)

    def perturb(logits, labels, where, axis_name):
        if axis_name is not None:
            raise ValueError(
                "the authors' LPL takes no axis_name: use it in the global view (jax.jit)."
            )
        return authors_lpl_perturbation(
            logits, labels, signs, steps, step_size=step_size, where=where
        )

    return stateless(perturb)
