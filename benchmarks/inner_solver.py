"""Benchmark of LPL's inner solver, ``lpjax.lpl_perturbation``, alone under ``jax.jit``.

For each (B, C, K): the median time of the jitted solver (after compilation, with
``block_until_ready``) next to the time of plain cross-entropy and its gradient on the same
logits (``jax.value_and_grad`` of the mean of
``optax.softmax_cross_entropy_with_integer_labels``), timed interleaved in the same process;
XLA's memory figures of both (``memory_analysis()``: temporaries, arguments, outputs); and,
as a cross-check, the growth of the process RSS while each first runs.

Inputs: logits ~ N(0, 2^2), labels covering min(B, C) distinct classes, every class signed
(alternately +1 and -1), ``bounds = K * step_size`` for every class, so that the loop runs
exactly K steps. Each (B, C, K) runs in a fresh subprocess (clean RSS figures).

    python -m benchmarks.inner_solver                 # sizes, C sweep, K sweep
    python -m benchmarks.inner_solver --smoke         # tiny sizes, a few seconds
    python -m benchmarks.inner_solver --out results/inner_solver.jsonl
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common

SIZES = ((128, 10, 40), (128, 100, 50), (256, 1000, 50), (256, 8142, 50))
C_SWEEP = ((256, 10, 50), (256, 100, 50), (256, 1000, 50), (256, 8142, 50))
K_SWEEP = ((256, 1000, 10), (256, 1000, 25), (256, 1000, 50), (256, 1000, 100))
SMOKE_SIZES = ((16, 10, 5), (32, 100, 5))
SMOKE_C_SWEEP = ((32, 10, 5), (32, 100, 5))
SMOKE_K_SWEEP = ((32, 100, 2), (32, 100, 5))
MIB = 2**20


def make_inputs(batch_size: int, num_classes: int, num_steps: int, step_size: float, seed=0):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((batch_size, num_classes), dtype=np.float32)
    if num_classes <= batch_size:  # every class present
        labels = rng.permutation(np.arange(batch_size) % num_classes)
    else:  # batch_size distinct classes: the most slots the solver can have
        labels = rng.choice(num_classes, size=batch_size, replace=False)
    signs = np.where(np.arange(num_classes) % 2 == 0, 1, -1).astype(np.int32)
    bounds = np.full(num_classes, num_steps * step_size, np.float32)
    return tuple(jnp.asarray(a) for a in (logits, labels.astype(np.int32), signs, bounds))


def measure_one(batch_size, num_classes, num_steps, *, step_size, repeats) -> dict:
    """Times and sizes the solver and the CE baseline at one (B, C, K), in this process."""
    import jax
    import numpy as np
    import optax

    import lpjax

    rss_start = _common.max_rss_bytes()
    logits, labels, signs, bounds = make_inputs(batch_size, num_classes, num_steps, step_size)

    def solver(logits, labels, signs, bounds):
        return lpjax.lpl_perturbation(
            logits, labels, signs=signs, bounds=bounds, step_size=step_size
        )

    def ce_mean(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    solver_c = jax.jit(solver).lower(logits, labels, signs, bounds).compile()
    ce_c = jax.jit(jax.value_and_grad(ce_mean)).lower(logits, labels).compile()

    steps = int(lpjax.num_inner_steps(bounds, np.float32(step_size)).max())  # the loop's max K

    with _common.RssSampler() as ce_rss:
        _common.block(ce_c(logits, labels))
    with _common.RssSampler() as solver_rss:
        _common.block(solver_c(logits, labels, signs, bounds))
    samples = _common.time_interleaved(
        {
            "solver": lambda: solver_c(logits, labels, signs, bounds),
            "ce": lambda: ce_c(logits, labels),
        },
        repeats=repeats,
        warmup=1,
    )
    solver_t = _common.summarize(samples["solver"])
    ce_t = _common.summarize(samples["ce"])
    solver_mem = _common.memory_stats(solver_c)
    ce_mem = _common.memory_stats(ce_c)
    return {
        "bench": "inner_solver",
        "batch_size": batch_size,
        "num_classes": num_classes,
        "num_steps": num_steps,
        "steps_taken": steps,
        "step_size": step_size,
        "solver_median_ms": 1e3 * solver_t["median_wall_s"],
        "solver_median_cpu_ms": 1e3 * solver_t["median_cpu_s"],
        "solver_iqr_ms": 1e3 * solver_t.get("iqr_wall_s", float("nan")),
        "ce_median_ms": 1e3 * ce_t["median_wall_s"],
        "ce_median_cpu_ms": 1e3 * ce_t["median_cpu_s"],
        "ratio_solver_to_ce": _common.ratio(solver_t["median_wall_s"], ce_t["median_wall_s"]),
        "ratio_solver_to_ce_cpu": _common.ratio(solver_t["median_cpu_s"], ce_t["median_cpu_s"]),
        "per_step_ms": 1e3 * solver_t["median_wall_s"] / max(steps, 1),
        "solver_temp_bytes": solver_mem.get("temp_size_in_bytes"),
        "solver_total_bytes": solver_mem.get("total_in_bytes"),
        "solver_memory": solver_mem,
        "ce_temp_bytes": ce_mem.get("temp_size_in_bytes"),
        "ce_total_bytes": ce_mem.get("total_in_bytes"),
        "ce_memory": ce_mem,
        "logits_bytes": logits.size * logits.dtype.itemsize,
        "cc_matrix_bytes": 4 * num_classes * num_classes,  # what a [C, C] float32 would take
        "solver_rss_growth_first_run_bytes": solver_rss.growth,
        "ce_rss_growth_first_run_bytes": ce_rss.growth,
        "maxrss_growth_process_bytes": _common.max_rss_bytes() - rss_start,
        "repeats": repeats,
    }


def _table_row(r: dict) -> dict:
    return {
        "B": r["batch_size"],
        "C": r["num_classes"],
        "K": r["steps_taken"],
        "solver ms": r["solver_median_ms"],
        "solver cpu ms": r["solver_median_cpu_ms"],
        "CE+grad ms": r["ce_median_ms"],
        "solver/CE": r["ratio_solver_to_ce"],
        "ms/step": r["per_step_ms"],
        "temp MiB": r["solver_temp_bytes"] / MIB,
        "total MiB": r["solver_total_bytes"] / MIB,
        "CE total MiB": r["ce_total_bytes"] / MIB,
        "RSS+ MiB": r["solver_rss_growth_first_run_bytes"] / MIB,
        "maxRSS+ MiB": r["maxrss_growth_process_bytes"] / MIB,
    }


COLUMNS = (
    "B",
    "C",
    "K",
    "solver ms",
    "solver cpu ms",
    "CE+grad ms",
    "solver/CE",
    "ms/step",
    "temp MiB",
    "total MiB",
    "CE total MiB",
    "RSS+ MiB",
    "maxRSS+ MiB",
)


def _growth(records: dict, first: tuple, last: tuple, emit) -> dict | None:
    if first not in records or last not in records:
        return None
    a, b = records[first], records[last]
    out = {
        "bench": "inner_solver_growth",
        "from": list(first),
        "to": list(last),
        "size_ratio": (last[0] * last[1] * last[2]) / (first[0] * first[1] * first[2]),
        "time_ratio": _common.ratio(b["solver_median_ms"], a["solver_median_ms"]),
        "cpu_time_ratio": _common.ratio(b["solver_median_cpu_ms"], a["solver_median_cpu_ms"]),
        "temp_memory_ratio": _common.ratio(b["solver_temp_bytes"], a["solver_temp_bytes"]),
        "total_memory_ratio": _common.ratio(b["solver_total_bytes"], a["solver_total_bytes"]),
    }
    if out["size_ratio"] <= 10.0:  # the check only means something for a <= 10x problem
        out["within_10x"] = bool(out["time_ratio"] <= 10.0 and out["total_memory_ratio"] <= 10.0)
    return emit(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each function")
    parser.add_argument("--step-size", type=float, default=0.01, help="alpha of the solver")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a few seconds)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per size")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # "B,C,K" (child)
    args = parser.parse_args(argv)

    if args.single:
        _common.configure_xla()
        b, c, k = (int(v) for v in args.single.split(","))
        emit = _common.Emitter(args.out)
        emit(measure_one(b, c, k, step_size=args.step_size, repeats=args.repeats))
        return 0

    sizes, c_sweep, k_sweep = (
        (SMOKE_SIZES, SMOKE_C_SWEEP, SMOKE_K_SWEEP) if args.smoke else (SIZES, C_SWEEP, K_SWEEP)
    )
    repeats = min(args.repeats, 5) if args.smoke else args.repeats
    configs = list(dict.fromkeys((*sizes, *c_sweep, *k_sweep)))  # unique, in order

    _common.configure_xla()
    import jax  # noqa: F401  (after configure_xla)

    emit = _common.Emitter(args.out)
    emit({"bench": "inner_solver_machine", **_common.machine_info()})
    records = {}
    for b, c, k in configs:
        if args.in_process:
            rec = emit(measure_one(b, c, k, step_size=args.step_size, repeats=repeats))
        else:
            out, rc = _common.run_json_subprocess(
                [
                    "-m",
                    "benchmarks.inner_solver",
                    "--single",
                    f"{b},{c},{k}",
                    "--repeats",
                    str(repeats),
                    "--step-size",
                    str(args.step_size),
                ]
            )
            if rc != 0 or not out:
                emit({"bench": "inner_solver", "batch_size": b, "num_classes": c, "error": rc})
                continue
            rec = emit(out[-1])
        records[(b, c, k)] = rec

    for title, keys in (
        ("Inner solver vs CE + gradient (same logits, same process)", sizes),
        ("C sweep (B, K fixed)", c_sweep),
        ("K sweep (B, C fixed)", k_sweep),
    ):
        rows = [_table_row(records[key]) for key in keys if key in records]
        _common.print_table(title, rows, COLUMNS)

    growth = []
    pairs = ((c_sweep[-2], c_sweep[-1]), (c_sweep[0], c_sweep[-1]), (k_sweep[0], k_sweep[-1]))
    for first, last in dict.fromkeys(pairs):
        g = _growth(records, first, last, emit)
        if g:
            growth.append(g)
    _common.print_table(
        "Growth (time and XLA memory of the solver)",
        [
            {
                "from": tuple(g["from"]),
                "to": tuple(g["to"]),
                "B*C*K x": g["size_ratio"],
                "time x": g["time_ratio"],
                "cpu time x": g["cpu_time_ratio"],
                "temp mem x": g["temp_memory_ratio"],
                "total mem x": g["total_memory_ratio"],
                "<=10x": g.get("within_10x", "-"),
            }
            for g in growth
        ],
        ("from", "to", "B*C*K x", "time x", "cpu time x", "temp mem x", "total mem x", "<=10x"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
