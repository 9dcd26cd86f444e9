"""Where the time of a CPU training step goes, and what makes it faster.

The step measured is the trainer's: ``lpjax.training.make_train_step`` with
``experiments.models.create_model("resnet32")``, plain cross-entropy, SGD (Nesterov,
weight decay), batch 128 of 32x32x3 images, one CPU device. Every variant is measured
against this default in the same run. Sections (``--sections``, default all):

* ``profile``  XLA's cost analysis (FLOPs) of the compiled step, and a ``jax.profiler``
               trace of a few steps, its thunk time split into convolution forward /
               backward-input / backward-weights, layout transposes, reductions and
               elementwise fusions (from the optimised HLO);
* ``layers``   one conv / one batch norm of each ResNet stage, forward + backward, alone;
* ``variants`` in-process variants, timed interleaved with the default: no shard_map,
               bfloat16 compute, a flax-free ResNet-32 in NHWC and NCHW, with autodiff,
               fused (custom_vjp) or no batch norm;
* ``flags``    XLA flags (one subprocess each, the default step; baseline runs first and
               last) and one core instead of two (``taskset``);
* ``input``    host batch preparation (``experiments.input_pipeline.train_batch`` with
               augmentation) against the step, with and without overlap.

    python benchmarks/cpu_step_experiments.py                       # everything (~10 min)
    python benchmarks/cpu_step_experiments.py --sections variants   # one section
    python benchmarks/cpu_step_experiments.py --smoke               # tiny, to test the script
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time

import _common

SECTIONS = ("profile", "layers", "options", "variants", "flags", "input")

_YNN = "xla_cpu_experimental_ynn_fusion_type"
_YNN_DEFAULT = "INDIVIDUAL_DOT,INDIVIDUAL_CONVOLUTION,REDUCE"  # jaxlib 0.10.2's default list


def _ynn(types: str) -> dict:
    """YNNPACK fusion types as a compile option (overwrite mode: the full list)."""
    return {_YNN: ",".join(f"LIBRARY_FUSION_TYPE_{t}" for t in types.split(",") if t)}


# XLA debug options applied per executable (``jax.jit(..., compiler_options=...)``), so
# that they can be timed interleaved with the default in one process.
OPTION_SETS = (
    ("fast math", {"xla_cpu_enable_fast_math": True}),
    ("oneDNN thunks", {"xla_cpu_use_onednn": True}),
    ("oneDNN custom calls", {"xla_cpu_experimental_onednn_custom_call": True}),
    ("XNNPACK", {"xla_cpu_use_xnnpack": True}),
    (
        "XNN graph fusion (greedy)",
        {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    ),
    ("vector width 512", {"xla_cpu_prefer_vector_width": 512}),
    ("YNN none (all Eigen / XLA loops)", _ynn("")),
    ("YNN dot+reduce (convs on Eigen)", _ynn("INDIVIDUAL_DOT,REDUCE")),
    ("YNN default + eltwise", _ynn(_YNN_DEFAULT + ",ELTWISE")),
    ("YNN dot+reduce+eltwise (convs on Eigen)", _ynn("INDIVIDUAL_DOT,REDUCE,ELTWISE")),
    ("YNN eltwise only (convs on Eigen)", _ynn("ELTWISE")),
)
# The fastest set found on the 2-core development machine (see RESULTS.md).
BEST_OPTIONS = _ynn("INDIVIDUAL_DOT,REDUCE,ELTWISE")
BEST_XLA_FLAGS = ["--xla_cpu_experimental_ynn_fusion_type=+eltwise,-individual_convolution"]

# Flags that act on the whole process (or that compile options cannot express): name,
# XLA flags, extra arguments of the child process.
FLAG_SETS = (
    ("thunk runtime off (deprecated)", ["--xla_cpu_use_thunk_runtime=false"], []),
    ("eigen single-threaded", ["--xla_cpu_multi_thread_eigen=false"], []),
    ("best options as XLA_FLAGS", BEST_XLA_FLAGS, []),
    ("2 fake devices", ["--xla_force_host_platform_device_count=2"], ["--all-devices"]),
    ("4 fake devices", ["--xla_force_host_platform_device_count=4"], ["--all-devices"]),
    (
        "2 fake devices + best options",
        ["--xla_force_host_platform_device_count=2", *BEST_XLA_FLAGS],
        ["--all-devices"],
    ),
    (
        "4 fake devices + best options",
        ["--xla_force_host_platform_device_count=4", *BEST_XLA_FLAGS],
        ["--all-devices"],
    ),
)


# --------------------------------------------------------------------------------------
# The default step and its inputs.


def make_batch(batch_size, num_classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, 32, 32, 3), dtype=np.float32)
    labels = rng.permutation(np.arange(batch_size) % num_classes).astype(np.int32)
    return images, labels


def make_optimizer():
    import optax

    return optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))


def trainer_step(args, *, dtype="float32", compiler_options=None, all_devices=False):
    """The trainer's step (make_train_step, CE) on one device: ``(call, info)``.

    ``compiler_options`` (XLA debug options, e.g. ``{"xla_cpu_enable_fast_math": True}``)
    apply to this executable only: the step is lowered and compiled with them.
    ``all_devices``: split the batch over every (fake) device instead of using one.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import lpjax
    import lpjax.training as training
    from experiments import models

    mesh = training.make_data_mesh(None if all_devices else jax.devices()[:1])
    model = models.create_model(
        args.model, num_classes=args.num_classes, dtype=jnp.dtype(dtype), bn_axis_name="data"
    )
    tx = make_optimizer()
    transform = lpjax.identity()
    state = training.create_train_state(
        model, tx, transform, input_shape=(1, 32, 32, 3), key=jax.random.key(0), mesh=mesh
    )
    step = training.make_train_step(
        model, tx, lpjax.perturbed_softmax_cross_entropy(transform), mesh=mesh
    )
    images, labels = make_batch(args.batch_size, args.num_classes)
    batch = training.global_batch(mesh, {"image": images, "label": labels})
    key = jax.device_put(jax.random.key(1), NamedSharding(mesh, P()))
    box = {"state": state}
    if compiler_options:
        step = step.lower(state, batch, key).compile(compiler_options=compiler_options)

    def call():
        box["state"], metrics = step(box["state"], batch, key)
        return metrics

    return call, {"step": step, "box": box, "batch": batch, "key": key, "mesh": mesh}


