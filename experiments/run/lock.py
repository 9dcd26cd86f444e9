"""``WORKDIR/.lock``: one process trains in a work directory at a time.

An exclusive ``flock`` held for the run's lifetime (:func:`lock`); the kernel releases it
however the process ends. Standard library only, so that the command line refuses a
locked ``--workdir`` before importing JAX, flax and orbax (seconds, many more on a
machine busy with the run that holds the lock): :func:`refuse_a_locked_workdir`. Without
``--workdir`` (the default work directory depends on the config) the trainer's own check
(:func:`refuse_if_locked`) refuses it, after the imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import sys
import time

from experiments.run.errors import WorkdirLockedError

LOCK_FILE = ".lock"


def is_locked(workdir: str | os.PathLike) -> bool:
    """Whether another process holds ``WORKDIR/.lock`` (a probe: creates nothing)."""
    try:
        fd = os.open(pathlib.Path(workdir) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file (a new work directory), or unreadable: the lock decides
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def locked_message(workdir: str | os.PathLike) -> str:
    return f"the work directory {str(workdir)!r} is in use by another training process."


def _workdir_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--workdir="):
            return arg.partition("=")[2]
        if arg == "--workdir" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _several_processes(argv: list[str]) -> bool:
    """A multi-process run (only its first process locks): no early refusal."""
    flags = [a.lower() for a in argv if a.startswith("--config.run.distributed")]
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or any(
        a.endswith(("=true", "=1")) for a in flags
    )


def refuse_a_locked_workdir(argv: list[str]) -> None:
    """Exits with status 2 and one ``error:`` line if ``--workdir`` names a locked directory."""
    workdir = _workdir_argument(argv)
    if workdir and not _several_processes(argv) and is_locked(pathlib.Path(workdir).resolve()):
        print(f"error: {locked_message(pathlib.Path(workdir).resolve())}", file=sys.stderr)
        sys.exit(2)


def refuse_if_locked(workdir: pathlib.Path) -> None:
    """Refuses at once a work directory whose lock another process holds.

    A probe before the data and the model are loaded; writes nothing (the lock itself is
    taken later by :func:`lock`, which remains the authority).
    """
    if is_locked(workdir):
        raise WorkdirLockedError(locked_message(workdir))


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
    with open(workdir / LOCK_FILE, "a") as lock_file:
        for attempt in range(5):  # another process's probe holds it for microseconds
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 4:
                    raise WorkdirLockedError(locked_message(workdir)) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
