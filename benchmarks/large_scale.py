"""LPL's cost at the ImageNet-scale recipes' real global batch: [512, 1000] and [512, 8142].

For the ImageNet-LT (C = 1000) and iNaturalist 2018 (C = 8142) configs, the loss part of a
train step -- the method's logit transform, its loss and the gradient of the mean loss
with respect to the logits, under ``jax.jit`` -- for plain cross-entropy, LA, and the
configs' LPL variants (their own ``config.lpl``: at most 25 inner steps), plus LA + LPL
with the CIFAR recipe's 50 steps (step 0.01) for comparison. All timed interleaved in this
process; every ratio is to CE's loss part measured in the same run.

Inputs: float32 logits ~ N(0, 2^2) (the models' logits are float32 even with bfloat16
compute) and 512 labels drawn from an exponential long-tailed profile with the data set's
largest and smallest class (ImageNet-LT 1280 / 5, iNaturalist 2018 1000 / 2), the class
counts the methods are built with; the batch then holds a realistic number of distinct
classes, which is what the solver's statistics scale with.

Unless ``--no-model-step``, a ResNet-50 train step (forward, backward, SGD update; float32
on CPU) is timed at a small batch at 224x224 and scaled linearly to 512 images, so the
loss part can be read as a share of a whole step. The "all-reduce MiB" column is the
row layout's multi-device traffic (lpjax 0.2.0's solver: one all-reduce of its
``[global batch, C]`` float32 class sums per inner step), from the shapes; the
class-sharded solver that replaced it is measured from the compiled step by
``benchmarks/communication.py``.

    python -m benchmarks.large_scale                  # about 3 minutes on 2 CPU cores
    python -m benchmarks.large_scale --no-model-step  # loss parts only
    python -m benchmarks.large_scale --smoke          # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common

# (config file stem, C, n_max, imbalance ratio of the synthetic profile)
BENCHMARKS = (
    ("imagenet_lt_resnet50", 1000, 1280, 256.0),
    ("inaturalist2018_resnet50", 8142, 1000, 500.0),
)
METHODS = ("ce", "la", "la_lpl", "lpl_varied", "lpl_fixed")
CIFAR_STEP_SIZE = 0.01  # the CIFAR-LT recipe's inner step: 50 steps for the same bounds
MIB = 2**20


def _load_config(stem: str):
    from experiments.config import command_line as configuration

    return configuration.load_config(configuration.DEFAULT_CONFIG.parent / f"{stem}.py")


def _loss_part(method):
    """Jitted ``(logits, labels, state) -> (mean loss, d loss / d logits)`` of a method."""
    import jax

    def mean_loss(logits, labels, state):
        perturbed, _ = method.transform.apply(logits, labels, state)
        return method.loss_fn(perturbed, labels).mean()

    return jax.jit(jax.value_and_grad(mean_loss))


def _inner_steps(config, counts, labels) -> int:
    """The solver's loop length on this batch: the largest K_c of a signed class present."""
    import numpy as np

    import lpjax

    signs, bounds = lpjax.longtail_signs_and_bounds(
        counts,
        num_head_classes=config.lpl.num_head_classes,
        epsilon=config.lpl.epsilon,
        delta_epsilon=config.lpl.delta_epsilon if config.method.name != "lpl_fixed" else 0.0,
    )
    steps = np.asarray(lpjax.num_inner_steps(bounds, np.float32(config.lpl.step_size)))
    present = np.unique(np.asarray(labels))
    return int(np.max(np.where(np.asarray(signs)[present] != 0, steps[present], 0)))


def measure_losses(stem, num_classes, n_max, ratio, *, batch_size, repeats, emit) -> list[dict]:
    import jax.numpy as jnp
    import numpy as np

    from experiments import methods
    from experiments.config import command_line as configuration
    from experiments.data import in_memory

    base = _load_config(stem)
    counts = in_memory.longtail_class_counts(n_max, num_classes, ratio)
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.choice(num_classes, batch_size, p=counts / counts.sum()), jnp.int32)
    logits = jnp.asarray(2.0 * rng.standard_normal((batch_size, num_classes), np.float32))
    distinct = len(np.unique(np.asarray(labels)))

    variants = {}
    for name in METHODS:
        variants[name] = configuration.apply_overrides(base, {"method.name": name})
    variants["la_lpl_50_steps"] = configuration.apply_overrides(
        base, {"method.name": "la_lpl", "lpl.step_size": str(CIFAR_STEP_SIZE)}
    )
    fns, steps = {}, {}
    for name, config in variants.items():
        method = methods.make_method(config, counts, steps_per_epoch=100)
        compiled = _loss_part(method).lower(logits, labels, method.transform.init()).compile()
        state = method.transform.init()
        fns[name] = lambda compiled=compiled, state=state: compiled(logits, labels, state)
        steps[name] = _inner_steps(config, counts, labels) if "lpl" in name else 0
    samples = _common.time_interleaved(fns, repeats=repeats, warmup=1)
    ce = _common.summarize(samples["ce"])
    records = []
    for name in variants:
        t = _common.summarize(samples[name])
        records.append(
            emit(
                {
                    "bench": "large_scale_loss",
                    "config": stem,
                    "batch_size": batch_size,
                    "num_classes": num_classes,
                    "distinct_labels": distinct,
                    "method": name,
                    "inner_steps": steps[name],
                    "median_ms": 1e3 * t["median_wall_s"],
                    "median_cpu_ms": 1e3 * t["median_cpu_s"],
                    "iqr_ms": 1e3 * t.get("iqr_wall_s", float("nan")),
                    "ratio_to_ce": _common.ratio(t["median_wall_s"], ce["median_wall_s"]),
                    "ratio_to_ce_cpu": _common.ratio(t["median_cpu_s"], ce["median_cpu_s"]),
                    "extra_ms": 1e3 * (t["median_wall_s"] - ce["median_wall_s"]),
                    # what a multi-device run all-reduces per train step (from the shapes)
                    "allreduce_mib_per_step": steps[name] * batch_size * num_classes * 4 / MIB,
                    "repeats": repeats,
                }
            )
        )
    return records