def plain_jit_step(args, *, dtype="float32", compiler_options=None):
    """The same flax model and loss in a plain ``jax.jit`` step (no mesh, no shard_map)."""
    import jax
    import jax.numpy as jnp
    import optax

    from experiments import models

    model = models.create_model(args.model, num_classes=args.num_classes, dtype=jnp.dtype(dtype))
    tx = make_optimizer()
    images, labels = make_batch(args.batch_size, args.num_classes)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    carry = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(carry, images, labels):
        params, batch_stats, opt_state = carry

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    jitted = jax.jit(step, donate_argnums=0, compiler_options=compiler_options or None)
    images, labels = jax.device_put(images), jax.device_put(labels)
    box = {"carry": carry}

    def call():
        box["carry"], loss = jitted(box["carry"], images, labels)
        return loss

    return call


def functional_step(args, *, layout="NHWC", bn="autodiff", dtype="float32", compiler_options=None):
    """The flax-free ResNet (benchmarks/_resnet_functional.py) in a plain jitted step."""
    import _resnet_functional as rf
    import jax
    import jax.numpy as jnp
    import optax

    depth = {"resnet32": 32, "resnet110": 110}.get(args.model, 32)
    params, stats = rf.init_params(
        jax.random.key(0), depth=depth, num_classes=args.num_classes, layout=layout
    )
    tx = make_optimizer()
    images, labels = make_batch(args.batch_size, args.num_classes)

    def step(carry, images, labels):
        params, stats, opt_state = carry

        def loss_fn(params):
            logits, new_stats = rf.apply(
                params, stats, images, depth=depth, layout=layout, bn=bn, dtype=jnp.dtype(dtype)
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, new_stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    jitted = jax.jit(step, donate_argnums=0, compiler_options=compiler_options or None)
    images, labels = jax.device_put(images), jax.device_put(labels)
    box = {"carry": (params, stats, tx.init(params))}

    def call():
        box["carry"], loss = jitted(box["carry"], images, labels)
        return loss

    return call


# --------------------------------------------------------------------------------------
# profile: cost analysis + trace, split by kind of operation.


def _hlo_instructions(hlo_text: str) -> tuple[dict, dict]:
    """``{instruction: (opcode, line)}`` and ``{computation: [ops]}`` of an HLO module."""
    instructions, computations, current = {}, {}, None
    pattern = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][\w-]*)\(")
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if header:
            current = header.group(1)
            computations[current] = []
            continue
        if line.strip() == "}":
            current = None
            continue
        m = pattern.match(line)
        if m:
            instructions[m.group(1)] = (m.group(3), line)
            if current is not None:
                computations[current].append(m.group(3))
    return instructions, computations


def categorize(name: str, instructions: dict, computations: dict, batch_size: int) -> str:
    """The kind of work an executed thunk (named after its HLO instruction) does."""
    if name not in instructions:
        return "other (runtime)"
    opcode, line = instructions[name]
    called = re.search(r"calls=%([\w.\-]+)", line)
    ops = set(computations.get(called.group(1), [])) if called else {opcode}
    shape = re.match(r"^\s*(?:ROOT )?%\S+ = \w+\[([\d,]*)\]", line)
    dims = [int(d) for d in shape.group(1).split(",") if d] if shape else []
    if "convolution" in ops:
        if dims and dims[0] != batch_size:
            return "conv backward (weights)"
        if "transpose(" in line:
            return "conv backward (input)"
        return "conv forward"
    if "dot" in ops:
        return "dot (classifier)"
    if "transpose" in ops:
        return "layout transpose (+fused elementwise)"
    if "reduce" in ops:
        return "reduction (+fused elementwise)"
    if opcode in ("fusion",) or ops & {"add", "multiply", "select", "maximum", "subtract"}:
        return "elementwise fusion"
    if opcode in ("copy", "bitcast", "tuple", "get-tuple-element", "parameter"):
        return "copy / bookkeeping"
    return f"other ({opcode})"


def section_profile(args, emit):
    import jax

    call, info = trainer_step(args, compiler_options=args.compiler_options)
    step, box, batch, key = info["step"], info["box"], info["batch"], info["key"]
    if hasattr(step, "cost_analysis"):  # already compiled (with compiler options)
        compiled = step
    else:
        compiled = step.lower(box["state"], batch, key).compile()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):
        cost = cost[0]
    flops = float(cost.get("flops", float("nan")))
    instructions, computations = _hlo_instructions(compiled.as_text())
    opcode_counts = collections.Counter(op for op, _ in instructions.values())

    samples = _common.time_interleaved({"step": call}, repeats=args.steps, warmup=args.warmup)
    timing = _common.summarize(samples["step"])

    trace_dir = tempfile.mkdtemp(prefix="lpjax_cpu_trace_")
    try:
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.profile_steps):
            _common.block(call())
        jax.profiler.stop_trace()
        paths = sorted(
            glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
            key=os.path.getmtime,
        )
        data = jax.profiler.ProfileData.from_file(paths[-1])
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
    per_category = collections.Counter()
    per_instruction = collections.Counter()
    skip = ("ThunkExecutor", "Threadpool", "end:", "SlinkyThreadPool", "$", "PjitFunction")
    for plane in data.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if event.name.startswith(skip):
                    continue
                ms = event.duration_ns / 1e6 / args.profile_steps
                kind = categorize(event.name, instructions, computations, args.batch_size)
                per_category[kind] += ms
                per_instruction[event.name] += ms
    # Thunks that hand their work to the Eigen pool (e.g. Eigen convolutions) return
    # before the work is done, so part of the CPU time is not attributed to any thunk.
    per_category["(not attributed: CPU time - thunk time)"] = max(
        0.0, 1e3 * timing["median_cpu_s"] - sum(per_category.values())
    )
    total = sum(per_category.values())
    rec = emit(
        {
            "bench": "cpu_step_profile",
            "compiler_options": args.compiler_options or {},
            "model": args.model,
            "batch_size": args.batch_size,
            "step_median_s": timing["median_wall_s"],
            "step_median_cpu_s": timing["median_cpu_s"],
            "flops_per_step": flops,
            "gflops_per_s": flops / timing["median_wall_s"] / 1e9,
            "gflops_per_cpu_s": flops / timing["median_cpu_s"] / 1e9,
            "thunk_ms_per_step": total,
            "thunk_ms_by_category": dict(per_category.most_common()),
            "thunk_share_by_category": {k: v / total for k, v in per_category.most_common()},
            "top_instructions_ms": dict(per_instruction.most_common(12)),
            "hlo_opcode_counts": {
                k: opcode_counts[k]
                for k in ("convolution", "fusion", "transpose", "copy", "reduce", "dot")
                if k in opcode_counts
            },
            "num_transpose_fusions": sum(
                1 for n in instructions if n.startswith(("transpose_copy_fusion", "copy_fusion"))
            ),
        }
    )
    _common.print_table(
        "Profile of the default step"
        + (f" with {args.compiler_options}" if args.compiler_options else "")
        + f" ({rec['step_median_s']:.3f} s wall, "
        f"{rec['step_median_cpu_s']:.3f} s CPU; {flops / 1e9:.1f} GFLOP/step = "
        f"{rec['gflops_per_s']:.0f} GFLOP/s). Thunk time summed over threads; share of the "
        "CPU time:",
        [{"category": k, "ms/step": v, "share": v / total} for k, v in per_category.most_common()],
        ("category", "ms/step", "share"),
    )


