"""LPL's traffic between devices per train step, read from the compiled step, old layout vs new.

Compiles the README's LA + LPL train step (a linear model ``images @ w + b`` with
``D = 128`` features, ``optax.sgd`` with momentum; LPL with every class signed and
``K = 25`` inner steps) and the same step with plain cross-entropy, in each data-parallel
form, and reads every collective from the optimized HLO (benchmarks/_hlo.py; those inside
the solver's loop are charged ``K`` times). For each form it prints the bytes on the wire
per device per train step, LPL's share (the LA + LPL step's bytes less the CE step's) and
that share's ratio to one global float32 logits array (``4 B C`` bytes). Forms:

* ``global_auto_mesh``: ``jax.jit`` over a batch sharded on ``Auto`` mesh axes, traced
  inside ``jax.set_mesh(mesh)``;
* ``global_explicit``: the same with ``Explicit`` mesh axes;
* ``shard_map``: ``jax.shard_map`` with ``axis_name="data"``;
* ``global_auto_no_mesh``: ``Auto`` axes without ``jax.set_mesh`` (the solver cannot see
  the mesh, so it keeps the row layout and XLA partitions it).

Each form is compiled with the class-sharded solver (``new``) and with the row-layout
solver of lpjax 0.2.0 (``old``, ``lpjax._solver.row_layout()``). Shapes: (B, C, devices) =
(512, 1000, 8) and (4096, 8142, 8) compiled, and their solvers timed, old against new,
on 8 fake CPU devices; (4096, 8142, 64) compiled only (a subprocess with 64 fake
devices). A multi-label LA + LPL row shows its own solver's traffic (a ``[2, C]``
all-reduce per inner step). On one device the solver's time is compared with lpjax
0.2.0's solver, read from git history when the checkout has it.

    python -m benchmarks.communication              # about 5 minutes on 2 CPU cores
    python -m benchmarks.communication --smoke      # tiny sizes, under a minute
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import types

from benchmarks import _common, _hlo

FEATURES = 128
STEPS = 25
STEP_SIZE = 0.01
MIB = 2**20
FORMS = ("global_auto_mesh", "global_explicit", "shard_map", "global_auto_no_mesh")
RELEASE_0_2_0 = "b7299cc"  # lpjax 0.2.0, the last release with only the row layout


def _class_counts(num_classes):
    import numpy as np

    return np.floor(1000 * 100.0 ** (-np.arange(num_classes) / max(num_classes - 1, 1))) + 1


def _transforms(num_classes):
    import lpjax

    counts = _class_counts(num_classes)
    lpl = lpjax.lpl_longtail_transform(
        counts,
        num_head_classes=num_classes // 3,
        epsilon=STEPS * STEP_SIZE,
        step_size=STEP_SIZE,
    )
    multilabel = lpjax.lpl_multilabel_longtail_transform(
        counts, num_head_classes=num_classes // 3, epsilon=STEPS * STEP_SIZE, step_size=STEP_SIZE
    )
    la = lpjax.logit_adjustment_transform(counts)
    return {
        "ce": (lpjax.identity(), "integer"),
        "la_lpl": (lpjax.chain(la, lpl), "integer"),
        "multilabel_la_lpl": (lpjax.chain(la, multilabel), "multihot"),
    }


def _loss(perturbed, labels, kind):
    import optax

    import lpjax

    if kind == "multihot":
        return optax.sigmoid_binary_cross_entropy(perturbed, labels).sum(-1)
    return lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels)


def _inputs(batch_size, num_classes, kind):
    import jax
    import jax.numpy as jnp

    key_x, key_y = jax.random.split(jax.random.key(0))
    images = jax.random.normal(key_x, (batch_size, FEATURES))
    if kind == "multihot":
        labels = (jax.random.uniform(key_y, (batch_size, num_classes)) < 0.05).astype(jnp.int32)
    else:
        labels = jax.random.randint(key_y, (batch_size,), 0, num_classes)
    params = {"w": jnp.zeros((FEATURES, num_classes)), "b": jnp.zeros(num_classes)}
    return params, images, labels


def _compiled_step(transform, kind, form, num_devices, batch_size, num_classes):
    """The compiled train step of ``transform`` in ``form`` (a fresh trace every call)."""
    import jax
    import optax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    axis_type = AxisType.Explicit if form == "global_explicit" else AxisType.Auto
    mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(axis_type,))
    tx = optax.sgd(0.1, momentum=0.9)
    params, images, labels = _inputs(batch_size, num_classes, kind)
    opt_state = tx.init(params)

    def objective(params, images, labels, axis_name=None):
        logits = images @ params["w"] + params["b"]
        perturbed, _ = transform.apply(logits, labels, transform.init(), axis_name=axis_name)
        return _loss(perturbed, labels, kind).sum() / batch_size

    def step(params, opt_state, images, labels, axis_name=None):
        loss, grads = jax.value_and_grad(objective)(params, images, labels, axis_name)
        updates, opt_state = tx.update(grads, opt_state, params)
        if axis_name is not None:
            loss = jax.lax.psum(loss, axis_name)
        return optax.apply_updates(params, updates), opt_state, loss

    if form == "shard_map":
        mapped = jax.shard_map(
            functools.partial(step, axis_name="data"),
            mesh=mesh,
            in_specs=(P(), P(), P("data"), P("data")),
            out_specs=(P(), P(), P()),
        )
        fn = jax.jit(mapped)
    else:
        fn = jax.jit(lambda *a: step(*a))
    args = (
        jax.device_put(params, NamedSharding(mesh, P())),
        jax.device_put(opt_state, NamedSharding(mesh, P())),
        jax.device_put(images, NamedSharding(mesh, P("data"))),
        jax.device_put(labels, NamedSharding(mesh, P("data"))),
    )
    if form in ("global_auto_mesh", "global_explicit"):
        with jax.set_mesh(mesh):
            return fn.lower(*args).compile(), args
    return fn.lower(*args).compile(), args


def _layout(name):
    import contextlib

    from lpjax import _solver

    return _solver.row_layout() if name == "old" else contextlib.nullcontext()


def communication_rows(batch_size, num_classes, num_devices, forms=FORMS):
    """One record per (method, form, layout): bytes on the wire per device per step."""
    logits_bytes = 4 * batch_size * num_classes
    rows = []
    baseline = {}
    for method, (transform, kind) in _transforms(num_classes).items():
        for form in forms:
            if method == "multilabel_la_lpl" and form != "global_explicit":
                continue
            for layout in ("old", "new") if method == "la_lpl" else ("new",):
                with _layout(layout):
                    compiled, _ = _compiled_step(
                        transform, kind, form, num_devices, batch_size, num_classes
                    )
                found = _hlo.collectives(
                    compiled.as_text(), loop_trips=STEPS, num_devices=num_devices
                )
                total = _hlo.wire_bytes_per_call(found)
                if method == "ce":
                    baseline[form] = total
                lpl = total - baseline[form]
                rows.append(
                    {
                        "bench": "communication",
                        "method": method,
                        "form": form,
                        "layout": layout,
                        "batch_size": batch_size,
                        "num_classes": num_classes,
                        "num_devices": num_devices,
                        "inner_steps": STEPS,
                        "wire_bytes_per_step": total,
                        "ce_wire_bytes_per_step": baseline[form],
                        "lpl_wire_bytes_per_step": lpl,
                        "lpl_share": _common.ratio(lpl, total),
                        "lpl_to_logits": lpl / logits_bytes,
                        "collectives": [
                            f"{c.kind} {c.shape} x{c.runs} (n={c.group_size})" for c in found
                        ],
                    }
                )
    return rows


def _solver_inputs(batch_size, num_classes):
    import jax
    import jax.numpy as jnp

    logits = 2 * jax.random.normal(jax.random.key(1), (batch_size, num_classes))
    labels = jax.random.randint(jax.random.key(2), (batch_size,), 0, num_classes)
    signs = jnp.where(jnp.arange(num_classes) < num_classes // 3, -1, 1)
    bounds = jnp.full((num_classes,), STEPS * STEP_SIZE)
    return logits, labels, signs, bounds


def solver_timing(batch_size, num_classes, num_devices, repeats):
    """The solver alone on ``num_devices`` devices (global view, Explicit axes), old vs new."""
    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import lpjax

    logits, labels, signs, bounds = _solver_inputs(batch_size, num_classes)
    mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(AxisType.Explicit,))
    compiled, results = {}, {}
    with jax.set_mesh(mesh):
        args = [jax.device_put(x, NamedSharding(mesh, P("data"))) for x in (logits, labels)]
        for layout in ("old", "new"):
            with _layout(layout):
                fn = jax.jit(
                    lambda u, y: lpjax.lpl_perturbation(
                        u, y, signs=signs, bounds=bounds, step_size=STEP_SIZE
                    )
                )
                compiled[layout] = fn.lower(*args).compile()
            results[layout] = np.asarray(compiled[layout](*args))
        samples = _common.time_interleaved(
            {layout: functools.partial(compiled[layout], *args) for layout in compiled},
            repeats=repeats,
        )
    old, new = (_common.summarize(samples[k]) for k in ("old", "new"))
    scale = np.abs(results["old"]).max()
    return {
        "bench": "solver_time",
        "batch_size": batch_size,
        "num_classes": num_classes,
        "num_devices": num_devices,
        "old_ms": 1e3 * old["median_wall_s"],
        "new_ms": 1e3 * new["median_wall_s"],
        "old_cpu_ms": 1e3 * old["median_cpu_s"],
        "new_cpu_ms": 1e3 * new["median_cpu_s"],
        "new_to_old": _common.ratio(new["median_wall_s"], old["median_wall_s"]),
        "new_to_old_cpu": _common.ratio(new["median_cpu_s"], old["median_cpu_s"]),
        "max_relative_difference": float(np.abs(results["new"] - results["old"]).max() / scale),
        "repeats": repeats,
    }


def _release_solver():
    """lpjax 0.2.0's ``_solver`` module, from git history; None without it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{RELEASE_0_2_0}:lpjax/_solver.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=_common.REPO_ROOT,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("lpjax_0_2_0_solver")
    exec(compile(source, "lpjax-0.2.0/_solver.py", "exec"), module.__dict__)
    return module


