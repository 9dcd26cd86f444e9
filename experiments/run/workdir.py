"""A run's work directory: its config record, lock, stop signals and checkpoints.

Everything that makes a run safe to stop and resume: a work directory made with
another config is refused; one process trains in it at a time (``flock``); SIGTERM /
SIGINT stop after a checkpoint; checkpoints are orbax's (atomic), carry the run's
history and config with the train state, and a broken one is moved aside, never deleted.

**Checkpoint contents.** Each checkpoint is a composite of four items: ``state`` (the
train state's arrays), ``history`` (what ``results.json`` needs), ``config`` (the run's
resolved config, as JSON) and ``digest``: a SHA-256 of every array of the state (its
dtype, shape and bytes, by tree path) and of the canonical JSON of ``history`` and
``config``, computed from the values in memory when the checkpoint is written. A restore
recomputes them from what was read back; any difference (a flipped byte in a data file,
a metadata file that still parses) makes the checkpoint broken, like one that does not
restore at all: it is moved to ``WORKDIR/broken_checkpoints`` and the previous one is
used. The config item is checked against the run's config before the state is read, by
the same rule as ``config.json`` (:func:`config_differences`), so a deleted or damaged
``config.json`` never lets another config continue a run; ``config.json`` is rewritten
from the checkpoint's copy when it is missing.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import pathlib
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from experiments.run import console
from experiments.run.errors import (  # noqa: F401 - the work directory's errors, here too
    TrainingInterrupted,
    UserError,
    WorkdirConfigMismatchError,
    WorkdirLockedError,
    one_line,
)
from experiments.run.lock import lock, refuse_if_locked  # noqa: F401
from experiments.run.records import (
    DATA_KEY,
    RESUME_TOLERANT_KEYS,
    canonical_items,
    config_of_record,
    data_differences,
    flat_items,
    to_json,
)


class CheckpointCorruptError(RuntimeError):
    """A checkpoint restored, but its contents do not match its digest."""


class WorkdirDataMismatchError(UserError):
    """The work directory holds a run trained on other data."""


def _listed(items: list[str], most: int = 3) -> str:
    """The first ``most`` of ``items``, and how many more there are."""
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def config_differences(previous: dict, current: dict) -> tuple[list[str], list[str]]:
    """``(differences, tolerated)`` between two flat configs, as ``key: old -> new`` texts;
    ``tolerated`` are those of :data:`RESUME_TOLERANT_KEYS` (they never
    change results, so a run may resume with other values)."""
    differences, tolerated = [], []
    for key in sorted(set(previous) | set(current)):
        if previous.get(key) != current.get(key):
            text = f"{key}: {previous.get(key)!r} -> {current.get(key)!r}"
            tolerant = key in RESUME_TOLERANT_KEYS
            (tolerated if tolerant else differences).append(text)
    return differences, tolerated


def _refuse_other_config(workdir, previous: dict, current: dict, where: str) -> list[str]:
    """Raises if ``previous`` (the run's record) and ``current`` differ; returns the
    tolerated differences."""
    differences, tolerated = config_differences(previous, current)
    if differences:
        raise WorkdirConfigMismatchError(
            f"{str(workdir)!r} holds a run made with another config ({_listed(differences, 2)}; "
            f"{where}); use another --workdir, or delete it to start over."
        )
    return tolerated


def _refuse_other_data(workdir, previous, current, where: str) -> None:
    """Raises if the data fingerprints ``previous`` (the run's record) and ``current``
    differ (:func:`experiments.run.records.data_differences`)."""
    differences = data_differences(previous, current)
    if differences:
        raise WorkdirDataMismatchError(
            f"{str(workdir)!r} was trained on other data ({_listed(differences, 2)}; {where}); "
            "give it that data again, or use another --workdir."
        )


def has_checkpoints(workdir: pathlib.Path) -> bool:
    return bool(complete_checkpoints(workdir))


def _record(config, data: dict | None) -> dict:
    """``config.json``'s record: the config's canonical JSON and the data fingerprint."""
    record = json.loads(to_json(config))
    if data is not None:
        record[DATA_KEY] = data
    return record


def check_files(workdir: pathlib.Path) -> None:
    """Refuses a work directory whose ``checkpoints`` or ``config.json`` is of the wrong
    kind (a file, a directory) or unreadable: one line, before anything is written."""
    for name, kind in (("checkpoints", "a directory"), ("config.json", "a file")):
        path = workdir / name
        if not (path.exists() or path.is_symlink()):
            continue
        right = path.is_dir() if kind == "a directory" else path.is_file()
        if not right:
            raise UserError(
                f"{str(path)!r} is not {kind}; move it away (or delete it) and run again."
            )
        readable = os.R_OK | (os.X_OK if kind == "a directory" else 0)
        if not os.access(path, readable):
            raise UserError(f"{str(path)!r} cannot be read (permissions); fix them and run again.")


def _write_config_record(workdir: pathlib.Path, record: dict) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "config.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, sort_keys=True, indent=2))
        os.replace(tmp, path)


def check_config(
    workdir: pathlib.Path, config: ml_collections.ConfigDict, data: dict | None = None
) -> str:
    """Refuses a work directory made with another config or trained on other data;
    records the config and the data's fingerprint otherwise.

    ``config.json`` is the record; keys that never change results
    (:data:`RESUME_TOLERANT_KEYS`) may differ (a ``note:`` names them), the data
    fingerprint ``data`` (:mod:`experiments.data.fingerprint`) may not. A damaged
    ``config.json`` is moved aside (``config.json.damaged.<time>``); without a readable
    one, a work directory with checkpoints is judged by the checkpoints' own copy of the
    config (:func:`restore`, which rewrites ``config.json``).

    Returns:
      What ``config.json`` was: ``"kept"`` (read and matching), ``"written"`` (a new
      run), ``"missing"`` or ``"damaged"`` (to be rewritten from a checkpoint).
    """
    path = workdir / "config.json"
    current = canonical_items(config)
    previous = None
    status = "missing"
    if path.exists():
        try:
            record = json.loads(path.read_bytes())
            if not isinstance(record, dict) or not config_of_record(record):
                raise ValueError("not a config")
            previous = flat_items(config_of_record(record))
        except (ValueError, UnicodeDecodeError) as error:
            status = "damaged"
            aside = workdir / f"config.json.damaged.{time.time_ns()}"
            if jax.process_index() == 0:
                os.replace(path, aside)
            judge = "the checkpoints' copy" if has_checkpoints(workdir) else "none (no checkpoint)"
            console.warning(
                f"{path} is damaged ({type(error).__name__}: {one_line(error, 60)}); moved to "
                f"{aside.name}; the config is checked against {judge}."
            )
    if previous is not None:
        _refuse_other_data(workdir, record.get(DATA_KEY), data, "config.json")
        tolerated = _refuse_other_config(workdir, previous, current, "config.json")
        if tolerated:
            console.note(
                f"resuming with other values of keys that do not change results: "
                f"{_listed(tolerated)} (config.json keeps the run's first values)."
            )
        return "kept"
    if not has_checkpoints(workdir):
        _write_config_record(workdir, _record(config, data))
        return "written"
    return status


def disk_full(error: BaseException) -> str | None:
    """The system's words if ``error`` (or its cause) is a full disk or quota, else None.

    Python raises ``OSError(ENOSPC)``; orbax's TensorStore writes raise ``ValueError``
    ("RESOURCE_EXHAUSTED ... No space left on device").
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return os.strerror(error.errno)
        for marker in (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT)):
            if marker in str(error):
                return marker
        error = error.__cause__ or error.__context__
    return None


def complete_checkpoints(workdir: pathlib.Path) -> list[int]:
    """The steps of the checkpoints orbax finished writing (never a ``*-tmp`` directory)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def check_path(workdir: pathlib.Path) -> None:
    """Refuses a work directory path that is a file, or under one."""
    for path in (workdir, *workdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is a file.")
            if not os.access(path, os.W_OK):
                raise UserError(f"the work directory {str(workdir)!r}: {str(path)!r} is read-only.")
            return


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
            max_to_keep=config.run.keep_checkpoints,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,  # a save cut short (a full disk, a kill)
        ),
    )


DIGEST_FORMAT = 1


def _host_array(leaf) -> np.ndarray:
    """A state leaf as one host array: the whole array (the state is replicated)."""
    if isinstance(leaf, jax.Array):
        if not leaf.is_fully_addressable:
            if leaf.is_fully_replicated:
                leaf = leaf.addressable_data(0)
            else:
                leaf = multihost_utils.process_allgather(leaf, tiled=True)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(jax.device_get(leaf))


def state_digest(state) -> dict[str, str]:
    """``{tree path: sha256 of dtype, shape and bytes}`` of every array of ``state``."""
    digests = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        array = _host_array(leaf)
        sha = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
        sha.update(array.reshape(-1).view(np.uint8).data if array.size else b"")
        digests[jax.tree_util.keystr(path)] = sha.hexdigest()
    return digests


def _json_digest(item) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


def save(
    manager,
    step: int,
    state,
    history: dict,
    config: ml_collections.ConfigDict,
    data: dict | None = None,
) -> None:
    """Saves the train state, the run's history (what results.json needs), config and
    data fingerprint (``data``, if given), with their digest, atomically."""
    if step in manager.all_steps():
        return
    history = json.loads(json.dumps(history))  # as it reads back
    record = json.loads(to_json(config))
    digest = {
        "format": DIGEST_FORMAT,
        "state": state_digest(state),
        "history": _json_digest(history),
        "config": _json_digest(record),
    }
    items = dict(
        state=ocp.args.StandardSave(state),
        history=ocp.args.JsonSave(history),
        config=ocp.args.JsonSave(record),
    )
    if data is not None:
        data = json.loads(json.dumps(data))
        digest["data"] = _json_digest(data)
        items["data"] = ocp.args.JsonSave(data)
    manager.save(step, args=ocp.args.Composite(**items, digest=ocp.args.JsonSave(digest)))


def _verify(digest, name: str, actual) -> None:
    if not isinstance(digest, dict) or digest.get("format") != DIGEST_FORMAT:
        raise CheckpointCorruptError("its digest record is unreadable")
    expected = digest.get(name)
    if name == "state":
        if not isinstance(expected, dict) or set(expected) != set(actual):
            raise CheckpointCorruptError("its digest does not list the state's arrays")
        wrong = [path for path in actual if actual[path] != expected[path]]
        if wrong:
            raise CheckpointCorruptError(
                f"{len(wrong)} array(s) differ from the digest written with them, e.g. "
                f"state{wrong[0]}"
            )
    elif actual != expected:
        raise CheckpointCorruptError(f"its {name} record differs from the digest written with it")


def restore(manager, state, workdir: pathlib.Path, config, data=None, *, config_json="kept"):
    """``(manager, state, history)`` from the newest checkpoint that restores and verifies.

    A checkpoint that cannot be restored (torn, corrupt, unreadable, or written by an
    incompatible version) or whose contents differ from its digest is reported and moved
    to ``WORKDIR/broken_checkpoints`` (never deleted; one that cannot be moved is left in
    place and skipped), and the previous one is tried, so at most one checkpoint interval
    is lost; if none restores, a one-line error. A checkpoint whose config differs from
    ``config`` (beyond the resume-tolerant keys), or whose data fingerprint differs from
    ``data``, is refused (a :class:`UserError`), before its state is read. Checkpoints
    written before checkpoints carried a digest are restored unverified, judged by
    ``config.json``. ``config_json`` is what :func:`check_config` found (``"missing"``
    or ``"damaged"``: it is rewritten from the checkpoint's copy).
    """
    broken = workdir / "broken_checkpoints"
    current = canonical_items(config)
    skipped = set()
    while True:
        steps = [s for s in sorted(manager.all_steps(), reverse=True) if s not in skipped]
        if not steps:
            break
        step = steps[0]
        saved_data = None
        try:
            directory = workdir / "checkpoints" / str(step)
            recorded = (directory / "digest").is_dir()
            digest = None
            if recorded:
                items = dict(config=ocp.args.JsonRestore(), digest=ocp.args.JsonRestore())
                if (directory / "data").is_dir():
                    items["data"] = ocp.args.JsonRestore()
                saved = manager.restore(step, args=ocp.args.Composite(**items))
                digest, record = saved.digest, saved.config
                _verify(digest, "config", _json_digest(record))
                if "data" in items:
                    saved_data = saved.data
                    _verify(digest, "data", _json_digest(saved_data))
                _check_checkpoint_config(workdir, record, current, step)
                where = f"checkpoint {step}'s record of its data"
                _refuse_other_data(workdir, saved_data, data, where)
            elif not (workdir / "config.json").exists():
                raise UserError(
                    f"{str(workdir)!r} has checkpoints without a copy of their config, and "
                    "no config.json: which config made them cannot be checked. Restore "
                    "config.json, use another --workdir, or delete this one to start over."
                )
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(state), history=ocp.args.JsonRestore()
                ),
            )
            if recorded:
                _verify(digest, "state", state_digest(restored.state))
                _verify(digest, "history", _json_digest(restored.history))
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure: fall back to an older one
            gc.collect()  # orbax's orphaned futures report now, into the log, not later
            what = f"{type(error).__name__}: {one_line(error, 80)}"
            if jax.process_index() == 0:
                with contextlib.suppress(OSError):  # e.g. no permission: left in place
                    broken.mkdir(exist_ok=True)
                    os.rename(directory, broken / f"{step}.{time.time_ns()}")
            multihost_utils.sync_global_devices(f"moved broken checkpoint {step}")
            moved = not (directory.exists() or directory.is_symlink())
            if not moved:
                skipped.add(step)
            where = f"moved to {broken.name}/" if moved else "left in place (it cannot be moved)"
            console.warning(
                f"checkpoint {step} in {workdir} cannot be restored ({what}); {where}, trying "
                "an older one."
            )
            manager.close()
            manager = checkpoint_manager(workdir, config)
            continue
        if not recorded:
            console.note(f"checkpoint {step} predates checkpoint digests: restored unverified.")
        elif not (workdir / "config.json").exists():
            recorded_data = {DATA_KEY: saved_data} if saved_data is not None else {}
            _write_config_record(workdir, {**record, **recorded_data})
            was = "damaged" if config_json == "damaged" else "missing"
            console.note(f"config.json was {was}; rewritten from checkpoint {step}'s copy.")
        return manager, restored.state, dict(restored.history)
    if broken.exists() or skipped:
        raise UserError(
            f"no checkpoint in {str(workdir / 'checkpoints')!r} can be restored (see "
            f"{str(broken)!r}); use another --workdir, or delete this one to start over."
        )
    if not (workdir / "config.json").exists():  # every checkpoint is gone: a fresh start
        _write_config_record(workdir, _record(config, data))
    return manager, state, {"windows": [], "final_train_loss": None, "pending": []}


def _check_checkpoint_config(workdir, record, current: dict, step: int) -> None:
    """Refuses a checkpoint written with another config (its own copy, verified)."""
    if not isinstance(record, dict):
        raise CheckpointCorruptError("its config record is not a config")
    where = f"checkpoint {step}'s copy of its config"
    _refuse_other_config(workdir, flat_items(record), current, where)
