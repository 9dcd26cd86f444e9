"""Candidate reformulations of the inner solver's loop, timed against ``lpjax.lpl_perturbation``.

Evidence for a proposed change to lpjax/_solver.py (nothing here is used by the library).
Same inputs as inner_solver.py (every class signed, bounds = K * alpha); the variants
compute ``softmax(u) - onehot(y)`` as the library does (the true-class entry as
``-sum_{j != y} p_j``). Variants:

* ``lpjax``: the library's solver (the baseline of every ratio);
* ``no_count_division``: the step direction ``g_c / ||g_c||`` does not change when
  ``g_c`` is scaled by ``1 / N_c > 0``, so the class sums are normalised directly, with the
  floor scaled to match (``max(||s_c||, N_c * 1e-12)``); saves one ``[slots, C]`` pass
  per step;
* ``static_loop``: the library's arithmetic with a static trip count (``max_steps`` a
  Python int, as a config's ``floor(max eps / alpha)`` would give) and ``unroll=5``;
* ``carry_logits``: as ``no_count_division``, and the loop carries the perturbed logits
  ``u^k`` (``[B, C]``) instead of the class perturbations, so the separate gather of
  ``delta[slot]`` before the softmax disappears (the update's gather is fused into the
  add); the result is ``u^K - u``, which is the definition of delta in the method spec.

Each variant's largest difference to the library's result is reported (float32 rounding).

    python -m benchmarks.solver_variants [--repeats 15] [--out F]
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common

SIZES = ((128, 10, 40), (128, 100, 50), (256, 1000, 50), (256, 8142, 50))


def _slots(labels, num_classes, signs, bounds, step_size, dtype):
    """Per-slot bookkeeping, as in lpjax/_solver.py (no ``where``, no ``axis_name``)."""
    import jax
    import jax.numpy as jnp

    import lpjax

    valid = (labels >= 0) & (labels < num_classes)
    weight = valid.astype(dtype)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype) * weight[:, None]
    masked = jnp.where(valid, labels, num_classes)
    num_slots = masked.shape[0]
    slot_classes = jnp.unique(masked, size=num_slots, fill_value=num_classes)
    slot = jnp.minimum(jnp.searchsorted(slot_classes, masked), num_slots - 1)
    class_steps = jnp.where(signs != 0, lpjax.num_inner_steps(bounds, step_size), 0)
    slot_steps = jnp.append(class_steps, 0)[slot_classes]
    slot_signs = jnp.append(signs.astype(dtype), 0)[slot_classes]
    counts = jax.ops.segment_sum(weight, slot, num_segments=num_slots)
    return weight, onehot, slot, slot_steps, slot_signs, jnp.maximum(counts, 1)[:, None]


def _softmax_minus_onehot(logits, onehot):
    """As lpjax/_solver.py computes it: ``-sum_{j != y} p_j`` on the true class."""
    import jax

    others = jax.nn.softmax(logits) * (1 - onehot)
    return others - onehot * others.sum(axis=-1, keepdims=True)


def static_loop(logits, labels, signs, bounds, step_size, *, max_steps, unroll):
    """The library's arithmetic, with a trip count known at trace time, partly unrolled.

    ``max_steps`` (a Python int, e.g. ``floor(max eps / alpha)`` from the config) replaces
    the traced ``max_c K_c``; classes with fewer steps are masked as before. A static
    trip count lets XLA drop the per-iteration loop condition (on a GPU: a device-to-host
    copy of the predicate every iteration) and unroll.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    dtype = jnp.float32
    u = logits.astype(dtype)
    b, c = u.shape
    weight, onehot, slot, slot_steps, slot_signs, counts = _slots(
        labels, c, signs, bounds, step_size, dtype
    )

    def step(k, slot_delta):
        residual = _softmax_minus_onehot(u + slot_delta[slot], onehot) * weight[:, None]
        class_grad = jax.ops.segment_sum(residual, slot, num_segments=b) / counts
        norm = jnp.linalg.norm(class_grad, axis=-1, keepdims=True)
        direction = class_grad / jnp.maximum(norm, 1e-12)
        moving = jnp.where(k < slot_steps, slot_signs, 0)
        return slot_delta + (step_size * moving)[:, None] * direction

    slot_delta = lax.fori_loop(0, max_steps, step, jnp.zeros((b, c), dtype), unroll=unroll)
    return (slot_delta[slot] * weight[:, None]).astype(logits.dtype)