def one_device_timing(batch_size, num_classes, repeats):
    """One device: today's solver against lpjax 0.2.0's, same inputs, interleaved."""
    import jax
    import numpy as np

    import lpjax

    release = _release_solver()
    if release is None:
        return None
    logits, labels, signs, bounds = _solver_inputs(batch_size, num_classes)
    device = jax.devices()[0]
    logits, labels = jax.device_put((logits, labels), device)
    fns = {
        "release_0_2_0": jax.jit(
            lambda u, y: release.lpl_perturbation(
                u, y, signs=signs, bounds=bounds, step_size=STEP_SIZE
            )
        ),
        "now": jax.jit(
            lambda u, y: lpjax.lpl_perturbation(
                u, y, signs=signs, bounds=bounds, step_size=STEP_SIZE
            )
        ),
    }
    outputs = {k: np.asarray(f(logits, labels)) for k, f in fns.items()}
    samples = _common.time_interleaved(
        {k: functools.partial(f, logits, labels) for k, f in fns.items()}, repeats=repeats
    )
    before, now = (_common.summarize(samples[k]) for k in ("release_0_2_0", "now"))
    return {
        "bench": "one_device_time",
        "batch_size": batch_size,
        "num_classes": num_classes,
        "release_0_2_0_ms": 1e3 * before["median_wall_s"],
        "now_ms": 1e3 * now["median_wall_s"],
        "now_to_release": _common.ratio(now["median_wall_s"], before["median_wall_s"]),
        "now_to_release_cpu": _common.ratio(now["median_cpu_s"], before["median_cpu_s"]),
        "identical": bool(np.array_equal(outputs["now"], outputs["release_0_2_0"])),
        "repeats": repeats,
    }


