"""The trainer's command before its heavy imports: a locked work directory is refused at once.

Importing JAX, flax and orbax takes seconds, many more on a machine busy with the run
that holds the lock; a second ``python -m experiments.train --workdir DIR`` (or
``lpjax-train``) on a work directory in use is refused before them, in a fraction of a
second. Standard library only. Without ``--workdir`` (the default work directory depends
on the config) the trainer's own check refuses it, after the imports.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import sys

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


def main() -> None:
    """The ``lpjax-train`` command: ``python -m experiments.train``, from any directory."""
    refuse_a_locked_workdir(sys.argv[1:])
    from experiments import train

    train.entry_point()
