"""A run's work directory: its config record, lock, stop signals and checkpoints.

Everything that makes a run safe to stop and resume: a work directory made with
another config is refused; one process trains in it at a time (``flock``); SIGTERM /
SIGINT stop after a checkpoint; checkpoints are orbax's (atomic), carry the run's
history with the train state, and a broken one is moved aside, never deleted.
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
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from experiments import configuration


class UserError(ValueError):
    """A mistake in the command line, the config or the work directory: one line, exit 2."""


class WorkdirConfigMismatchError(UserError):
    """The work directory holds a run made with another config."""


class WorkdirLockedError(UserError):
    """Another process is training in the work directory."""


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


def check_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
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


def check_path(workdir: pathlib.Path) -> None:
    """Refuses a work directory path that is a file, or under one."""
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is a file.")
            if not os.access(path, os.W_OK):
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is read-only.")
            return


@contextlib.contextmanager
def lock(workdir: pathlib.Path, enabled: bool):
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


class StopSignals:
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


def checkpoint_manager(workdir: pathlib.Path, config) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.run.keep_checkpoints, enable_async_checkpointing=False
        ),
    )


def save(manager, step: int, state, history: dict) -> None:
    """Saves the train state and the run's history (what results.json needs) atomically."""
    if step in manager.all_steps():
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
        ),
    )


def restore(manager, state, workdir: pathlib.Path, config):
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
            manager = checkpoint_manager(workdir, config)
            continue
        return manager, restored.state, dict(restored.history)
    if broken.exists():
        raise UserError(
            f"no checkpoint in {str(workdir / 'checkpoints')!r} can be restored (they are in "
            f"{str(broken)!r}); use another --workdir, or delete this one to start over."
        )
    return manager, state, {"windows": [], "final_train_loss": None, "pending": []}
