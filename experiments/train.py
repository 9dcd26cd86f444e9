"""Train and evaluate one method on one data set: ``python -m experiments.train``.

    python -m experiments.train [--config experiments/configs/NAME.py] [--workdir DIR]
                                [--config.BLOCK.FIELD=VALUE ...]

e.g. ``--config.method.name=la --config.la.tau=1.5`` (the manual: experiments/README.md).

With no ``--config`` it trains LA + LPL on long-tailed scikit-learn digits
(offline, under a minute on two CPU cores). ``--config`` takes a path (relative to the current
directory) or the name of a shipped config (``--config fashion_mnist_lt_r100``). A work
directory receives ``config.json``, ``metrics.jsonl`` and TensorBoard events, orbax
checkpoints, plots, ``results.json`` and ``details.log`` (third-party logging); running
again on it resumes from the latest checkpoint. The default work directory is
``workdirs/<config>_<method>_seed<seed>``, with ``_<hash>`` appended when the overrides
change anything else (8 hex digits of the resolved config's sha256; the keys that never
change results, e.g. ``data.threads``, are left out).

Exit status: 0 done; 2 a mistake in the command line, config, work directory or data
(one ``error:`` line); 1 the run failed (a non-finite loss, a full disk, an unexpected
error: one line, the traceback in ``WORKDIR/details.log``); 128 + N stopped by signal N
after saving a checkpoint.

As in flax's examples, :func:`train_and_evaluate` is the whole run, top-down; the
command line (absl ``config_flags``, :mod:`experiments.configuration`) is a thin
shell around it, and the work directory's safety (lock, signals, checkpoints) lives
in :mod:`experiments.workdir`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # a locked --workdir is refused at once, before the heavy imports
    from experiments import launch

    launch.refuse_a_locked_workdir(sys.argv[1:])

import json
import os
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from experiments import (
    configuration,
    console,
    methods,
    metric_writer,
    metrics,
    models,
    optimizers,
    plots,
    train_step,
)
from experiments import workdir as workdir_lib
from experiments.configs.validation import validate_config
from experiments.data import in_memory, meta_set, pipeline, registry


class NonFiniteLossError(RuntimeError):
    """The training loss or gradient became NaN or infinite."""


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    reference: ml_collections.ConfigDict | None = None,
) -> dict:
    """Trains ``config.method.name`` as configured, resuming from ``workdir``; returns results.

    ``reference`` is the config before command-line overrides (see
    :func:`experiments.configs.validation.validate_config`), used only for ``note:`` lines
    on options the run ignores.

    Raises:
      workdir_lib.UserError: a wrong config or work directory, found before anything is written.
      in_memory.DatasetNotPreparedError: the data set is not on disk.
      workdir_lib.TrainingInterrupted: SIGTERM / SIGINT; a checkpoint of the last step was saved.
      NonFiniteLossError: the loss or gradient became non-finite; the last checkpoint
        is the last good state.
    """
    workdir = pathlib.Path(workdir).resolve()
    single_process = not (config.run.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if single_process:  # refused at once, before the data and the model are loaded
        workdir_lib.refuse_if_locked(workdir)
    _initialize_distributed(config)
    for note in validate_config(config, reference=reference):
        console.note(note)
    workdir_lib.check_path(workdir)
    if not single_process and jax.process_index() == 0:
        workdir_lib.refuse_if_locked(workdir)
    # Hyperparameters are chosen on the validation split where there is one, never on test.
    train, validation, test = registry.load(config)
    train, validation, meta = _hold_out_meta_set(config, train, validation)
    _check_data(config, train, meta)
    model, method = _model_and_method(config, train)
    is_chief = jax.process_index() == 0
    with workdir_lib.lock(workdir, enabled=is_chief), workdir_lib.StopSignals() as stop:
        console.open_log(workdir, jax.process_index())
        workdir_lib.check_config(workdir, config)
        splits = _Splits(train, validation, test, meta)
        return _train(config, workdir, splits, model, method, stop)


class _Splits(NamedTuple):
    """The run's data: ``validation`` and ``meta`` may be None."""

    train: pipeline.Split
    validation: pipeline.Split | None
    test: pipeline.Split
    meta: pipeline.Split | None


