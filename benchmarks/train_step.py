"""Benchmark of the whole train step, ``experiments.step.make_train_step``, per method.

The step of the trainer (experiments/train.py) as it is built there: a model from
``experiments.models.create_model`` (batch norm over the global batch), SGD with
Nesterov momentum and weight decay, and the per-example loss of
``experiments.methods.make_method``; random 32x32x3 images already on the devices. For each
number of classes, every method's step is compiled and then timed interleaved with the
others in the same process (CE is the baseline of each ratio):

* ``ce``          plain cross-entropy (``lpjax.identity``);
* ``la``          logit adjustment, tau = 1, long-tailed counts (r = 100);
* ``lpl_fixed``   LPL, the mean rule, eps = 0.5, alpha = 0.01: 50 inner steps;
* ``lpl_varied``  LPL, the mean rule, eps = 0.4 + 0.1 |tau - q_c|: 40 to 50 inner steps;
* ``la_lpl``      LA, then LPL with the long-tail split (40% head classes,
                  eps = 0.3 + 0.2 * (n_min / n_c for tail, n_c / n_max for head), alpha = 0.01:
                  up to 50 inner steps, for the rarest class).

It also checks, for every method, that the timed steps make no host transfer
(``jax.transfer_guard("disallow")`` around the loop) and trigger no tracing or compilation
(jax.monitoring events counted after the warm-up), and it times the loss part alone
(transform + cross-entropy + gradient with respect to the logits, jitted on its own), whose
difference to CE's is the method's added cost with less noise than a difference of two
whole steps.

    python -m benchmarks.train_step                          # ResNet-32, C = 10 and 100
    python -m benchmarks.train_step --devices 4              # 4 fake CPU devices
    python -m benchmarks.train_step --device-sweep 1,2,4,8   # one process per count
    python -m benchmarks.train_step --model small_cnn --steps 2 --warmup 1  # quick check
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common

METHODS = ("ce", "la", "lpl_fixed", "lpl_varied", "la_lpl")
STEP_SIZE = 0.01


def method_config(name: str, num_classes: int):
    """The trainer's config for ``name`` with the inner-solver settings benchmarked here."""
    from experiments.config import base as common

    config = common.get_base_config()
    config.method.name = name
    config.la.tau = 1.0
    config.lpl.step_size = STEP_SIZE
    lpl = config.lpl
    if name == "lpl_fixed":  # 50 steps for every signed class
        lpl.split_rule, lpl.epsilon, lpl.delta_epsilon = "mean", 0.5, 0.0
    elif name == "lpl_varied":  # eps_c = 0.4 + 0.1 |tau - q_c| in [0.4, 0.5]: 40 to 50 steps
        lpl.split_rule, lpl.epsilon, lpl.delta_epsilon = "mean", 0.4, 0.1
    elif name == "la_lpl":  # eps_c in [0.3, 0.5]: up to 50 steps (the rarest class)
        lpl.split_rule, lpl.epsilon, lpl.delta_epsilon = "longtail", 0.3, 0.2
        config.lpl.num_head_classes = max(1, round(0.4 * num_classes))
    return config


def class_counts(name: str, num_classes: int):
    """Long-tailed counts (r = 100) for the methods that use them, balanced otherwise."""
    import numpy as np

    from experiments.data import in_memory

    if name in ("la", "la_lpl"):
        return in_memory.longtail_class_counts(5000, num_classes, 100.0)
    return np.full(num_classes, 5000, np.int64)


