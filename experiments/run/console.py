"""What the trainer prints, and where everything else goes.

The trainer's own messages are single lines on stderr: ``note:``, ``warning:`` and
``error:`` (an error may carry one indented hint line). The command line runs inside
:func:`capture`, which sends everything else that would reach stderr -- third-party
logging (orbax, absl, asyncio), warnings, "Exception ignored" and thread tracebacks, the
tracebacks of unexpected errors -- to a log file in the work directory,
``WORKDIR/details.log`` (``details.process_<i>.log`` on the other processes of a multi-host
run), each run appending below a header line. Until the work directory is locked (a
run refused before that writes nothing) these go to memory, and are copied to the log
when it opens.

The progress bar and the final results stay on stdout. Without :func:`capture` (the
Python API, the tests) messages go to ``sys.stderr`` and nothing is redirected. The
command itself (:func:`keep_capturing_until_exit`) also redirects the process's file
descriptor 2, where C++ libraries log (TensorFlow, XLA, TensorStore), and grain's worker
processes; a fatal crash's traceback (``faulthandler``) still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import pathlib
import sys
import tempfile
import threading
import time

LOG_NAME = "details.log"  # not train.log: the sweep sends the whole console there


class _Sink(io.TextIOBase):
    """A text stream that writes to memory, then to the log file; it never raises
    (a full disk must not turn a log line into a second failure)."""

    def __init__(self, early_fd2=None):
        self._lock = threading.Lock()
        self._memory = io.StringIO()
        self._file = None
        self._early_fd2 = early_fd2  # a temporary file on fd 2 until the log opens
        self.path: pathlib.Path | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            try:
                (self._file or self._memory).write(text)
                if self._file is not None and text.endswith("\n"):
                    self._file.flush()
            except (OSError, ValueError):  # a full disk, or a closed file at exit
                pass
        return len(text)

    def flush(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError, ValueError):
                if self._file is not None:
                    self._file.flush()

    def open(self, path: pathlib.Path, header: str) -> None:
        with self._lock:
            if self._file is not None:
                return
            try:
                self._file = open(path, "a", encoding="utf-8", errors="replace")
                early = b""
                if self._early_fd2 is not None:
                    self._early_fd2.seek(0)
                    early = self._early_fd2.read()
                text = early.decode("utf-8", "replace") + self._memory.getvalue()
                self._file.write(header + text)
                self._file.flush()
                if self._early_fd2 is not None:  # C++ libraries' logging: to the log too
                    os.dup2(self._file.fileno(), 2)
                    self._early_fd2.close()
                    self._early_fd2 = None
            except OSError:
                self._file = None
                return
            self.path = path
            self._memory = io.StringIO()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._file.close()
            self._file = None


class _Capture:
    def __init__(self, user_stream, early_fd2=None):
        self.user = user_stream  # where the trainer's own lines go: the real stderr
        self.sink = _Sink(early_fd2)
        self.saved = None

    def install(self) -> None:
        root = logging.getLogger()
        handler = logging.StreamHandler(self.sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.saved = (sys.stderr, root.handlers[:], root.level, logging.lastResort)
        root.handlers[:] = [handler]
        root.setLevel(logging.WARNING)
        logging.lastResort = handler
        # TensorFlow's C++ logging (when a tfds data set imports it) writes to the
        # process's stderr directly; only its warnings and errors are kept.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.stderr = self.sink

    def uninstall(self) -> None:
        stderr, handlers, level, last_resort = self.saved
        root = logging.getLogger()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.lastResort = last_resort
        sys.stderr = stderr
        self.sink.close()


_active: _Capture | None = None


@contextlib.contextmanager
def capture():
    """Sends third-party output to the work directory's log for the duration (nested: no-op).

    Used by the command line (:func:`experiments.train.main`). The log opens with
    :func:`open_log` once the work directory is locked.
    """
    global _active
    if _active is not None:
        yield
        return
    _active = _Capture(sys.stderr)
    _active.install()
    try:
        yield
    finally:
        _active.uninstall()
        _active = None


def keep_capturing_until_exit() -> None:
    """Installs :func:`capture` for the rest of the process, file descriptor 2 included:
    late third-party output (futures completing during interpreter shutdown) and C++
    logging still go to the log; the trainer's own lines go to the original stderr."""
    global _active
    if _active is not None:
        return
    try:
        sys.stderr.flush()
        user = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        early = tempfile.TemporaryFile()
        os.dup2(early.fileno(), 2)
    except (OSError, ValueError):  # no usable fd 2: capture Python's output only
        user, early = sys.stderr, None
    else:
        faulthandler.enable(file=user)
    _active = _Capture(user, early)
    _active.install()


def open_log(workdir: pathlib.Path, process_index: int = 0) -> pathlib.Path | None:
    """Opens ``WORKDIR/details.log`` (appending) if output is being captured; returns its path."""
    if _active is None:
        return None
    name = LOG_NAME if process_index == 0 else f"details.process_{process_index}.log"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    header = f"==== {stamp} {' '.join(['experiments.train', *sys.argv[1:]])}\n"
    _active.sink.open(pathlib.Path(workdir) / name, header)
    return _active.sink.path


def log_path() -> pathlib.Path | None:
    """The open log file, if any."""
    return None if _active is None else _active.sink.path


def log(text: str) -> None:
    """Writes ``text`` to the log only (nothing if output is not being captured)."""
    if _active is not None:
        _active.sink.write(text if text.endswith("\n") else text + "\n")


def _say(prefix: str, message: str) -> None:
    """One line (``prefix: message``), and at most one indented hint line: the message's
    further lines, joined."""
    first, _, rest = str(message).strip().partition("\n")
    lines = [f"{prefix}: {first.strip()}"]
    hint = " ".join(line.strip() for line in rest.splitlines() if line.strip())
    if hint:
        lines.append(f"  {hint}")
    say("\n".join(lines))


def say(text: str) -> None:
    """``text`` as it is, on stderr (and in the log)."""
    stream = sys.stderr if _active is None else _active.user
    print(text, file=stream, flush=True)
    log(text)


def note(message: str) -> None:
    _say("note", message)


def warning(message: str) -> None:
    _say("warning", message)


def error(message: str) -> None:
    _say("error", message)
