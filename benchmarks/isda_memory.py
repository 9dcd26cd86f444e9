"""Memory of ISDA's state and of one ISDA apply: full covariances against diagonal ones.

For each (C, D): the bytes of the :class:`lpjax.IsdaState` pytree of
``isda_transform(C, D, covariance=...)`` from ``jax.eval_shape`` (nothing is allocated),
and, with ``--compile``, XLA's buffer assignment of one jitted ``apply`` (update the
statistics, then augment) at batch B from ``.lower(...).compile().memory_analysis()``
(compiled only, never run). The baseline is the full form; ``full / diag`` is the ratio.

    python -m benchmarks.isda_memory [--compile] [--batch 256] [--out F]
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common

# CIFAR-100 with ResNet-32 (D = 64) and WRN-28-10 (D = 640); ImageNet-1k with ResNet-50.
SIZES = ((100, 64), (100, 640), (1000, 2048))


def state_bytes(num_classes: int, feature_dim: int, covariance: str) -> int:
    import jax

    import lpjax

    shapes = jax.eval_shape(
        lambda: lpjax.init_isda_state(num_classes, feature_dim, covariance=covariance)
    )
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def apply_memory(num_classes: int, feature_dim: int, covariance: str, batch: int) -> dict:
    import jax
    import jax.numpy as jnp

    import lpjax

    transform = lpjax.isda_transform(
        num_classes, feature_dim, total_steps=100, covariance=covariance
    )

    def apply(logits, labels, state, features, kernel):
        return transform.apply(
            logits, labels, state, features=features, classifier={"kernel": kernel}
        )

    f32 = jnp.float32
    args = (
        jax.ShapeDtypeStruct((batch, num_classes), f32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
        jax.eval_shape(transform.init),
        jax.ShapeDtypeStruct((batch, feature_dim), f32),
        jax.ShapeDtypeStruct((feature_dim, num_classes), f32),
    )
    compiled = jax.jit(apply, donate_argnums=2).lower(*args).compile()
    return _common.memory_stats(compiled)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also XLA's memory of one apply")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _common.configure_xla()
    emit = _common.Emitter(args.out, benchmark="isda_memory", **_common.machine_info())
    rows = []
    mib = 2.0**20
    for num_classes, feature_dim in SIZES:
        row = {"C": num_classes, "D": feature_dim}
        for covariance in ("full", "diagonal"):
            row[f"{covariance}_state_bytes"] = state_bytes(num_classes, feature_dim, covariance)
            if args.compile:
                stats = apply_memory(num_classes, feature_dim, covariance, args.batch)
                row[f"{covariance}_apply_total_bytes"] = stats.get("total_in_bytes")
        row["full MiB"] = row["full_state_bytes"] / mib
        row["diag MiB"] = row["diagonal_state_bytes"] / mib
        row["full / diag"] = row["full_state_bytes"] / row["diagonal_state_bytes"]
        if args.compile:
            row["full apply MiB"] = row["full_apply_total_bytes"] / mib
            row["diag apply MiB"] = row["diagonal_apply_total_bytes"] / mib
        rows.append(emit(row))
    columns = ["C", "D", "full MiB", "diag MiB", "full / diag"]
    if args.compile:
        columns += ["full apply MiB", "diag apply MiB"]
    _common.print_table("ISDA state (and one apply) in memory", rows, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