def no_count_division(logits, labels, signs, bounds, step_size):
    import jax
    import jax.numpy as jnp
    from jax import lax

    dtype = jnp.float32
    u = logits.astype(dtype)
    b, c = u.shape
    weight, onehot, slot, slot_steps, slot_signs, counts = _slots(
        labels, c, signs, bounds, step_size, dtype
    )

    def step(k, slot_delta):
        residual = _softmax_minus_onehot(u + slot_delta[slot], onehot) * weight[:, None]
        class_sum = jax.ops.segment_sum(residual, slot, num_segments=b)
        norm = jnp.linalg.norm(class_sum, axis=-1, keepdims=True)
        direction = class_sum / jnp.maximum(norm, counts * 1e-12)
        moving = jnp.where(k < slot_steps, slot_signs, 0)
        return slot_delta + (step_size * moving)[:, None] * direction

    slot_delta = lax.fori_loop(0, jnp.max(slot_steps), step, jnp.zeros((b, c), dtype))
    return (slot_delta[slot] * weight[:, None]).astype(logits.dtype)


def carry_logits(logits, labels, signs, bounds, step_size):
    import jax
    import jax.numpy as jnp
    from jax import lax

    dtype = jnp.float32
    u = logits.astype(dtype)
    b, c = u.shape
    weight, onehot, slot, slot_steps, slot_signs, counts = _slots(
        labels, c, signs, bounds, step_size, dtype
    )

    def step(k, v):
        residual = _softmax_minus_onehot(v, onehot) * weight[:, None]
        class_sum = jax.ops.segment_sum(residual, slot, num_segments=b)
        norm = jnp.linalg.norm(class_sum, axis=-1, keepdims=True)
        direction = class_sum / jnp.maximum(norm, counts * 1e-12)
        moving = jnp.where(k < slot_steps, slot_signs, 0)
        update = (step_size * moving)[:, None] * direction
        return v + update[slot] * weight[:, None]

    v = lax.fori_loop(0, jnp.max(slot_steps), step, u)
    return ((v - u) * weight[:, None]).astype(logits.dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--step-size", type=float, default=0.01)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _common.configure_xla()

    import jax
    import jax.numpy as jnp

    import lpjax
    from benchmarks.inner_solver import make_inputs

    emit = _common.Emitter(args.out)
    emit({"bench": "solver_variants_machine", **_common.machine_info()})
    alpha = args.step_size
    sizes = ((16, 10, 5), (32, 100, 5)) if args.smoke else SIZES
    rows = []
    for b, c, k in sizes:
        logits, labels, signs, bounds = make_inputs(b, c, k, alpha)
        fns = {
            "lpjax": jax.jit(
                lambda lg, y, s, bd: lpjax.lpl_perturbation(
                    lg, y, signs=s, bounds=bd, step_size=alpha
                )
            ),
            "no_count_division": jax.jit(
                lambda lg, y, s, bd: no_count_division(lg, y, s, bd, alpha)
            ),
            "carry_logits": jax.jit(lambda lg, y, s, bd: carry_logits(lg, y, s, bd, alpha)),
            "static_loop": jax.jit(
                lambda lg, y, s, bd, k=k: static_loop(lg, y, s, bd, alpha, max_steps=k, unroll=5)
            ),
        }
        args_ = (logits, labels, signs, bounds)
        reference = fns["lpjax"](*args_)
        errors = {name: float(jnp.abs(f(*args_) - reference).max()) for name, f in fns.items()}
        samples = _common.time_interleaved(
            {name: (lambda f=f, a=args_: f(*a)) for name, f in fns.items()},
            repeats=min(args.repeats, 5) if args.smoke else args.repeats,
            warmup=1,
        )
        base = _common.summarize(samples["lpjax"])
        for name in fns:
            s = _common.summarize(samples[name])
            rows.append(
                emit(
                    {
                        "bench": "solver_variant",
                        "variant": name,
                        "batch_size": b,
                        "num_classes": c,
                        "num_steps": k,
                        "median_ms": 1e3 * s["median_wall_s"],
                        "median_cpu_ms": 1e3 * s["median_cpu_s"],
                        "ratio_to_lpjax": _common.ratio(s["median_wall_s"], base["median_wall_s"]),
                        "ratio_to_lpjax_cpu": _common.ratio(
                            s["median_cpu_s"], base["median_cpu_s"]
                        ),
                        "max_abs_diff_to_lpjax": errors[name],
                    }
                )
            )
    _common.print_table(
        "Solver loop variants (interleaved; ratio to lpjax.lpl_perturbation)",
        [
            {
                "B": r["batch_size"],
                "C": r["num_classes"],
                "K": r["num_steps"],
                "variant": r["variant"],
                "ms": r["median_ms"],
                "cpu ms": r["median_cpu_ms"],
                "x lpjax": r["ratio_to_lpjax"],
                "x lpjax cpu": r["ratio_to_lpjax_cpu"],
                "max |diff|": r["max_abs_diff_to_lpjax"],
            }
            for r in rows
        ],
        ("B", "C", "K", "variant", "ms", "cpu ms", "x lpjax", "x lpjax cpu", "max |diff|"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
