"""Train and evaluate one method on one data set: ``python -m experiments.train``.

    python -m experiments.train [--config experiments/configs/NAME.py] [--workdir DIR]
                                [--config.KEY=VALUE ...]

With no ``--config`` it trains LA + LPL on long-tailed scikit-learn digits
(offline, about a minute on a CPU). A work directory receives ``config.json``,
``metrics.jsonl`` and TensorBoard events, orbax checkpoints, plots and
``results.json``; running again on it resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm import tqdm

from experiments import (
    configuration,
    datasets,
    grain_pipeline,
    input_pipeline,
    methods,
    metric_writer,
    metrics,
    models,
    plots,
)
from lpjax import training


class UserError(ValueError):
    """A mistake in the command line, the config or the work directory: one line, exit 2."""


class WorkdirConfigMismatchError(UserError):
    """The work directory holds a run made with another config."""


class WorkdirLockedError(UserError):
    """Another process is training in the work directory."""


class NonFiniteLossError(RuntimeError):
    """The training loss or gradient became NaN or infinite."""


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT (or a multi-host preemption) stopped the run after a checkpoint."""

    def __init__(self, signum: int | None, step: int, workdir: pathlib.Path):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name if signum else "a preemption notice"
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved in {workdir}. "
            "Run the same command again to resume."
        )

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


def load_data(config: ml_collections.ConfigDict):
    """``(train, validation, test)`` splits of ``config.dataset``; ``validation`` may be None.

    Looked up in :mod:`experiments.datasets`; hyperparameters are chosen on the validation
    split where there is one, never on the test split.
    """
    return datasets.load(config)


DATASETS = datasets.NAMES


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant", "onecycle")


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """``(optimizer, lr schedule)`` named by ``config.optimizer`` and ``config.schedule``.

    ``sgd`` (momentum, optionally Nesterov) and ``adam`` take the weight decay as an L2
    term added to the gradient once (PyTorch's ``weight_decay``); ``adamw`` decouples it
    (Loshchilov & Hutter, ICLR 2019; ``optax.adamw``, decay scaled by the learning rate).
    ``onecycle`` is Smith & Topin's one-cycle policy as PyTorch's ``OneCycleLR`` (used by
    ASL, Ridnik et al., ICCV 2021): cosine rise from lr / 25 over the first
    ``warmup_epochs``, then cosine decay to lr / 25e4; its warm-up is part of the cycle.
    """
    total_steps = config.num_epochs * steps_per_epoch
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if config.schedule == "onecycle":
        main = optax.cosine_onecycle_schedule(
            max(total_steps, 1), config.learning_rate, pct_start=warmup_steps / max(total_steps, 1)
        )
    elif config.schedule == "multistep":
        main = optax.piecewise_constant_schedule(
            config.learning_rate,
            {int(m * steps_per_epoch): config.decay_factor for m in config.milestones},
        )
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, max(total_steps - warmup_steps, 1))
    elif config.schedule == "constant":
        main = optax.constant_schedule(config.learning_rate)
    else:
        raise ValueError(
            f"config.schedule must be multistep, cosine or constant, or onecycle; "
            f"got {config.schedule!r}."
        )
    schedule = main
    if warmup_steps and config.schedule != "onecycle":
        warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
        if config.schedule == "multistep":  # milestones count from the start of training
            schedule = optax.join_schedules(
                [warmup, lambda step: main(step + warmup_steps)], [warmup_steps]
            )
        else:
            schedule = optax.join_schedules([warmup, main], [warmup_steps])
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay), schedule
    if config.optimizer == "sgd":
        update = optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)
    elif config.optimizer == "adam":
        update = optax.adam(schedule)
    else:
        raise ValueError(
            f"config.optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}."
        )
    return optax.chain(optax.add_decayed_weights(config.weight_decay), update), schedule