# --------------------------------------------------------------------------------------
# layers: one conv / one batch norm of each stage, alone.


def _layer_rows(args, emit, hw, c, n_layers, rng) -> list[dict]:
    """Times one conv and one BN + ReLU of shape [batch, hw, hw, c], forward and backward."""
    import _resnet_functional as rf
    import jax
    import jax.numpy as jnp
    import numpy as np

    b = args.batch_size
    x = jnp.asarray(rng.standard_normal((b, hw, hw, c), dtype=np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal((3, 3, c, c), dtype=np.float32))
    r = jnp.asarray(rng.standard_normal((b, hw, hw, c), dtype=np.float32))
    p = {"scale": jnp.ones(c), "bias": jnp.zeros(c)}
    xc, wc, rc = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), r.transpose(0, 3, 1, 2)

    def conv_loss(x, w, layout, r):
        return jnp.vdot(rf._conv(x, w, 1, layout), r)

    def bn_loss(x, p, bn, r):
        y, _, _ = (rf._bn_fused if bn == "fused" else rf._bn_autodiff)(x, p, "NHWC", True)
        return jnp.vdot(y, r)

    opts = args.compiler_options or None
    conv_f = jax.jit(lambda x, w: rf._conv(x, w, 1, "NHWC"), compiler_options=opts)
    conv_g = jax.jit(jax.grad(conv_loss, argnums=(0, 1)), static_argnums=2, compiler_options=opts)
    bn_g = jax.jit(jax.grad(bn_loss, argnums=(0, 1)), static_argnums=2, compiler_options=opts)
    fns = {
        "conv fwd": lambda: conv_f(x, w),
        "conv fwd+bwd": lambda: conv_g(x, w, "NHWC", r),
        "conv fwd+bwd NCHW": lambda: conv_g(xc, wc, "NCHW", rc),
        "BN+ReLU fwd+bwd (autodiff)": lambda: bn_g(x, p, "autodiff", r),
        "BN+ReLU fwd+bwd (fused)": lambda: bn_g(x, p, "fused", r),
    }
    samples = _common.time_interleaved(fns, repeats=max(args.steps, 10), warmup=1)
    flops = 2 * b * hw * hw * c * c * 9
    rows = []
    for name, sample in samples.items():
        s = _common.summarize(sample)
        is_conv = "conv" in name
        passes = 3 if is_conv and "bwd" in name else 1
        rows.append(
            emit(
                {
                    "bench": "cpu_step_layers",
                    "compiler_options": args.compiler_options or {},
                    "shape": [b, hw, hw, c],
                    "op": name,
                    "median_ms": 1e3 * s["median_wall_s"],
                    "median_cpu_ms": 1e3 * s["median_cpu_s"],
                    "layers_per_step": n_layers,
                    "ms_per_step_estimate": 1e3 * s["median_wall_s"] * n_layers,
                    "gflops_per_s": passes * flops / s["median_wall_s"] / 1e9 if is_conv else None,
                }
            )
        )
    return rows