def max_inner_steps(name, config, counts, logits, labels) -> int | None:
    """How many inner steps the solver runs on these plain logits (None if not LPL)."""
    import jax.numpy as jnp
    import numpy as np

    import lpjax

    lpl = config.lpl
    if name in ("lpl_fixed", "lpl_varied"):
        signs, bounds = lpjax.mean_rule_signs_and_bounds(
            logits,
            labels,
            epsilon=lpl.epsilon,
            delta_epsilon=lpl.delta_epsilon if name == "lpl_varied" else 0.0,
        )
    elif name == "la_lpl":
        signs, bounds = lpjax.longtail_signs_and_bounds(
            counts,
            num_head_classes=lpl.num_head_classes,
            epsilon=lpl.epsilon,
            delta_epsilon=lpl.delta_epsilon,
        )
        present = np.zeros(len(counts), bool)
        present[np.asarray(labels)] = True
        signs = np.where(present, np.asarray(signs), 0)
    else:
        return None
    steps = lpjax.num_inner_steps(jnp.asarray(bounds, jnp.float32), np.float32(lpl.step_size))
    return int(np.where(np.asarray(signs) != 0, steps, 0).max())


def build_method(name, num_classes, model_name, args, mesh, images, labels):
    """State, jitted step, jitted loss-only function and metadata of one method."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from experiments import methods, models
    from experiments import step as training

    dtype = jnp.dtype(args.dtype)
    model = models.create_model(model_name, num_classes=num_classes, dtype=dtype)
    config = method_config(name, num_classes)
    counts = class_counts(name, num_classes)
    input_shape = (1, *images.shape[1:])
    _, features = jax.eval_shape(
        lambda: model.init_with_output(
            jax.random.key(0), jnp.zeros(input_shape), train=False, return_features=True
        )[0]
    )
    method = methods.make_method(
        config, counts, steps_per_epoch=390, feature_dim=features.shape[-1]
    )
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))
    model_fns = models.classifier_model_fns(model, input_shape=input_shape)
    state = training.create_train_state(
        model_fns, tx, method.transform, key=jax.random.key(0), mesh=mesh
    )
    step = training.make_train_step(
        model_fns,
        tx,
        method.transform,
        method.loss_fn,
        mesh=mesh,
        example_weights_fn=method.example_weights_fn,
    )

    # Plain logits of the initial model on this batch (train-mode batch norm), to report
    # how many inner steps LPL runs and to time the loss part alone.
    forward = jax.jit(
        lambda variables, x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    )
    logits = jax.device_get(forward({"params": state.params, **state.model_state}, images))
    host_labels = jax.device_get(labels)
    steps = max_inner_steps(name, config, counts, logits, host_labels)

    # The loss part alone, as the step runs it: in the global view on logits sharded over
    # the same mesh (LPL's class sums reduced across devices by XLA, as in the step),
    # differentiated with respect to the logits; no network.
    def loss_grad(logits, labels):
        def summed_loss(logits):
            perturbed, _ = method.transform.apply(logits, labels, method.transform.init())
            return method.loss_fn(perturbed, labels).sum()

        return jax.grad(summed_loss)(logits)

    split = NamedSharding(mesh, P(training.DATA_AXIS))
    loss_fn = jax.jit(loss_grad, out_shardings=split)
    return {
        "state": state,
        "step": step,
        "loss_fn": loss_fn,
        "loss_args": (jax.device_put(logits, split), jax.device_put(host_labels, split)),
        "inner_steps": steps,
        "num_params": sum(x.size for x in jax.tree.leaves(state.params)),
    }


def run_classes(args, emit, mesh, counter, num_classes) -> list[dict]:
    """Builds, warms up and times every method at one number of classes."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from experiments import step as training

    rng = np.random.default_rng(num_classes)
    host_images = rng.standard_normal((args.batch_size, 32, 32, 3), dtype=np.float32)
    host_labels = rng.permutation(np.arange(args.batch_size) % num_classes).astype(np.int32)
    mask = np.ones(args.batch_size, bool)
    batch = training.global_batch(mesh, {"image": host_images, "label": host_labels, "mask": mask})
    key = jax.device_put(jax.random.key(1), NamedSharding(mesh, P()))

    built = {
        name: build_method(
            name, num_classes, args.model, args, mesh, batch["image"], batch["label"]
        )
        for name in args.methods
    }

    def make_call(b):
        def call():
            # the state is donated
            b["state"], metrics = b["step"](
                b["state"], batch["image"], batch["label"], batch["mask"], key
            )
            return metrics

        return call

    calls = {name: make_call(b) for name, b in built.items()}
    for call in calls.values():  # warm-up: compile and run each step
        for _ in range(args.warmup):
            _common.block(call())

    counter.reset()
    guard = "passed"
    try:
        with jax.transfer_guard("disallow"):
            samples = _common.time_interleaved(calls, repeats=args.steps, warmup=0)
    except Exception as e:  # a transfer inside the step: report it, time without the guard
        guard = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        samples = _common.time_interleaved(calls, repeats=args.steps, warmup=0)
    compiles, traces = counter.compiles, counter.traces

    # The loss part alone (jitted on its own, same mesh), interleaved the same way.
    loss_samples = _common.time_interleaved(
        {name: (lambda b=b: b["loss_fn"](*b["loss_args"])) for name, b in built.items()},
        repeats=max(args.steps, 20),
        warmup=1,
    )

    base = _common.summarize(samples["ce"]) if "ce" in samples else None
    base_loss = _common.summarize(loss_samples["ce"]) if "ce" in loss_samples else None
    rows = []
    for name, b in built.items():
        s = _common.summarize(samples[name])
        ls = _common.summarize(loss_samples[name])
        rec = {
            "bench": "train_step",
            "model": args.model,
            "dtype": args.dtype,
            "num_classes": num_classes,
            "batch_size": args.batch_size,
            "num_devices": len(mesh.devices.flat),
            "method": name,
            "inner_steps": b["inner_steps"],
            "num_params": b["num_params"],
            "step_median_s": s["median_wall_s"],
            "step_iqr_s": s.get("iqr_wall_s"),
            "step_min_s": s["min_wall_s"],
            "step_median_cpu_s": s["median_cpu_s"],
            "images_per_s": args.batch_size / s["median_wall_s"],
            "loss_only_median_ms": 1e3 * ls["median_wall_s"],
            "loss_only_median_cpu_ms": 1e3 * ls["median_cpu_s"],
            "timed_steps": s["repeats"],
            "transfer_guard": guard,
            "compiles_after_warmup": compiles,
            "traces_after_warmup": traces,
        }
        if base:
            rec["ratio_to_ce"] = _common.ratio(s["median_wall_s"], base["median_wall_s"])
            rec["ratio_to_ce_cpu"] = _common.ratio(s["median_cpu_s"], base["median_cpu_s"])
            rec["ratio_to_ce_min"] = _common.ratio(s["min_wall_s"], base["min_wall_s"])
        if base and base_loss:
            # Added cost of the method's loss part, as a fraction of CE's whole step.
            extra = ls["median_wall_s"] - base_loss["median_wall_s"]
            rec["loss_overhead_of_ce_step"] = extra / base["median_wall_s"]
            rec["loss_overhead_percent"] = round(100 * extra / base["median_wall_s"], 4)
            extra_cpu = ls["median_cpu_s"] - base_loss["median_cpu_s"]
            rec["loss_overhead_of_ce_step_cpu"] = extra_cpu / base["median_cpu_s"]
        rows.append(emit(rec))
    return rows