def _check_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses a work directory made with another config; records the config otherwise."""
    path = workdir / "config.json"
    current = configuration.flat_items(json.loads(configuration.to_json(config)))
    if path.exists():
        previous = configuration.flat_items(json.loads(path.read_text()))
        if previous != current:
            keys = sorted(set(previous) | set(current))
            diffs = [
                f"{k}: {previous.get(k)!r} -> {current.get(k)!r}"
                for k in keys
                if previous.get(k) != current.get(k)
            ]
            raise WorkdirConfigMismatchError(
                f"Work directory {str(workdir)!r} holds a run made with a different config "
                f"({'; '.join(diffs)}). Use another --workdir, or delete this one to start over."
            )
    elif jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(configuration.to_json(config))
        os.replace(tmp, path)


def _initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize()`` when the config or the environment asks for it.

    On TPU pods and SLURM clusters JAX finds the processes by itself
    (``--config.distributed=True``). Elsewhere set ``JAX_COORDINATOR_ADDRESS``
    (host:port of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
    CPU processes exchange data through gloo.
    """
    if not (config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS")):
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
    if not config.cpu_fast_convolutions or jax.default_backend() != "cpu":
        return None
    options = CPU_FAST_CONVOLUTIONS
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception as error:  # noqa: BLE001 - any rejection means: run without
        print(f"note: this jaxlib rejects {options} ({error}); training without it.")
        return None
    return options


_SCHEDULE_FIELDS = {"multistep": ("milestones", "decay_factor")}
_OPTIMIZER_FIELDS = {"sgd": ("momentum", "nesterov")}


def validate_config(config: ml_collections.ConfigDict) -> list[str]:
    """Checks the whole config before anything is written; returns notes on ignored options.

    Raises:
      UserError: naming the first field that is wrong.
    """
    from experiments.configs import common

    def fail(message):
        raise UserError(message)

    if config.dataset not in DATASETS:
        fail(f"config.dataset {config.dataset!r} is unknown; valid: {', '.join(DATASETS)}.")
    if config.method not in methods.SINGLE_LABEL_METHODS + methods.MULTILABEL_METHODS:
        fail(
            f"config.method {config.method!r} is unknown; valid: "
            f"{', '.join(methods.SINGLE_LABEL_METHODS + methods.MULTILABEL_METHODS)}."
        )
    multilabel = datasets.is_multilabel(config.dataset)
    if multilabel != (config.method in methods.MULTILABEL_METHODS):
        kind = "multi-label" if multilabel else "single-label"
        fail(f"config.method {config.method!r} does not apply to the {kind} {config.dataset}.")
    if config.model not in models.MODELS:
        fail(f"config.model {config.model!r} is unknown; valid: {', '.join(models.MODELS)}.")
    for field in (
        "num_epochs",
        "batch_size",
        "eval_batch_size",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "eval_every_epochs",
    ):
        if config[field] < 1:
            fail(f"config.{field} must be >= 1; got {config[field]}.")
    if config.checkpoint_every_steps % config.log_every_steps:
        fail(
            "config.checkpoint_every_steps must be a multiple of config.log_every_steps "
            f"(so a checkpoint never splits a logging window); got "
            f"{config.checkpoint_every_steps} and {config.log_every_steps}."
        )
    for field in ("batch_size", "eval_batch_size"):
        if config[field] % jax.device_count():
            fail(
                f"config.{field} ({config[field]}) must be divisible by the number of "
                f"devices ({jax.device_count()})."
            )
    if config.learning_rate <= 0 or config.weight_decay < 0:
        fail("config.learning_rate must be > 0 and config.weight_decay >= 0.")
    if config.warmup_epochs < 0:
        fail(f"config.warmup_epochs must be >= 0; got {config.warmup_epochs}.")
    if config.optimizer not in OPTIMIZERS:
        fail(f"config.optimizer must be one of {', '.join(OPTIMIZERS)}; got {config.optimizer!r}.")
    if config.schedule not in SCHEDULES:
        fail(
            "config.schedule must be multistep, cosine or constant, or onecycle; "
            f"got {config.schedule!r}."
        )
    if config.schedule == "onecycle" and not 0 < config.warmup_epochs < config.num_epochs:
        fail(
            "config.schedule = 'onecycle' rises over config.warmup_epochs, which must lie "
            f"strictly between 0 and num_epochs = {config.num_epochs}; got {config.warmup_epochs}."
        )
    if config.schedule == "multistep" and any(m <= 0 for m in config.milestones):
        fail(f"config.milestones must be > 0; got {tuple(config.milestones)}.")
    if config.imbalance_ratio < 1:
        fail(f"config.imbalance_ratio must be >= 1; got {config.imbalance_ratio}.")
    defaults = common.get_base_config()
    notes = []
    if config.warmup_epochs > config.num_epochs:
        notes.append(
            f"config.warmup_epochs = {config.warmup_epochs} > num_epochs: the learning rate "
            "never reaches config.learning_rate."
        )
    if config.schedule == "multistep":
        late = [m for m in config.milestones if m >= config.num_epochs]
        if late:
            notes.append(f"config.milestones {late} lie beyond num_epochs = {config.num_epochs}.")
    for schedule, fields in _SCHEDULE_FIELDS.items():
        if config.schedule != schedule:
            notes += [
                f"config.{f} = {config[f]!r} is ignored by the {config.schedule} schedule."
                for f in fields
                if config[f] != defaults[f]
            ]
    for optimizer, fields in _OPTIMIZER_FIELDS.items():
        if config.optimizer != optimizer:
            notes += [
                f"config.{f} = {config[f]!r} is ignored by the {config.optimizer} optimizer."
                for f in fields
                if config[f] != defaults[f]
            ]
    return notes


def _check_data(config: ml_collections.ConfigDict, train) -> None:
    if config.batch_size > len(train):
        raise UserError(
            f"config.batch_size ({config.batch_size}) is larger than the {len(train)} "
            f"training images of {config.dataset}."
        )


def _check_workdir_path(workdir: pathlib.Path) -> None:
    """Refuses a work directory path that is a file, or under one."""
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is a file.")
            if not os.access(path, os.W_OK):
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is read-only.")
            return


@contextlib.contextmanager
def _workdir_lock(workdir: pathlib.Path, enabled: bool):
    """An exclusive ``flock`` on ``WORKDIR/.lock`` for the run's lifetime.

    The kernel releases it when the process ends, however it ends, so a crashed
    or killed run never leaves the directory locked.
    """
    if not enabled:
        yield
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLockedError(
                f"the work directory {str(workdir)!r} is in use by another training process."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _StopSignals:
    """Turns SIGTERM / SIGINT into a request to stop after the current step.

    A second SIGINT (Ctrl-C twice) stops at once. On several processes the stop is the
    preemption sync point of ``jax.distributed`` (JAX's coordination service receives
    the preemption notice), so that every process saves the same step.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signum is not None

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _checkpoint_manager(workdir: pathlib.Path, config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False
        ),
    )


def _save(manager, step: int, state, history: dict) -> None:
    """Saves the train state and the run's history (what results.json needs) atomically."""
    if step in manager.all_steps():
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
        ),
    )