def section_layers(args, emit):
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    # (spatial size, channels, how many such convs / batch norms a ResNet-32 step has)
    for hw, c, n_layers in ((32, 16, 11), (16, 32, 10), (8, 64, 10)):
        rows.extend(_layer_rows(args, emit, hw, c, n_layers, rng))
    _common.print_table(
        f"One layer of each stage (batch {args.batch_size}), forward + backward; "
        "x layers = per-step estimate"
        + (f"; compiled with {args.compiler_options}" if args.compiler_options else ""),
        [
            {
                "shape": "x".join(map(str, r["shape"][1:])),
                "op": r["op"],
                "ms": r["median_ms"],
                "cpu ms": r["median_cpu_ms"],
                "x layers ms": r["ms_per_step_estimate"],
                "GFLOP/s": r["gflops_per_s"] if r["gflops_per_s"] is not None else "",
            }
            for r in rows
        ],
        ("shape", "op", "ms", "cpu ms", "x layers ms", "GFLOP/s"),
    )


# --------------------------------------------------------------------------------------
# variants: in-process alternatives, interleaved with the default.


def section_variants(args, emit):
    opts = args.compiler_options
    builders = {
        "default (make_train_step, flax, f32, NHWC)": lambda: trainer_step(
            args, compiler_options=opts
        )[0],
        "plain jit, no shard_map": lambda: plain_jit_step(args, compiler_options=opts),
        "bfloat16 compute (make_train_step)": lambda: trainer_step(
            args, dtype="bfloat16", compiler_options=opts
        )[0],
        "flax-free NHWC, autodiff BN": lambda: functional_step(args, compiler_options=opts),
        "flax-free NCHW, autodiff BN": lambda: functional_step(
            args, layout="NCHW", compiler_options=opts
        ),
        "flax-free NHWC, fused BN (custom_vjp)": lambda: functional_step(
            args, bn="fused", compiler_options=opts
        ),
        "flax-free NCHW, fused BN (custom_vjp)": lambda: functional_step(
            args, layout="NCHW", bn="fused", compiler_options=opts
        ),
        "flax-free NHWC, fused BN, bfloat16": lambda: functional_step(
            args, bn="fused", dtype="bfloat16", compiler_options=opts
        ),
        "flax-free NHWC, no BN (diagnostic)": lambda: functional_step(
            args, bn="none", compiler_options=opts
        ),
    }
    if args.variants:
        keep = [k for k in builders if any(v in k for v in args.variants)]
        builders = {k: builders[k] for k in builders if k in keep or k.startswith("default")}
    fns, compile_s = {}, {}
    for name, build in builders.items():
        start = time.perf_counter()
        fns[name] = build()
        _common.block(fns[name]())  # compile
        compile_s[name] = time.perf_counter() - start
    samples = _common.time_interleaved(fns, repeats=args.steps, warmup=args.warmup - 1)
    base = _common.summarize(samples[next(iter(fns))])
    rows = []
    for name, sample in samples.items():
        s = _common.summarize(sample)
        rows.append(
            emit(
                {
                    "bench": "cpu_step_variant",
                    "variant": name,
                    "compiler_options": opts or {},
                    "model": args.model,
                    "batch_size": args.batch_size,
                    "step_median_s": s["median_wall_s"],
                    "step_iqr_s": s.get("iqr_wall_s"),
                    "step_median_cpu_s": s["median_cpu_s"],
                    "ratio_to_default": _common.ratio(s["median_wall_s"], base["median_wall_s"]),
                    "ratio_to_default_cpu": _common.ratio(s["median_cpu_s"], base["median_cpu_s"]),
                    "compile_and_first_step_s": compile_s[name],
                    "timed_steps": s["repeats"],
                }
            )
        )
    _common.print_table(
        "Step variants (interleaved, same process; < 1 = faster than the default)"
        + (f"; every variant compiled with {opts}" if opts else ""),
        [
            {
                "variant": r["variant"],
                "step s": r["step_median_s"],
                "IQR s": r["step_iqr_s"],
                "cpu s": r["step_median_cpu_s"],
                "x default": r["ratio_to_default"],
                "x default cpu": r["ratio_to_default_cpu"],
                "compile s": r["compile_and_first_step_s"],
            }
            for r in rows
        ],
        ("variant", "step s", "IQR s", "cpu s", "x default", "x default cpu", "compile s"),
    )


