"""The ways a run ends other than done: each is one line for the user."""

from __future__ import annotations

import pathlib
import signal


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


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``error``'s message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