def _restore(manager, state, workdir: pathlib.Path, config):
    """``(manager, state, history)`` from the newest checkpoint that restores.

    A checkpoint that cannot be restored (torn, corrupt, or written by an incompatible
    version) is reported and moved to ``WORKDIR/broken_checkpoints`` (never deleted), and
    the previous one is tried, so at most one checkpoint interval is lost; if none
    restores, a one-line error.
    """
    broken = workdir / "broken_checkpoints"
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(state), history=ocp.args.JsonRestore()
                ),
            )
        except Exception as error:  # noqa: BLE001 - any failure: fall back to an older one
            print(
                f"warning: checkpoint {step} in {workdir / 'checkpoints'} cannot be restored "
                f"({type(error).__name__}: {str(error)[:200]}); moved to {broken}, trying an "
                "older one.",
                file=sys.stderr,
            )
            if jax.process_index() == 0:
                broken.mkdir(exist_ok=True)
                shutil.move(
                    workdir / "checkpoints" / str(step), broken / f"{step}.{time.time_ns()}"
                )
            multihost_utils.sync_global_devices(f"moved broken checkpoint {step}")
            manager.close()
            manager = _checkpoint_manager(workdir, config)
            continue
        return manager, restored.state, dict(restored.history)
    if broken.exists():
        raise UserError(
            f"no checkpoint in {str(workdir / 'checkpoints')!r} can be restored (they are in "
            f"{str(broken)!r}); use another --workdir, or delete this one to start over."
        )
    return manager, state, {"windows": [], "final_train_loss": None, "pending": []}