def _hold_out_meta_set(config, train, validation):
    """``(train, validation, meta)``: the meta set of the methods that use one, else None."""
    use = methods.meta_set_of(config.method.name)
    if not use:
        return train, validation, None
    try:
        return meta_set.hold_out(
            train,
            validation,
            per_class=config.meta.per_class,
            seed=config.seed,
            into_training=use == "training",
        )
    except ValueError as error:
        raise workdir_lib.UserError(str(error)) from None


def _model_and_method(config: ml_collections.ConfigDict, train):
    """The model and the method for ``train``'s classes; a bad choice is a ``UserError``."""
    model = models.create_model(
        config.model.name,
        num_classes=train.num_classes,
        dtype=jnp.dtype(config.model.dtype),
        **methods.model_options(config),
    )
    _, features = jax.eval_shape(
        lambda: model.init_with_output(
            jax.random.key(0), jnp.zeros((1, *train.image_shape)), train=False, return_features=True
        )[0]
    )
    try:
        method = methods.make_method(
            config,
            train.class_counts,
            steps_per_epoch=pipeline.steps_per_epoch(train, config.optim.batch_size),
            feature_dim=features.shape[-1],
        )
    except ValueError as error:  # e.g. LPL bounds needing too many steps, ISDA too large
        raise workdir_lib.UserError(str(error)) from None
    return model, method


def _train(config, workdir, splits: _Splits, model, method, stop) -> dict:
    train = splits.train
    is_chief = jax.process_index() == 0
    mesh = train_step.make_data_mesh()
    steps_per_epoch = pipeline.steps_per_epoch(train, config.optim.batch_size)
    total_steps = config.optim.num_epochs * steps_per_epoch
    tx, schedule = optimizers.make_optimizer(config.optim, steps_per_epoch)
    input_shape = (1, *train.image_shape)

    key = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(key)
    model_fns = models.classifier_model_fns(model, input_shape=input_shape)
    state = train_step.create_train_state(model_fns, tx, method.transform, key=init_key, mesh=mesh)
    manager = workdir_lib.checkpoint_manager(workdir, config)
    manager, state, history = workdir_lib.restore(manager, state, workdir, config)
    start_step = int(state.step)

    writer = metric_writer.MetricWriter(workdir, resume_step=start_step, enabled=is_chief)
    compiler_options = _compiler_options(config)
    update_fn = train_step.make_train_step(
        model_fns,
        tx,
        method.transform,
        method.loss_fn,
        mesh=mesh,
        example_weights_fn=method.example_weights_fn,
        meta=method.meta,
        compiler_options=compiler_options,
    )
    predict_fn = train_step.make_predict_step(
        model_fns,
        mesh=mesh,
        logit_transform=method.predict_transform,
        compiler_options=compiler_options,
    )

    # Per-step metrics since the last log line; carried in checkpoints so that a run
    # stopped between two log lines logs the same windows when it resumes.
    window: list[dict] = list(history.pop("pending"))
    window_start = time.perf_counter()
    eval_results = None
    progress = tqdm(
        range(start_step, total_steps),
        initial=start_step,
        total=total_steps,
        desc=f"{config.method.name} on {config.data.name}",
        disable=not is_chief,
        file=sys.stdout,
    )
    # Batches are a pure function of (seed, step): the pipeline starts at the restored step.
    batches = pipeline.train_batches(
        train,
        start_step=start_step,
        num_steps=total_steps,
        global_batch_size=config.optim.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        options=_loader_options(config),
    )
    for step in progress:
        batch = next(batches)
        mask = np.ones(len(batch["label"]), bool)  # training batches have no padding
        inputs = train_step.global_batch(mesh, (batch["image"], batch["label"], mask))
        meta_batch = _meta_batch(method.meta, splits.meta, step, config, mesh, schedule)
        state, step_metrics = update_fn(state, *inputs, step_key, meta_batch)
        window.append(step_metrics)
        done = step + 1
        if done % config.run.log_every_steps == 0 or done == total_steps:
            summary = _summarise_window(jax.device_get(window))
            _check_finite(summary, done - len(window) + 1, done, manager, workdir, start_step)
            elapsed = time.perf_counter() - window_start
            summary["train_images_per_second"] = len(window) * config.optim.batch_size / elapsed
            summary["train_learning_rate"] = float(schedule(step))
            writer.write(done, summary)
            _record_window(history, summary)
            progress.set_postfix(loss=f"{summary['train_loss']:.3f}")
            window, window_start = [], time.perf_counter()
        epoch_done = done % steps_per_epoch == 0
        epoch = done // steps_per_epoch
        if epoch_done and (epoch % config.run.eval_every_epochs == 0 or done == total_steps):
            eval_results = _evaluate(predict_fn, state, mesh, splits, method, config)
            writer.write(done, {f"eval_{k}": v for k, v in eval_results.items() if v is not None})
        stopping = done < total_steps and stop.requested(done)
        if done % config.run.checkpoint_every_steps == 0 or done == total_steps or stopping:
            pending = [metric_writer.jsonable_tree(m) for m in jax.device_get(window)]
            workdir_lib.save(manager, done, state, {**history, "pending": pending}, config)
        if stopping:
            manager.wait_until_finished()
            writer.close()
            progress.close()
            raise workdir_lib.TrainingInterrupted(stop.signum, done, workdir)
    progress.close()
    manager.wait_until_finished()

    if eval_results is None:  # resumed after the last step, or no full epoch
        eval_results = _evaluate(predict_fn, state, mesh, splits, method, config)
    results = _final_results(config, train, history, eval_results, total_steps)
    if is_chief:
        _write_outputs(workdir, config, train, results)
    writer.close()
    return results