def run(args, emit) -> list[dict]:
    from experiments import step as training

    mesh = training.make_data_mesh()
    if args.batch_size % len(mesh.devices.flat):
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by the devices.")
    counter = _common.CompileCounter()
    rows = []
    for num_classes in args.num_classes:
        rows.extend(run_classes(args, emit, mesh, counter, num_classes))
    counter.close()
    return rows


TABLE = (
    ("C", "num_classes"),
    ("dev", "num_devices"),
    ("method", "method"),
    ("K", "inner_steps"),
    ("step s", "step_median_s"),
    ("IQR s", "step_iqr_s"),
    ("cpu s", "step_median_cpu_s"),
    ("img/s", "images_per_s"),
    ("x CE", "ratio_to_ce"),
    ("x CE cpu", "ratio_to_ce_cpu"),
    ("loss ms", "loss_only_median_ms"),
    ("loss extra % of CE step", "loss_overhead_percent"),
    ("compiles", "compiles_after_warmup"),
    ("guard", "transfer_guard"),
)


def print_rows(title, rows):
    _common.print_table(
        title, [{h: r.get(k, "") for h, k in TABLE} for r in rows], [h for h, _ in TABLE]
    )


def device_sweep(args, emit) -> None:
    """One subprocess per device count; the step's time against one device's."""
    rows = []
    for n in args.device_sweep:
        cmd = [
            "-m",
            "benchmarks.train_step",
            "--devices",
            str(n),
            "--model",
            args.model,
            "--batch-size",
            str(args.batch_size),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--num-classes",
            ",".join(map(str, args.num_classes)),
            "--methods",
            ",".join(args.methods),
            "--dtype",
            args.dtype,
            "--quiet",
        ]
        out, rc = _common.run_json_subprocess(cmd)
        rows.extend(r for r in out if r.get("bench") == "train_step")
        if rc != 0:
            emit({"bench": "train_step_device_sweep", "num_devices": n, "error": rc})
    for rec in rows:
        one = next(
            (
                r
                for r in rows
                if r["num_devices"] == args.device_sweep[0]
                and r["method"] == rec["method"]
                and r["num_classes"] == rec["num_classes"]
            ),
            None,
        )
        rec["bench"] = "train_step_device_sweep"
        if one:
            rec["ratio_to_first_device_count"] = _common.ratio(
                rec["step_median_s"], one["step_median_s"]
            )
        emit(rec)
    _common.print_table(
        f"Device scaling (fake CPU devices, global batch {args.batch_size}; "
        f"ratio to {args.device_sweep[0]} device(s), each count a separate process)",
        [
            {
                "C": r["num_classes"],
                "method": r["method"],
                "devices": r["num_devices"],
                "step s": r["step_median_s"],
                "cpu s": r["step_median_cpu_s"],
                "img/s": r["images_per_s"],
                "x first": r.get("ratio_to_first_device_count", ""),
                "x CE": r.get("ratio_to_ce", ""),
                "compiles": r["compiles_after_warmup"],
                "guard": r["transfer_guard"],
            }
            for r in sorted(rows, key=lambda r: (r["num_classes"], r["method"], r["num_devices"]))
        ],
        (
            "C",
            "method",
            "devices",
            "step s",
            "cpu s",
            "img/s",
            "x first",
            "x CE",
            "compiles",
            "guard",
        ),
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet32", help="a name in experiments.models.MODELS")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
    parser.add_argument("--num-classes", type=_ints, default=[10, 100], help="e.g. 10,100")
    parser.add_argument(
        "--methods",
        type=lambda s: [m for m in s.split(",") if m],
        default=list(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (ce first: it is the baseline)",
    )
    parser.add_argument("--dtype", default="float32", help="model compute dtype")
    parser.add_argument("--devices", type=int, default=None, help="fake CPU devices (XLA flag)")
    parser.add_argument("--device-sweep", type=_ints, default=None, help="e.g. 1,2,4,8")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--quiet", action="store_true", help="JSON lines only, no table")
    args = parser.parse_args(argv)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")

    if args.device_sweep:
        _common.configure_xla()
        emit = _common.Emitter(args.out)
        device_sweep(args, emit)
        return 0

    _common.configure_xla(args.devices)
    emit = _common.Emitter(args.out)
    emit({"bench": "train_step_machine", **_common.machine_info()})
    rows = run(args, emit)
    if not args.quiet:
        print_rows(
            f"Train step, {args.model}, batch {args.batch_size}, {args.dtype} "
            f"(median of {args.steps} interleaved steps; x CE = ratio to CE in this run)",
            rows,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