def _loader_options(config: ml_collections.ConfigDict) -> grain_pipeline.LoaderOptions:
    return grain_pipeline.LoaderOptions(
        num_workers=config.data_workers,
        num_threads=config.data_threads,
        prefetch_batches=config.prefetch_batches,
    )


def _gather_predictions(predict, state, mesh, dataset, config) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` of a split in data-set order, on every process."""
    logits, labels = [], []
    for batch in grain_pipeline.eval_batches(
        dataset,
        global_batch_size=config.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        options=_loader_options(config),
    ):
        outputs = predict(state, training.global_batch(mesh, batch["image"]))
        logits.append(multihost_utils.process_allgather(outputs, tiled=True))
        labels.append(multihost_utils.process_allgather(batch["label"], tiled=True))
    return np.concatenate(logits)[: len(dataset)], np.concatenate(labels)[: len(dataset)]


def _evaluate(predict, state, mesh, train, validation, test, config) -> dict:
    """Test metrics, and the validation split's prefixed with ``validation_`` if there is one."""
    results = {}
    for prefix, dataset in (("", test), ("validation_", validation)):
        if dataset is None:
            continue
        logits, labels = _gather_predictions(predict, state, mesh, dataset, config)
        if dataset.is_multilabel:
            split_results = metrics.multilabel_results(logits, labels, train.class_counts)
        else:
            split_results = metrics.classification_results(logits, labels, train.class_counts)
        results.update({prefix + k: v for k, v in split_results.items()})
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains ``config.method`` as configured, resuming from ``workdir``; returns the results.

    Raises:
      UserError: a wrong config or work directory, found before anything is written.
      input_pipeline.DatasetNotPreparedError: the data set is not on disk.
      TrainingInterrupted: SIGTERM / SIGINT; a checkpoint of the last step was saved.
      NonFiniteLossError: the loss or gradient became non-finite; the last checkpoint
        is the last good state.
    """
    workdir = pathlib.Path(workdir).resolve()
    _initialize_distributed(config)
    for note in validate_config(config):
        print(f"note: {note}")
    _check_workdir_path(workdir)
    train, validation, test = load_data(config)
    _check_data(config, train)
    is_chief = jax.process_index() == 0
    with _workdir_lock(workdir, enabled=is_chief), _StopSignals() as stop:
        _check_workdir(workdir, config)
        return _train(config, workdir, train, validation, test, stop)


def _train(config, workdir, train, validation, test, stop: _StopSignals) -> dict:
    is_chief = jax.process_index() == 0
    mesh = training.make_data_mesh()
    model = models.create_model(
        config.model,
        num_classes=train.num_classes,
        dtype=jnp.dtype(config.dtype),
        bn_axis_name=training.DATA_AXIS,
        **methods.model_options(config),
    )
    steps_per_epoch = grain_pipeline.steps_per_epoch(train, config.batch_size)
    total_steps = config.num_epochs * steps_per_epoch
    tx, schedule = make_optimizer(config, steps_per_epoch)
    input_shape = (1, *train.image_shape)
    _, features = jax.eval_shape(
        lambda: model.init_with_output(
            jax.random.key(0), jnp.zeros(input_shape), train=False, return_features=True
        )[0]
    )
    method = methods.make_method(
        config, train.class_counts, steps_per_epoch=steps_per_epoch, feature_dim=features.shape[-1]
    )

    key = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(key)
    model_fns = models.classifier_model_fns(model, input_shape=input_shape)
    state = training.create_train_state(model_fns, tx, method.transform, key=init_key, mesh=mesh)
    manager = _checkpoint_manager(workdir, config)
    manager, state, history = _restore(manager, state, workdir, config)
    start_step = int(state.step)

    writer = metric_writer.MetricWriter(workdir, resume_step=start_step, enabled=is_chief)
    compiler_options = _compiler_options(config)
    train_step = training.make_train_step(
        model_fns,
        tx,
        method.transform,
        method.loss_fn,
        mesh=mesh,
        example_weights_fn=method.example_weights_fn,
        compiler_options=compiler_options,
    )
    predict = training.make_predict_step(
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
        desc=f"{config.method} on {config.dataset}",
        disable=not is_chief,
        file=sys.stdout,
    )
    # Batches are a pure function of (seed, step): the pipeline starts at the restored step.
    batches = grain_pipeline.train_batches(
        train,
        start_step=start_step,
        num_steps=total_steps,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        options=_loader_options(config),
    )
    for step in progress:
        batch = next(batches)
        mask = np.ones(len(batch["label"]), bool)  # training batches have no padding
        inputs = training.global_batch(mesh, (batch["image"], batch["label"], mask))
        state, step_metrics = train_step(state, *inputs, step_key)
        window.append(step_metrics)
        done = step + 1
        if done % config.log_every_steps == 0 or done == total_steps:
            summary = _summarise_window(jax.device_get(window))
            _check_finite(summary, done - len(window) + 1, done, manager, workdir)
            elapsed = time.perf_counter() - window_start
            summary["train_images_per_second"] = len(window) * config.batch_size / elapsed
            summary["train_learning_rate"] = float(schedule(step))
            writer.write(done, summary)
            _record_window(history, summary)
            progress.set_postfix(loss=f"{summary['train_loss']:.3f}")
            window, window_start = [], time.perf_counter()
        epoch_done = done % steps_per_epoch == 0
        epoch = done // steps_per_epoch
        if epoch_done and (epoch % config.eval_every_epochs == 0 or done == total_steps):
            eval_results = _evaluate(predict, state, mesh, train, validation, test, config)
            writer.write(done, {f"eval_{k}": v for k, v in eval_results.items() if v is not None})
        stopping = done < total_steps and stop.requested(done)
        if done % config.checkpoint_every_steps == 0 or done == total_steps or stopping:
            pending = [metric_writer.jsonable_tree(m) for m in jax.device_get(window)]
            _save(manager, done, state, {**history, "pending": pending})
        if stopping:
            manager.wait_until_finished()
            writer.close()
            progress.close()
            raise TrainingInterrupted(stop.signum, done, workdir)
    progress.close()
    manager.wait_until_finished()

    if eval_results is None:  # resumed after the last step, or no full epoch
        eval_results = _evaluate(predict, state, mesh, train, validation, test, config)
    results = _final_results(config, train, history, eval_results, total_steps)
    if is_chief:
        _write_outputs(workdir, config, train, results)
    writer.close()
    return results


def _check_finite(summary: dict, first: int, last: int, manager, workdir) -> None:
    for name in ("train_loss", "train_grad_norm"):
        if not np.isfinite(summary[name]):
            kept = manager.latest_step()
            where = f"checkpoint {kept}" if kept is not None else "no checkpoint yet"
            raise NonFiniteLossError(
                f"the training {name.removeprefix('train_')} became non-finite in steps "
                f"{first}-{last}; the last good state is {where} in {workdir}. Lower the "
                "learning rate or the perturbation bounds."
            )


def _record_window(history: dict, summary: dict) -> None:
    """Adds a logging window to the run's history (checkpointed with the state)."""
    history["final_train_loss"] = summary["train_loss"]
    if "train_relative_loss_variation" in summary:
        history["windows"].append(
            metric_writer.jsonable_tree(summary["train_relative_loss_variation"])
        )


def _summarise_window(window: list[dict]) -> dict:
    """Means over a logging window; per-class vectors averaged where defined."""
    summary = {}
    for name in window[0]:
        values = np.stack([np.asarray(m[name], np.float64) for m in window])
        if values.ndim == 1:
            summary[f"train_{name}"] = float(values.mean())
        else:
            summary[f"train_{name}"] = metrics.nan_mean(values)
    return summary


def _final_results(config, train, history, eval_results, total_steps) -> dict:
    """``results.json``: the final model's metrics, final train loss, loss variation.

    Built from the checkpointed history, never from ``metrics.jsonl``.
    ``relative_loss_variation`` is, per class, the median over the run's logging
    windows of the window's mean ``(l' - l) / l``: late in training the plain
    loss of well-fit classes tends to 0 and single windows explode, the median
    shows what the perturbation does over the run.
    """
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "imbalance_ratio": config.imbalance_ratio,
        "model": config.model,
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
    return results


def _write_outputs(workdir: pathlib.Path, config, train, results: dict) -> None:
    for key, (what, ylabel, signed) in plots.PER_CLASS_PLOTS.items():
        if key in results:
            plots.plot_per_class(
                {config.method: results[key]},
                train.class_counts,
                title=f"{config.method} on {config.dataset}: {what}",
                ylabel=ylabel,
                path=workdir / f"{key}.png",
                signed=signed,
            )
    tmp = workdir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, workdir / "results.json")


def _help_text() -> str:
    """The module docstring, the methods, data sets, models and every config key."""
    defaults = configuration.flat_items(configuration.load_config().to_dict())
    keys = "\n".join(f"  --config.{k}={v!r}" for k, v in sorted(defaults.items()))
    return (
        f"{__doc__}\n"
        f"methods:  {', '.join(methods.SINGLE_LABEL_METHODS)}\n"
        f"          multi-label: {', '.join(methods.MULTILABEL_METHODS)}\n"
        f"datasets: {', '.join(DATASETS)}\n"
        f"models:   {', '.join(models.MODELS)}\n\n"
        f"config keys (values of the default config; each is commented in "
        f"experiments/configs/common.py):\n{keys}"
    )


def parse_args(argv: list[str]) -> tuple[ml_collections.ConfigDict, pathlib.Path]:
    """``(config, workdir)`` from ``--config PATH``, ``--workdir DIR``, ``--config.KEY=VALUE``.

    Parsed by absl's ``config_flags`` (:func:`experiments.configuration.parse_command_line`);
    ``-h`` / ``--help`` prints the methods, data sets, models and config keys, and exits.
    """
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        print(_help_text())
        sys.exit(0)
    try:
        config, workdir, name = configuration.parse_command_line(argv)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    if workdir is None:
        workdir = pathlib.Path("workdirs") / f"{name}_{config.method}_seed{config.seed}"
    return config, workdir


def main(argv: list[str]) -> int:
    """Runs the command line; returns the exit status (2: a user error, one line)."""
    try:
        config, workdir = parse_args(argv)
        results = train_and_evaluate(config, workdir)
    except (UserError, FileNotFoundError, input_pipeline.DatasetNotPreparedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        return interrupted.exit_code
    if jax.process_index() == 0:
        print(f"\nResults of {config.method} on {config.dataset} in {workdir}:")
        names = (*metrics.SINGLE_LABEL_METRICS, "validation_accuracy", *metrics.MULTILABEL_METRICS)
        for name in names:
            if name in results:
                value = results[name]
                print(f"  {name:22s} {'-' if value is None else f'{100 * value:.2f}%'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