# Meta batches are drawn with their own seed stream, apart from the training batches'.
_META_SEED_OFFSET = 1_000_003


def _meta_batch(meta, meta_split, step: int, config, mesh, schedule):
    """The meta step's ``(images, labels, learning rate)`` at ``step``, or None.

    Meta steps are every ``meta.every_steps`` steps from ``meta.start_step``; the k-th
    one reads the k-th batch of the meta set (a pure function of the seed and k, so a
    resumed run reads the same ones); the look-ahead takes this step's learning rate.
    """
    if meta is None or step < meta.start_step or (step - meta.start_step) % meta.every_steps:
        return None
    batch = pipeline.train_batch(
        meta_split,
        (step - meta.start_step) // meta.every_steps,
        global_batch_size=meta.batch_size,
        seed=config.seed + _META_SEED_OFFSET,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    images, labels = train_step.global_batch(mesh, (batch["image"], batch["label"]))
    return images, labels, jnp.asarray(schedule(step), jnp.float32)


def _check_finite(summary: dict, first: int, last: int, manager, workdir, restored: int) -> None:
    """Stops the run at a non-finite loss or gradient, naming the steps and the checkpoints.

    Right after a restore (the window holds the first step after checkpoint ``restored``)
    that checkpoint is named as the restored one, not as a good state: the steps after it
    diverged, whatever it holds.
    """
    for name in ("train_loss", "train_grad_norm"):
        if not np.isfinite(summary[name]):
            what = f"the training {name.removeprefix('train_')} became non-finite in steps"
            if restored and first <= restored + 1:
                older = [s for s in manager.all_steps() if s < restored]
                before = f"checkpoint {max(older)}" if older else "none"
                raise NonFiniteLossError(
                    f"{what} {first}-{last}, the first after restoring checkpoint {restored} "
                    f"(it matched its digest) in {workdir}; the checkpoint before it: "
                    f"{before}. Lower the learning rate or the perturbation bounds."
                )
            kept = manager.latest_step()
            where = f"checkpoint {kept}" if kept is not None else "no checkpoint yet"
            raise NonFiniteLossError(
                f"{what} {first}-{last}; the last good state is {where} in {workdir}. Lower "
                "the learning rate or the perturbation bounds."
            )


def _record_window(history: dict, summary: dict) -> None:
    """Adds a logging window to the run's history (checkpointed with the state)."""
    history["final_train_loss"] = summary["train_loss"]
    if "train_relative_loss_variation" in summary:
        history["windows"].append(
            metric_writer.jsonable_tree(summary["train_relative_loss_variation"])
        )
    if "train_theta" in summary:  # Meta-LPL: the learned signed bounds over the run
        history.setdefault("theta", []).append(metric_writer.jsonable_tree(summary["train_theta"]))


def _summarise_window(window: list[dict]) -> dict:
    """Means over a logging window; per-class vectors averaged where defined.

    Scalars are plain means, so one non-finite step shows in its window (the meta loss,
    NaN by design on the steps without a meta step, is averaged over the others).
    """
    summary = {}
    for name in window[0]:
        values = np.stack([np.asarray(m[name], np.float64) for m in window])
        if name == "meta_loss":  # NaN on the steps without a meta step
            mean = np.nanmean(values) if np.isfinite(values).any() else np.nan
            summary[f"train_{name}"] = float(mean)
        elif values.ndim == 1:  # a non-finite step makes the window non-finite
            summary[f"train_{name}"] = float(np.mean(values))
        else:
            summary[f"train_{name}"] = metrics.nan_mean(values)
    return summary


def _evaluate(predict, state, mesh, splits: _Splits, method, config) -> dict:
    """Test metrics, and the validation split's prefixed with ``validation_`` if there is one.

    A method with ``fit_logit_offsets`` (the control ``la_meta_offsets``) adds per-class
    offsets fitted on the meta set's logits to every split's logits.
    """
    offsets = 0
    if method.fit_logit_offsets is not None:
        offsets = method.fit_logit_offsets(
            *_gather_predictions(predict, state, mesh, splits.meta, config)
        )
    results = {}
    counts = splits.train.class_counts
    for prefix, dataset in (("", splits.test), ("validation_", splits.validation)):
        if dataset is None:
            continue
        logits, labels = _gather_predictions(predict, state, mesh, dataset, config)
        logits = logits + offsets
        if dataset.is_multilabel:
            split_results = metrics.multilabel_results(logits, labels, counts)
        else:
            split_results = metrics.classification_results(logits, labels, counts)
        results.update({prefix + k: v for k, v in split_results.items()})
    return results


def _gather_predictions(predict, state, mesh, dataset, config) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` of a split in data-set order, on every process.

    Labels travel as global arrays like the images, so both are gathered in the
    mesh's row order, whatever the order of the processes' devices in the mesh.
    """
    logits, labels = [], []
    for batch in pipeline.eval_batches(
        dataset,
        global_batch_size=config.run.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        options=_loader_options(config),
    ):
        images, batch_labels = train_step.global_batch(mesh, (batch["image"], batch["label"]))
        logits.append(multihost_utils.process_allgather(predict(state, images), tiled=True))
        labels.append(multihost_utils.process_allgather(batch_labels, tiled=True))
    return np.concatenate(logits)[: len(dataset)], np.concatenate(labels)[: len(dataset)]


def _loader_options(config: ml_collections.ConfigDict) -> pipeline.LoaderOptions:
    return pipeline.LoaderOptions(
        num_workers=config.data.workers,
        num_threads=config.data.threads,
        prefetch_batches=config.data.prefetch_batches,
    )


def _final_results(config, train, history, eval_results, total_steps) -> dict:
    """``results.json``: the final model's metrics, final train loss, loss variation.

    Built from the checkpointed history, never from ``metrics.jsonl``.
    ``relative_loss_variation`` is, per class, the median over the run's logging
    windows of the window's mean ``(l' - l) / l``: late in training the plain
    loss of well-fit classes tends to 0 and single windows explode, the median
    shows what the perturbation does over the run.
    """
    results = {
        "method": config.method.name,
        "dataset": config.data.name,
        "imbalance_ratio": config.data.imbalance_ratio,
        "model": config.model.name,
        "seed": config.seed,
        "num_steps": total_steps,
        "class_counts": train.class_counts.tolist(),
        **eval_results,
        "final_train_loss": history["final_train_loss"],
    }
    if history["windows"]:
        columns = np.array(history["windows"], np.float64).T  # None -> NaN
        results["relative_loss_variation"] = [
            float(np.median(c[np.isfinite(c)])) if np.isfinite(c).any() else None for c in columns
        ]
    if history.get("theta"):  # Meta-LPL: signed bounds per class, per logging window
        results["theta"] = history["theta"][-1]
        results["theta_history"] = history["theta"]
    return results


def _write_outputs(workdir: pathlib.Path, config, train, results: dict) -> None:
    for key, (what, ylabel, signed) in plots.PER_CLASS_PLOTS.items():
        if key in results:
            plots.plot_per_class(
                {config.method.name: results[key]},
                train.class_counts,
                title=f"{config.method.name} on {config.data.name}: {what}",
                ylabel=ylabel,
                path=workdir / f"{key}.png",
                signed=signed,
            )
    if "theta_history" in results:
        plots.plot_theta(
            results["theta_history"],
            train.class_counts,
            title=f"{config.method.name} on {config.data.name}: learned signed bounds",
            path=workdir / "theta.png",
        )
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, workdir / "results.json")


def _check_data(config: ml_collections.ConfigDict, train, meta) -> None:
    if config.optim.batch_size > len(train):
        raise workdir_lib.UserError(
            f"config.optim.batch_size ({config.optim.batch_size}) is larger than the "
            f"{len(train)} training images of {config.data.name}."
        )
    if methods.meta_set_of(config.method.name) == "batches":
        if config.meta.batch_size > len(meta):
            raise workdir_lib.UserError(
                f"config.meta.batch_size ({config.meta.batch_size}) is larger than the meta "
                f"set ({len(meta)} images: config.meta.per_class = {config.meta.per_class} "
                "per class)."
            )
        if config.meta.batch_size % jax.device_count():
            raise workdir_lib.UserError(
                f"config.meta.batch_size ({config.meta.batch_size}) must be divisible by the "
                f"number of devices ({jax.device_count()})."
            )


def _initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize()`` when the config or the environment asks for it.

    On TPU pods and SLURM clusters JAX finds the processes by itself
    (``--config.run.distributed=True``). Elsewhere set ``JAX_COORDINATOR_ADDRESS``
    (host:port of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
    CPU processes exchange data through gloo.
    """
    if not (config.run.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


# XLA:CPU options that run convolutions on XLA's own (Eigen) kernels and only dots,
# reductions and elementwise work on YNNPACK: a ResNet-32 train step takes 0.6x the
# default time on a 2-core CPU (benchmarks/RESULTS.md). Experimental, jaxlib-specific.
CPU_FAST_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE"
    )
}


def _compiler_options(config: ml_collections.ConfigDict) -> dict | None:
    """XLA options for the train and predict steps (on CPU, faster convolutions).

    The option is experimental; a jaxlib that rejects it trains without it.
    """
    if not config.run.cpu_fast_convolutions or jax.default_backend() != "cpu":
        return None
    options = CPU_FAST_CONVOLUTIONS
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception as error:  # noqa: BLE001 - any rejection means: run without
        console.note(f"this jaxlib rejects {options} ({error}); training without it.")
        return None
    return options


def _help_text() -> str:
    """The module docstring, the methods, data sets, models and every config key."""
    defaults = configuration.flat_items(configuration.load_config().to_dict())
    keys = "\n".join(f"  --config.{k}={v!r}" for k, v in sorted(defaults.items()))

    def method_lines(multilabel: bool) -> str:
        lines = []
        for name in methods.NAMES:
            entry = methods.entry(name)
            if entry.multilabel == multilabel:
                blocks = f" [{', '.join(entry.blocks)}]" if entry.blocks else ""
                lines.append(f"  {name:17s} {entry.summary}{blocks}")
        return "\n".join(lines)

    return (
        f"{__doc__}\n"
        f"methods (--config.method.name=; [the config blocks each reads]):\n"
        f"{method_lines(multilabel=False)}\n"
        f" multi-label:\n{method_lines(multilabel=True)}\n"
        f"datasets (--config.data.name=): {', '.join(registry.NAMES)}\n"
        f"models (--config.model.name=): {', '.join(models.MODELS)}\n\n"
        f"config keys (values of the default config; each is commented in "
        f"experiments/configs/common.py and, for the method blocks, "
        f"experiments/methods/registry.py):\n{keys}"
    )


def _command_line(argv: list[str]):
    """``(config, workdir, reference)``: ``reference`` is the config file's own config."""
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        print(_help_text())
        sys.exit(0)
    try:
        parsed = configuration.parse_command_line(argv)
    except (ValueError, FileNotFoundError) as error:
        raise workdir_lib.UserError(str(error)) from None
    workdir = parsed.workdir or configuration.default_workdir(parsed)
    return parsed.config, workdir, parsed.file_config


def parse_args(argv: list[str]) -> tuple[ml_collections.ConfigDict, pathlib.Path]:
    """``(config, workdir)`` from ``--config PATH``, ``--workdir DIR``, ``--config.KEY=VALUE``.

    Parsed by absl's ``config_flags`` (:func:`experiments.configuration.parse_command_line`);
    ``-h`` / ``--help`` prints the methods, data sets, models and config keys, and exits.
    """
    config, workdir, _ = _command_line(argv)
    return config, workdir


def main(argv: list[str]) -> int:
    """Runs the command line; returns the exit status (2: a user error, one line).

    Third-party output goes to ``WORKDIR/details.log`` (:mod:`experiments.console`); every
    failure is one ``error:`` line on stderr (and at most one hint line).
    """
    with console.capture():
        try:
            config, workdir, reference = _command_line(argv)
            results = train_and_evaluate(config, workdir, reference=reference)
        except (
            workdir_lib.UserError,
            FileNotFoundError,
            in_memory.DatasetNotPreparedError,
        ) as error:
            console.error(str(error))
            return 2
        except NonFiniteLossError as error:
            console.error(str(error))
            return 1
        except workdir_lib.TrainingInterrupted as interrupted:
            console.say(f"\n{interrupted}")
            return interrupted.exit_code
        except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
            console.error(
                "stopped at once by Ctrl-C, without saving a checkpoint; run the same "
                "command again to resume from the last one."
            )
            return 130
        except Exception as error:  # noqa: BLE001 - one line; the traceback to the log
            return _report_failure(error, argv)
    if jax.process_index() == 0:
        print(f"\nResults of {config.method.name} on {config.data.name} in {workdir}:")
        names = (*metrics.SINGLE_LABEL_METRICS, "validation_accuracy", *metrics.MULTILABEL_METRICS)
        for name in names:
            if name in results:
                value = results[name]
                print(f"  {name:22s} {'-' if value is None else f'{100 * value:.2f}%'}")
    return 0


def _report_failure(error: Exception, argv: list[str]) -> int:
    """One ``error:`` line for a failure that is not a mistake in the command (status 1)."""
    import traceback

    details = "".join(traceback.format_exception(error))
    console.log(details)
    log = console.log_path()
    disk_full = workdir_lib.disk_full(error)
    if disk_full:
        try:
            workdir = pathlib.Path(_command_line(argv)[1]).resolve()
            kept = workdir_lib.complete_checkpoints(workdir)
        except Exception:  # noqa: BLE001 - the one line matters more than its details
            workdir, kept = "the work directory", []
        resume = f"checkpoint {kept[-1]}" if kept else "the start (no checkpoint yet)"
        console.error(
            f"the disk of {workdir} is full ({disk_full}). Free some space and run the same "
            f"command again: the run resumes from {resume}."
        )
        return 1
    if log is None:  # no work directory yet: the traceback is all there is
        console.say(details.rstrip())
    where = f"; the traceback is in {log}" if log else ""
    console.error(f"unexpected {type(error).__name__}: {_one_line(error)}{where}")
    return 1


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def entry_point() -> None:
    """The ``lpjax-train`` command (and ``python -m experiments.train``)."""
    console.keep_capturing_until_exit()  # late third-party output still goes to the log
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entry_point()
