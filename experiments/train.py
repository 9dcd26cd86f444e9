"""Train and evaluate one method on one data set: :func:`train_and_evaluate`.

As in flax's examples, :func:`train_and_evaluate` is the whole run, top-down: load the
data, build the model and the method, restore the latest checkpoint, loop over steps
(log, evaluate, checkpoint), write the results. The loop names no method: a method
brings its own data preparation, step, extra inputs, summaries and test-time offsets
(:class:`experiments.methods.Method`), each with the plain protocol as default. The
command line around it is :mod:`experiments.main` (``python -m experiments.train`` runs
it too); the work directory's safety (lock, signals, checkpoints) is
:mod:`experiments.run`.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m experiments.train: the command line, before heavy imports
    from experiments import main

    main.entry_point()

import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from experiments import methods, metrics, models, optimizers, plots, step
from experiments.config.rules import validate_config
from experiments.data import fingerprint, pipeline, registry
from experiments.run import console, errors, lock, metric_writer
from experiments.run import workdir as workdir_lib

# Deprecated here: the run's errors live in experiments.run.errors.
NonFiniteLossError = errors.NonFiniteLossError


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    reference: ml_collections.ConfigDict | None = None,
) -> dict:
    """Trains ``config.method.name`` as configured, resuming from ``workdir``; returns results.

    ``reference`` is the config before command-line overrides (see
    :func:`experiments.config.rules.validate_config`), used only for ``note:`` lines
    on options the run ignores.

    Raises:
      errors.UserError: a wrong config or work directory, found before anything is written.
      in_memory.DatasetNotPreparedError: the data set is not on disk.
      errors.TrainingInterrupted: SIGTERM / SIGINT; a checkpoint of the last step was saved.
      errors.NonFiniteLossError: the loss or gradient became non-finite; the last
        checkpoint is the last good state.
    """
    workdir = pathlib.Path(workdir).resolve()
    single_process = not (config.run.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if single_process:  # refused at once, before the data and the model are loaded
        lock.refuse_if_locked(workdir)
    _initialize_distributed(config)
    _check_platform()
    for note in validate_config(config, reference=reference):
        console.note(note)
    workdir_lib.check_path(workdir)
    workdir_lib.check_files(workdir)
    if not single_process and jax.process_index() == 0:
        lock.refuse_if_locked(workdir)
    # Hyperparameters are chosen on the validation split where there is one, never on test.
    splits = _user_errors(lambda: methods.prepare_data(config, registry.load(config)))
    _check_data(config, splits.train)
    data = fingerprint.fingerprint(splits)  # what the run trains on, never where it is
    model, method = _model_and_method(config, splits.train)
    is_chief = jax.process_index() == 0
    with lock.lock(workdir, enabled=is_chief), workdir_lib.StopSignals() as stop:
        # A run refused here (another config, other data) leaves the directory untouched.
        config_json = workdir_lib.check_config(workdir, config, data)
        console.open_log(workdir, jax.process_index())
        return _train(config, workdir, splits, model, method, stop, data, config_json)


def _user_errors(function, *args, **kwargs):
    """``function(*args, **kwargs)``, its ``ValueError`` (a setting the data, the model or
    the method refuses) a one-line ``UserError``."""
    try:
        return function(*args, **kwargs)
    except ValueError as error:
        raise errors.UserError(str(error)) from None


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
    try:  # e.g. LPL bounds needing too many steps, ISDA too large
        method = methods.make_method(
            config,
            train.class_counts,
            steps_per_epoch=pipeline.steps_per_epoch(train, config.optim.batch_size),
            feature_dim=features.shape[-1],
        )
    except ValueError as error:
        raise errors.UserError(_as_config_key(str(error), config)) from None
    return model, method


def _as_config_key(message: str, config: ml_collections.ConfigDict) -> str:
    """``message`` with a leading parameter name of lpjax (``step_size must be ...``)
    written as the config key the method reads it from (``config.lpl.step_size``)."""
    first = message.split(" ", 1)[0]
    for block in methods.entry(config.method.name).blocks:
        if first in config[block]:
            return f"config.{block}.{message}"
    return message


def _train(config, workdir, splits, model, method, stop, data, config_json) -> dict:
    train = splits.train
    is_chief = jax.process_index() == 0
    mesh = step.make_data_mesh()
    steps_per_epoch = pipeline.steps_per_epoch(train, config.optim.batch_size)
    total_steps = config.optim.num_epochs * steps_per_epoch
    tx, schedule = optimizers.make_optimizer(config.optim, steps_per_epoch)
    input_shape = (1, *train.image_shape)

    key = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(key)
    model_fns = models.classifier_model_fns(model, input_shape=input_shape)
    state = step.create_train_state(model_fns, tx, method.transform, key=init_key, mesh=mesh)
    manager = workdir_lib.checkpoint_manager(workdir, config)
    manager, state, history = workdir_lib.restore(
        manager, state, workdir, config, data, config_json=config_json
    )
    start_step = int(state.step)

    writer = metric_writer.MetricWriter(workdir, resume_step=start_step, enabled=is_chief)
    compiler_options = _compiler_options(config)
    context = methods.StepContext(model_fns, tx, mesh, compiler_options)
    update_fn = method.make_step(method, context)
    predict_fn = step.make_predict_step(
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
    for step_index in range(start_step, total_steps):
        batch = next(batches)
        mask = np.ones(len(batch["label"]), bool)  # training batches have no padding
        inputs = step.global_batch(mesh, (batch["image"], batch["label"], mask))
        extras = method.extra_inputs(splits, config.seed, step_index)  # a function of the step
        if extras is not None:
            extras = step.global_batch(mesh, extras)
        state, step_metrics = update_fn(state, *inputs, step_key, extras)
        if step_index == start_step:  # the first step compiles: the ETA counts after it
            start_clock(progress, step_index + 1)
        else:
            progress.update(1)
        window.append(step_metrics)
        done = step_index + 1
        if done % config.run.log_every_steps == 0 or done == total_steps:
            summary = method.summarize_window(jax.device_get(window))
            _check_finite(summary, done - len(window) + 1, done, manager, workdir, start_step)
            elapsed = time.perf_counter() - window_start
            summary["train_images_per_second"] = len(window) * config.optim.batch_size / elapsed
            summary["train_learning_rate"] = float(schedule(step_index))
            writer.write(done, summary)
            _record_window(history, summary, method.tracked)
            progress.set_postfix(loss=f"{summary['train_loss']:.3f}")
            window, window_start = [], time.perf_counter()
        epoch_done = done % steps_per_epoch == 0
        epoch = done // steps_per_epoch
        every = 1 if config.run.eval_test_every_epoch else config.run.eval_every_epochs
        if epoch_done and (epoch % every == 0 or done == total_steps):
            eval_results = _evaluate(predict_fn, state, mesh, splits, method, config)
            writer.write(done, {f"eval_{k}": v for k, v in eval_results.items() if v is not None})
            if config.run.eval_test_every_epoch:  # the authors' protocol, emulated (below)
                history.setdefault("epochs", []).append(_epoch_record(epoch, eval_results))
        stopping = done < total_steps and stop.requested(done)
        if done % config.run.checkpoint_every_steps == 0 or done == total_steps or stopping:
            pending = [metric_writer.jsonable_tree(m) for m in jax.device_get(window)]
            workdir_lib.save(manager, done, state, {**history, "pending": pending}, config, data)
        if stopping:
            manager.wait_until_finished()
            writer.close()
            progress.close()
            raise errors.TrainingInterrupted(stop.signum, done, workdir)
    progress.close()
    manager.wait_until_finished()

    if eval_results is None:  # resumed after the last step, or no full epoch
        eval_results = _evaluate(predict_fn, state, mesh, splits, method, config)
    results = _final_results(config, train, history, eval_results, total_steps, method.tracked)
    if is_chief:
        _write_outputs(workdir, config, train, results, method.tracked)
    writer.close()
    return results


def start_clock(progress: tqdm, done: int) -> None:
    """Restarts ``progress``'s clock at ``done`` steps: its rate, elapsed time and ETA then
    count from now, leaving out what came before (the first step's compilation)."""
    progress.reset()
    progress.n = progress.last_print_n = progress.initial = done
    progress.refresh()


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
                raise errors.NonFiniteLossError(
                    f"{what} {first}-{last}, the first after restoring checkpoint {restored} "
                    f"(it matched its digest) in {workdir}; the checkpoint before it: "
                    f"{before}. Lower the learning rate or the perturbation bounds."
                )
            kept = manager.latest_step()
            where = f"checkpoint {kept}" if kept is not None else "no checkpoint yet"
            raise errors.NonFiniteLossError(
                f"{what} {first}-{last}; the last good state is {where} in {workdir}. Lower "
                "the learning rate or the perturbation bounds."
            )


def _epoch_record(epoch: int, eval_results: dict) -> dict:
    """One epoch's test (and validation) accuracy, for ``run.eval_test_every_epoch``.

    That option emulates the authors' scripts, which report the best *test* accuracy over
    epochs. The best epoch on test is a selection on the test split, not an estimate of
    anything; the run's results stay those of the final epoch.
    """
    record = {"epoch": epoch, "accuracy": eval_results.get("accuracy")}
    if "validation_accuracy" in eval_results:
        record["validation_accuracy"] = eval_results["validation_accuracy"]
    return record


def _record_window(history: dict, summary: dict, tracked: tuple[str, ...]) -> None:
    """Adds a logging window to the run's history (checkpointed with the state)."""
    history["final_train_loss"] = summary["train_loss"]
    if "train_delta_l1" in summary:  # a method with a reference_transform (LA + LPL)
        history.setdefault("perturbation", []).append(
            {k: float(summary[f"train_{k}"]) for k in ("delta_l1", "reference_margin", "flips")}
        )
    if "train_relative_loss_variation" in summary:
        history["windows"].append(
            metric_writer.jsonable_tree(summary["train_relative_loss_variation"])
        )
    for name in tracked:  # the method's per-class metrics over the run
        value = metric_writer.jsonable_tree(summary[f"train_{name}"])
        history.setdefault(name, []).append(value)


def _evaluate(predict, state, mesh, splits: registry.Splits, method, config) -> dict:
    """Test metrics, and the validation split's prefixed with ``validation_`` if there is one.

    The method's ``logit_offsets`` (none by default) are added to every split's logits.
    """

    def predictions(dataset):
        return _gather_predictions(predict, state, mesh, dataset, config)

    offsets = method.logit_offsets(predictions, splits)
    results = {}
    counts = splits.train.class_counts
    for prefix, dataset in (("", splits.test), ("validation_", splits.validation)):
        if dataset is None:
            continue
        logits, labels = predictions(dataset)
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
        images, batch_labels = step.global_batch(mesh, (batch["image"], batch["label"]))
        logits.append(multihost_utils.process_allgather(predict(state, images), tiled=True))
        labels.append(multihost_utils.process_allgather(batch_labels, tiled=True))
    return np.concatenate(logits)[: len(dataset)], np.concatenate(labels)[: len(dataset)]


def _loader_options(config: ml_collections.ConfigDict) -> pipeline.LoaderOptions:
    return pipeline.LoaderOptions(
        num_workers=config.data.workers,
        num_threads=config.data.threads,
        prefetch_batches=config.data.prefetch_batches,
    )


def _final_results(config, train, history, eval_results, total_steps, tracked) -> dict:
    """``results.json``: the final model's metrics, final train loss, loss variation.

    Built from the checkpointed history, never from ``metrics.jsonl``.
    ``relative_loss_variation`` is, per class, the median over the run's logging
    windows of the window's mean ``(l' - l) / l``: late in training the plain
    loss of well-fit classes tends to 0 and single windows explode, the median
    shows what the perturbation does over the run. A metric the method tracks is
    there as its last window's value and as ``<name>_history``, every window's.
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
    for name in tracked:
        if history.get(name):
            results[name] = history[name][-1]
            results[f"{name}_history"] = history[name]
    if history.get("perturbation"):  # one entry per logging window
        results["perturbation_history"] = history["perturbation"]
    if history.get("epochs"):  # run.eval_test_every_epoch: one entry per epoch
        results["epoch_history"] = history["epochs"]
    return results


def _write_outputs(workdir: pathlib.Path, config, train, results: dict, tracked) -> None:
    subject = f"{config.method.name} on {config.data.name}"
    for key, (what, ylabel, signed) in plots.PER_CLASS_PLOTS.items():
        if key in results:
            plots.plot_per_class(
                {config.method.name: results[key]},
                train.class_counts,
                title=f"{subject}: {what}",
                ylabel=ylabel,
                path=workdir / f"{key}.png",
                signed=signed,
            )
    for name in tracked:
        if f"{name}_history" in results:
            history = results[f"{name}_history"]
            path = workdir / f"{name}.png"
            plots.plot_tracked(name, history, train.class_counts, subject=subject, path=path)
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, workdir / "results.json")


def _check_platform() -> None:
    """Refuses, in one line, a platform that JAX cannot start (``JAX_PLATFORMS=cuda`` on a
    machine without CUDA): JAX's own error is a traceback on first use."""
    try:
        jax.devices()
    except Exception as error:  # noqa: BLE001 - RuntimeError, or AssertionError when retried
        asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "the default"
        raise errors.UserError(
            f"JAX cannot start the platform {asked!r} ({_what(error)}); set "
            "JAX_PLATFORMS to one this machine has (e.g. cpu), or install its jaxlib plugin."
        ) from None


def _what(error: BaseException) -> str:
    """``Type: message`` on one short line (the type alone when there is no message)."""
    text = errors.one_line(error, 90)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _check_data(config: ml_collections.ConfigDict, train) -> None:
    if config.optim.batch_size > len(train):
        raise errors.UserError(
            f"config.optim.batch_size ({config.optim.batch_size}) is larger than the "
            f"{len(train)} training images of {config.data.name}."
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
