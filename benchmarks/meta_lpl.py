"""Benchmark of Meta-LPL's meta step against a plain LA step, in the trainer's step.

The trainer's step (Meta-LPL's own ``make_step``, :mod:`experiments.methods.meta`) for the
Fashion-MNIST-LT study (``small_cnn28``, 28x28x1 images, batch 128, 10 classes, r = 100),
timed interleaved in one process:

* ``la``                  logit adjustment: the baseline;
* ``la_meta_lpl``         LA + Meta-LPL, a step without a meta step (the solver runs with
                          the learned bounds: eps_max 3, alpha 0.1);
* ``meta_classifier``     the same step with a meta step, classifier scope (meta batch of
                          100 images: the meta set's features, a look-ahead of the last layer);
* ``meta_model``          with a meta step, whole-model scope (a look-ahead of every
                          parameter: second-order through the network).

Ratios are per step and, at the default frequency of one meta step every
``meta.every_steps`` = 5 steps, per training step on average (the targets: classifier
scope at most 1.15x a plain LA step, the whole model at most 3x).

    python -m benchmarks.meta_lpl [--repeats 20] [--every-steps 5] [--out F]
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _common


def _steps(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import lpjax
    from experiments import methods, models, optimizers
    from experiments import step as train_step
    from experiments.config import base as common
    from experiments.data import in_memory

    counts = in_memory.longtail_class_counts(5500, 10, 100.0)
    mesh = train_step.make_data_mesh()
    rng = np.random.default_rng(0)
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def put(*xs):
        return [jax.device_put(x, split) for x in xs]

    images, labels, mask = put(
        rng.normal(size=(128, 28, 28, 1)).astype(np.float32),
        rng.choice(10, 128, p=counts / counts.sum()).astype(np.int32),
        np.ones(128, bool),
    )
    meta_images, meta_labels = put(
        rng.normal(size=(100, 28, 28, 1)).astype(np.float32), np.arange(100, dtype=np.int32) % 10
    )
    key = jax.random.key(0)
    fns = {}
    for name, scope in (("la", None), ("la_meta_lpl", "classifier"), ("model", "model")):
        config = common.get_base_config()
        config.method.name = "la" if scope is None else "la_meta_lpl"
        config.meta.scope = scope or "classifier"
        config.meta.max_epsilon, config.lpl.step_size = 3.0, 0.1
        method = methods.make_method(config, counts, steps_per_epoch=100)
        model = models.create_model("small_cnn28", num_classes=10)
        model_fns = models.classifier_model_fns(model, input_shape=(1, 28, 28, 1))
        tx, _ = optimizers.make_optimizer(config.optim, 100)
        state = train_step.create_train_state(model_fns, tx, method.transform, key=key, mesh=mesh)
        if scope is not None:  # learned bounds, so that the solver runs
            meta_state = lpjax.get_transform_state(state.transform_state, lpjax.MetaLplState)
            phi = jnp.linspace(-1.5, 1.5, 10)
            state = state.replace(
                transform_state=lpjax.set_transform_state(
                    state.transform_state, lpjax.MetaLplState, meta_state._replace(phi=phi)
                )
            )
        step = method.make_step(method, methods.StepContext(model_fns, tx, mesh, None))
        meta_batch = (meta_images, meta_labels, jnp.float32(0.1))
        if name == "la":
            fns["la"] = _call(step, state, images, labels, mask, key, None)
        elif name == "la_meta_lpl":
            fns["la_meta_lpl"] = _call(step, state, images, labels, mask, key, None)
            fns["meta_classifier"] = _call(step, state, images, labels, mask, key, meta_batch)
        else:
            fns["meta_model"] = _call(step, state, images, labels, mask, key, meta_batch)
    return fns


def _call(step, state, *args):
    """A zero-argument call of ``step`` on a fresh copy of ``state`` (the step donates it)."""
    import jax
    import jax.numpy as jnp

    def call():
        return step(jax.tree.map(jnp.copy, state), *args)

    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--every-steps", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    _common.configure_xla()
    emit = _common.Emitter(args.out, benchmark="meta_lpl", **_common.machine_info())
    samples = _common.time_interleaved(_steps(args), repeats=args.repeats, warmup=2)
    stats = {name: _common.summarize(sample) for name, sample in samples.items()}
    base = stats["la"]["median_cpu_s"]
    plain = stats["la_meta_lpl"]["median_cpu_s"]
    fastest = stats["la"]["min_cpu_s"]
    print(
        f"\n{'step':16s} {'ms (wall)':>9s} {'x LA (cpu)':>10s} {'x LA (min)':>10s} "
        f"{'x LA, meta 1 step in ' + str(args.every_steps):>22s}"
    )
    for name, s in stats.items():
        per_step = _common.ratio(s["median_cpu_s"], base)
        amortised = per_step
        if name.startswith("meta_"):
            every = args.every_steps
            amortised = _common.ratio((s["median_cpu_s"] + (every - 1) * plain) / every, base)
        at_min = _common.ratio(s["min_cpu_s"], fastest)
        emit({"step": name, **s, "x_la": per_step, "x_la_min": at_min, "x_la_amortised": amortised})
        print(
            f"{name:16s} {1e3 * s['median_wall_s']:9.1f} {per_step:10.2f} {at_min:10.2f} "
            f"{amortised:22.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