def measure_model_step(*, batch_size, repeats, image_size, emit) -> dict:
    """A ResNet-50 SGD train step at ``batch_size``, float32, and its per-image time."""
    import jax
    import jax.numpy as jnp
    import optax

    from experiments import models

    model = models.create_model("resnet50", num_classes=1000)
    x = jnp.ones((batch_size, image_size, image_size, 3), jnp.float32)
    y = jnp.arange(batch_size) % 1000
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0, impl="rbg"))
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt_state):
        def loss(params):
            logits, updates = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
        param_updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], param_updates)
        return {**updates, "params": params}, opt_state

    compiled = step.lower(variables, opt_state).compile()
    t = _common.summarize(
        _common.time_interleaved(
            {"step": lambda: compiled(variables, opt_state)}, repeats=repeats, warmup=1
        )["step"]
    )
    return emit(
        {
            "bench": "large_scale_model_step",
            "model": "resnet50",
            "batch_size": batch_size,
            "image_size": image_size,
            "median_s": t["median_wall_s"],
            "median_cpu_s": t["median_cpu_s"],
            "per_image_s": t["median_wall_s"] / batch_size,
            "per_image_cpu_s": t["median_cpu_s"] / batch_size,
            "repeats": repeats,
        }
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each variant")
    parser.add_argument("--batch-size", type=int, default=512, help="the recipes' global batch")
    parser.add_argument("--model-batch", type=int, default=4, help="ResNet-50 step's batch")
    parser.add_argument("--no-model-step", action="store_true", help="skip the ResNet-50 step")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    _common.configure_xla()
    import jax  # noqa: F401  (after configure_xla)

    batch_size, repeats = (32, 3) if args.smoke else (args.batch_size, args.repeats)
    emit = _common.Emitter(args.out)
    emit({"bench": "large_scale_machine", **_common.machine_info()})
    records = []
    for stem, num_classes, n_max, ratio in BENCHMARKS:
        records += measure_losses(
            stem, num_classes, n_max, ratio, batch_size=batch_size, repeats=repeats, emit=emit
        )
    model_step = None
    if not (args.no_model_step or args.smoke):
        model_step = measure_model_step(
            batch_size=args.model_batch, repeats=3, image_size=224, emit=emit
        )

    rows = []
    for r in records:
        row = {
            "C": r["num_classes"],
            "method": r["method"],
            "K": r["inner_steps"],
            "ms": r["median_ms"],
            "cpu ms": r["median_cpu_ms"],
            "x CE": r["ratio_to_ce"],
            "x CE (cpu)": r["ratio_to_ce_cpu"],
            "extra ms": r["extra_ms"],
            "all-reduce MiB": r["allreduce_mib_per_step"],
        }
        if model_step is not None:  # the extra time as a share of a ResNet-50 step at B
            step_ms = 1e3 * model_step["per_image_s"] * r["batch_size"]
            row["% of R50 step"] = 100 * r["extra_ms"] / step_ms
        rows.append(row)
    columns = ["C", "method", "K", "ms", "cpu ms", "x CE", "x CE (cpu)", "extra ms"]
    columns += ["all-reduce MiB"] + (["% of R50 step"] if model_step is not None else [])
    _common.print_table(
        f"Loss part (transform + loss + gradient w.r.t. logits) at B = {batch_size}", rows, columns
    )
    if model_step is not None:
        print(
            f"ResNet-50 train step, float32, 224x224: {model_step['median_s']:.2f} s at batch "
            f"{model_step['batch_size']} = {model_step['per_image_s'] * batch_size:.0f} s "
            f"scaled to batch {batch_size} (distinct labels in the batch: "
            + ", ".join(f"C = {r['num_classes']}: {r['distinct_labels']}" for r in records[::6])
            + ")"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