# --------------------------------------------------------------------------------------
# options: XLA debug options per executable, interleaved with the default in one process.


def section_options(args, emit):
    import jax
    import numpy as np

    sets = [("default", {}, "float32")]
    for name, opts in OPTION_SETS:
        if args.options is None or any(o in name for o in args.options):
            sets.append((name, opts, "float32"))
    sets.append(("best options + bfloat16", BEST_OPTIONS, "bfloat16"))
    sets.append(("bfloat16 (no options)", {}, "bfloat16"))
    fns, infos, compile_s, errors, first_losses = {}, {}, {}, {}, {}
    default_hlo = None
    for name, opts, dtype in sets:
        start = time.perf_counter()
        try:
            call, info = trainer_step(args, dtype=dtype, compiler_options=opts)
            # The first two steps start from the same state and batch in every variant:
            # their losses show what an option does to the numerics (forward pass, then
            # one update), before the trajectories drift apart.
            first_losses[name] = [
                float(np.asarray(jax.device_get(call()["loss"]))) for _ in range(2)
            ]
        except Exception as e:  # an option this jaxlib does not accept
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            continue
        fns[name], infos[name] = call, info
        compile_s[name] = time.perf_counter() - start
        step = info["step"]
        if hasattr(step, "as_text"):  # a Compiled (options given)
            text = step.as_text()
        else:
            text = step.lower(info["box"]["state"], info["batch"], info["key"]).compile().as_text()
        text = re.sub(r", metadata=\{[^}]*\}", "", text[text.index("ENTRY") :])
        if name == "default":
            default_hlo = text
        infos[name]["same_hlo"] = text == default_hlo
    samples = _common.time_interleaved(fns, repeats=args.steps, warmup=args.warmup - 1)
    base = _common.summarize(samples["default"])
    ref = first_losses["default"]
    rows = []
    for name, opts, dtype in sets:
        if name in errors:
            rows.append(
                emit(
                    {
                        "bench": "cpu_step_options",
                        "variant": name,
                        "options": opts,
                        "error": errors[name],
                    }
                )
            )
            continue
        s = _common.summarize(samples[name])
        rows.append(
            emit(
                {
                    "bench": "cpu_step_options",
                    "variant": name,
                    "options": opts,
                    "dtype": dtype,
                    "step_median_s": s["median_wall_s"],
                    "step_iqr_s": s.get("iqr_wall_s"),
                    "step_median_cpu_s": s["median_cpu_s"],
                    "ratio_to_default": _common.ratio(s["median_wall_s"], base["median_wall_s"]),
                    "ratio_to_default_cpu": _common.ratio(s["median_cpu_s"], base["median_cpu_s"]),
                    "same_hlo_as_default": infos[name]["same_hlo"],
                    "first_two_losses": first_losses[name],
                    "loss_rel_diff_step1": abs(first_losses[name][0] - ref[0]) / abs(ref[0]),
                    "loss_rel_diff_step2": abs(first_losses[name][1] - ref[1]) / abs(ref[1]),
                    "compile_and_first_step_s": compile_s[name],
                    "timed_steps": s["repeats"],
                }
            )
        )
    _common.print_table(
        "XLA compile options on the trainer's step (interleaved, same process; same HLO = "
        "the optimised HLO is unchanged (codegen flags such as fast math still act); loss "
        "diff 1/2 = relative difference of the loss of step 1/2 to the default's)",
        [
            {
                "variant": r["variant"],
                "step s": r.get("step_median_s", "error"),
                "IQR s": r.get("step_iqr_s", ""),
                "cpu s": r.get("step_median_cpu_s", ""),
                "x default": r.get("ratio_to_default", ""),
                "x default cpu": r.get("ratio_to_default_cpu", ""),
                "same HLO": r.get("same_hlo_as_default", ""),
                "loss diff 1": r.get("loss_rel_diff_step1", ""),
                "loss diff 2": r.get("loss_rel_diff_step2", ""),
            }
            for r in rows
        ],
        (
            "variant",
            "step s",
            "IQR s",
            "cpu s",
            "x default",
            "x default cpu",
            "same HLO",
            "loss diff 1",
            "loss diff 2",
        ),
    )