def _communication_table(rows):
    table = []
    for r in rows:
        table.append(
            {
                "B": r["batch_size"],
                "C": r["num_classes"],
                "N": r["num_devices"],
                "method": r["method"],
                "form": r["form"],
                "layout": r["layout"],
                "step MiB": r["wire_bytes_per_step"] / MIB,
                "LPL MiB": r["lpl_wire_bytes_per_step"] / MIB,
                "LPL share": r["lpl_share"],
                "LPL / logits": r["lpl_to_logits"],
            }
        )
    return table


def _timing_table(emit, shapes, repeats):
    import jax

    num_devices = jax.device_count()
    timings = []
    for batch_size, num_classes in shapes:
        n = repeats if num_classes < 5000 else max(2, repeats // 2)
        timings.append(emit(solver_timing(batch_size, num_classes, num_devices, n)))
    _common.print_table(
        f"The solver alone on {num_devices} fake CPU devices (global view, Explicit axes)",
        [
            {
                "B": t["batch_size"],
                "C": t["num_classes"],
                "old ms": t["old_ms"],
                "new ms": t["new_ms"],
                "new / old": t["new_to_old"],
                "new / old (CPU)": t["new_to_old_cpu"],
                "max rel. diff": t["max_relative_difference"],
            }
            for t in timings
        ],
        ("B", "C", "old ms", "new ms", "new / old", "new / old (CPU)", "max rel. diff"),
    )


def _one_device_table(emit, smoke, repeats) -> bool:
    """The one-device comparison with lpjax 0.2.0; False without git history."""
    shapes = [(64, 20)] if smoke else [(512, 100), (512, 1000)]
    rows = [one_device_timing(b, c, repeats) for b, c in shapes]
    if any(r is None for r in rows):
        print("One device: no git history here, so lpjax 0.2.0's solver is not compared.")
        return False
    _common.print_table(
        "One device: the solver now against lpjax 0.2.0's",
        [
            {
                "B": r["batch_size"],
                "C": r["num_classes"],
                "0.2.0 ms": r["release_0_2_0_ms"],
                "now ms": r["now_ms"],
                "now / 0.2.0": r["now_to_release"],
                "now / 0.2.0 (CPU)": r["now_to_release_cpu"],
                "bit-identical": r["identical"],
            }
            for r in map(emit, rows)
        ],
        ("B", "C", "0.2.0 ms", "now ms", "now / 0.2.0", "now / 0.2.0 (CPU)", "bit-identical"),
    )
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="append JSON lines to this file")
    parser.add_argument(
        "--no-timing", action="store_true", help="bytes on the wire only, no solver timing"
    )
    parser.add_argument(
        "--one-device",
        action="store_true",
        help="only the one-device comparison with lpjax 0.2.0, on the default backend",
    )
    parser.add_argument("--devices", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", default=None, help=argparse.SUPPRESS)  # "B,C"
    args = parser.parse_args(argv)
    _common.configure_xla(None if args.one_device else args.devices)
    emit = _common.Emitter(args.out)
    repeats = 2 if args.smoke else args.repeats

    if args.compile_only:  # the 64-device subprocess
        batch_size, num_classes = map(int, args.compile_only.split(","))
        for row in communication_rows(batch_size, num_classes, args.devices):
            emit(row)
        return 0

    import jax

    emit({"bench": "machine", **_common.machine_info()})
    if args.one_device:
        return 0 if _one_device_table(emit, args.smoke, repeats) else 1
    shapes = [(64, 20)] if args.smoke else [(512, 1000), (4096, 8142)]
    rows = []
    for batch_size, num_classes in shapes:
        rows += [emit(r) for r in communication_rows(batch_size, num_classes, jax.device_count())]
    large = (256, 40) if args.smoke else (4096, 8142)
    big_devices = 16 if args.smoke else 64
    big, rc = _common.run_json_subprocess(
        ["-m", "benchmarks.communication", "--devices", str(big_devices)]
        + ["--compile-only", ",".join(map(str, large))],
        env={"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
    )
    rows += [emit(r) for r in big]
    columns = ("B", "C", "N", "method", "form", "layout", "step MiB", "LPL MiB")
    _common.print_table(
        "Bytes on the wire per device per train step (LPL: LA + LPL step less the CE step)",
        _communication_table(rows),
        columns + ("LPL share", "LPL / logits"),
    )
    if not args.no_timing:
        _timing_table(emit, shapes, repeats)
        _one_device_table(emit, args.smoke, repeats)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