# --------------------------------------------------------------------------------------
# flags: one subprocess per XLA flag set (flags are read once, when jax starts).


def child_default_step(args, emit):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        call, info = trainer_step(args, all_devices=args.all_devices)
        _common.block(call())
        compile_s = time.perf_counter() - start
    samples = _common.time_interleaved({"step": call}, repeats=args.steps, warmup=args.warmup - 1)
    s = _common.summarize(samples["step"])
    emit(
        {
            "bench": "cpu_step_flags_child",
            "step_median_s": s["median_wall_s"],
            "step_median_cpu_s": s["median_cpu_s"],
            "step_min_s": s["min_wall_s"],
            "compile_and_first_step_s": compile_s,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "num_devices": len(info["mesh"].devices.flat),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    )


def section_flags(args, emit):
    child = [
        __file__,
        "--child-default-step",
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--num-classes",
        str(args.num_classes),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    base_flags = os.environ.get("XLA_FLAGS", "")
    runs = [("baseline (no flags)", [], [], None)]
    for name, flags, extra in FLAG_SETS:
        if args.flags and not any(f in name for f in args.flags):
            continue
        runs.append((name, flags, extra, None))
    if shutil.which("taskset") and (not args.flags or any("core" in f for f in args.flags)):
        runs.append(("one core (taskset -c 0)", [], [], ["taskset", "-c", "0"]))
    runs.append(("baseline (no flags), again", [], [], None))
    results = []
    for name, flags, extra, prefix in runs:
        env = {"XLA_FLAGS": " ".join([base_flags, *flags]).strip()}
        cmd = [*child, *extra]
        if prefix:  # run python under the prefix command
            cmd = ["-c", _PREFIX_SHIM, *prefix, sys.executable, *cmd]
        out, rc = _common.run_json_subprocess(cmd, env=env)
        rec = {"bench": "cpu_step_flags", "variant": name, "flags": flags, "returncode": rc}
        if out:
            rec.update({k: v for k, v in out[-1].items() if k not in ("bench",)})
        results.append(rec)
    baselines = [r for r in results if r["variant"].startswith("baseline") and "step_median_s" in r]
    base_wall = sum(r["step_median_s"] for r in baselines) / max(len(baselines), 1)
    base_cpu = sum(r["step_median_cpu_s"] for r in baselines) / max(len(baselines), 1)
    for r in results:
        if "step_median_s" in r and baselines:
            r["ratio_to_baseline"] = _common.ratio(r["step_median_s"], base_wall)
            r["ratio_to_baseline_cpu"] = _common.ratio(r["step_median_cpu_s"], base_cpu)
        emit(r)
    _common.print_table(
        "XLA flags (one process each; ratio to the mean of the two baseline runs)",
        [
            {
                "variant": r["variant"],
                "step s": r.get("step_median_s", "failed"),
                "cpu s": r.get("step_median_cpu_s", ""),
                "x base": r.get("ratio_to_baseline", ""),
                "x base cpu": r.get("ratio_to_baseline_cpu", ""),
                "devices": r.get("num_devices", ""),
                "compile s": r.get("compile_and_first_step_s", ""),
                "load": r.get("load_average_1m", ""),
            }
            for r in results
        ],
        ("variant", "step s", "cpu s", "x base", "x base cpu", "devices", "compile s", "load"),
    )


# Runs argv[1:] as a command (lets run_json_subprocess, which starts python, use taskset).
_PREFIX_SHIM = "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])"


# --------------------------------------------------------------------------------------
# input: host batch preparation against the step.


def section_input(args, emit):
    import numpy as np

    import lpjax.training as training
    from experiments import input_pipeline

    rng = np.random.default_rng(0)
    n = 10 * args.batch_size
    dataset = input_pipeline.Dataset(
        images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        labels=rng.integers(0, args.num_classes, n).astype(np.int32),
        num_classes=args.num_classes,
        mean=np.array([0.49, 0.48, 0.45], np.float32),
        std=np.array([0.25, 0.24, 0.26], np.float32),
        name="synthetic-cifar",
    )
    call, info = trainer_step(args)
    step, box, key, mesh = info["step"], info["box"], info["key"], info["mesh"]
    _common.block(call())

    def host_batch(i):
        return input_pipeline.train_batch(
            dataset, i, global_batch_size=args.batch_size, seed=0, augment=True
        )

    # Host preparation alone (augment + normalise), and the host-to-device copy alone.
    prep = []
    for i in range(20):
        t = time.perf_counter()
        host_batch(i)
        prep.append(time.perf_counter() - t)
    put = []
    hb = host_batch(0)
    for _ in range(20):
        t = time.perf_counter()
        _common.block(training.global_batch(mesh, hb))
        put.append(time.perf_counter() - t)

    steps = args.steps

    def loop_device_batch():  # the step alone, batch already on the device
        for _ in range(steps):
            metrics = call()
        return metrics

    def loop_like_trainer():  # as experiments/train.py: prepare, put, dispatch; no blocking
        for i in range(steps):
            batch = training.global_batch(mesh, host_batch(i))
            box["state"], metrics = step(box["state"], batch, key)
        return metrics

    def loop_serial():  # no overlap at all: wait for each step before preparing the next
        for i in range(steps):
            batch = training.global_batch(mesh, host_batch(i))
            box["state"], metrics = step(box["state"], batch, key)
            _common.block(metrics)
        return metrics

    def loop_prefetch():  # a thread prepares the next batches while the step runs
        q = queue.Queue(maxsize=2)

        def producer():
            for i in range(steps):
                q.put(training.global_batch(mesh, host_batch(i)))

        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        for _ in range(steps):
            box["state"], metrics = step(box["state"], q.get(), key)
        thread.join()
        return metrics

    loops = {
        "step only (batch on device)": loop_device_batch,
        "trainer loop (prepare, put, async dispatch)": loop_like_trainer,
        "serial (block every step)": loop_serial,
        "prefetch thread (2 batches ahead)": loop_prefetch,
    }
    samples = _common.time_interleaved(loops, repeats=args.input_repeats, warmup=0)
    base = _common.summarize(samples["step only (batch on device)"])
    median_prep = sorted(prep)[len(prep) // 2]
    median_put = sorted(put)[len(put) // 2]
    rows = [
        emit(
            {
                "bench": "cpu_step_input",
                "item": "host batch prep (train_batch, augment)",
                "per_step_s": median_prep,
                "fraction_of_step": median_prep / (base["median_wall_s"] / steps),
            }
        ),
        emit(
            {
                "bench": "cpu_step_input",
                "item": "host-to-device put (global_batch)",
                "per_step_s": median_put,
                "fraction_of_step": median_put / (base["median_wall_s"] / steps),
            }
        ),
    ]
    for name, sample in samples.items():
        s = _common.summarize(sample)
        rows.append(
            emit(
                {
                    "bench": "cpu_step_input",
                    "item": name,
                    "per_step_s": s["median_wall_s"] / steps,
                    "per_step_cpu_s": s["median_cpu_s"] / steps,
                    "ratio_to_step_only": _common.ratio(s["median_wall_s"], base["median_wall_s"]),
                    "steps_per_loop": steps,
                }
            )
        )
    _common.print_table(
        "Input pipeline against the step (ratio to the step alone, same process)",
        [
            {
                "item": r["item"],
                "s/step": r["per_step_s"],
                "x step only": r.get("ratio_to_step_only", ""),
                "fraction of step": r.get("fraction_of_step", ""),
            }
            for r in rows
        ],
        ("item", "s/step", "x step only", "fraction of step"),
    )


def _comma_list(text: str) -> list[str]:
    """``"a,b,"`` -> ``["a", "b"]`` (command-line lists of names)."""
    return [v for v in text.split(",") if v]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (>= 1)")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--input-repeats", type=int, default=3, help="timed loops per kind")
    parser.add_argument(
        "--variants",
        type=_comma_list,
        default=None,
        help="substrings of the variant names to run (default: all)",
    )
    parser.add_argument(
        "--flags",
        type=_comma_list,
        default=None,
        help="substrings of the flag-set names to run (default: all)",
    )
    parser.add_argument(
        "--options",
        type=_comma_list,
        default=None,
        help="substrings of the compile-option set names to run (default: all)",
    )
    parser.add_argument(
        "--compiler-options",
        type=json.loads,
        default=None,
        help="XLA options for the profile, layers and variants sections, as JSON, "
        'e.g. \'{"xla_cpu_enable_fast_math": true}\' ("best": the best set)',
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test the script")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--child-default-step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--all-devices", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--compiler-options" in argv and argv[argv.index("--compiler-options") + 1] == "best":
        argv = list(argv)
        argv[argv.index("--compiler-options") + 1] = json.dumps(BEST_OPTIONS)
    args = parser.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.profile_steps = 8, 2, 1, 1
        args.input_repeats = 1
        args.flags = args.flags or ["best"]
        args.options = args.options or ["fast math"]
        args.model = "resnet32"

    _common.configure_xla()
    emit = _common.Emitter(args.out)
    if args.child_default_step:
        child_default_step(args, emit)
        return 0
    emit({"bench": "cpu_step_machine", **_common.machine_info()})
    sections = [s for s in args.sections.split(",") if s]
    for section in sections:
        if section not in SECTIONS:
            parser.error(f"unknown section {section!r}; choose from {SECTIONS}")
    for section in sections:
        globals()[f"section_{section}"](args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
