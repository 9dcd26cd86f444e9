"""The metric log of a run: JSON lines (``metrics.jsonl``) and TensorBoard events."""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Mapping

import numpy as np

from experiments.run import console


class MetricWriter:
    """Writes metrics as JSON lines (``metrics.jsonl``) and TensorBoard events.

    On resume from a checkpoint at ``resume_step``, records after that step (and
    a last line torn by a kill) are dropped from ``metrics.jsonl``; they will be
    written again, so a resumed run's log equals an uninterrupted one's.
    """

    def __init__(self, workdir: pathlib.Path, *, resume_step: int, enabled: bool = True):
        self._path = workdir / "metrics.jsonl"
        self._enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        if self._path.exists() or self._path.is_symlink():
            self._keep_records_until(resume_step)
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)

    def _keep_records_until(self, resume_step: int) -> None:
        """Rewrites ``metrics.jsonl`` with its records up to ``resume_step``.

        Lines that are not metric records (a JSON object with an integer ``step``) are
        dropped, with one note; a ``metrics.jsonl`` that is not a readable file (a
        directory, no permission) is moved aside with one warning. Either way the run's
        results do not change: they come from the checkpointed state and history.
        """
        try:
            records, skipped = self._read()
        except OSError as error:
            aside = self._path.with_name(f"metrics.jsonl.damaged.{time.time_ns()}")
            os.replace(self._path, aside)
            console.warning(
                f"{self._path} cannot be read ({type(error).__name__}); moved to {aside.name}, "
                "its records are written again from this run's steps."
            )
            return
        if skipped:
            console.note(
                f"{self._path}: {skipped} line(s) that are not metric records skipped; the "
                "results come from the checkpoints, unchanged."
            )
        kept = [r for r in records if r["step"] <= resume_step]
        tmp = self._path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self._path)

    def _read(self) -> tuple[list[dict], int]:
        """The metric records of ``metrics.jsonl`` and how many other lines it holds
        (a last line torn by a kill mid-write, the start of a record, is not counted)."""
        lines = self._path.read_bytes().decode("utf-8", "replace").splitlines()
        records, skipped = [], 0
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and _is_step(record.get("step")):
                records.append(record)
            elif line.strip() and not (i == len(lines) - 1 and line.startswith('{"step": ')):
                skipped += 1  # (a last line that starts as a record was torn by a kill)
        return records, skipped

    def write(self, step: int, metrics: Mapping[str, object]) -> None:
        if not self._enabled:
            return
        record = {"step": int(step), **{k: jsonable_tree(v) for k, v in metrics.items()}}
        with self._path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, float):
                self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def records(self) -> list[dict]:
        """The metric records of ``metrics.jsonl`` (other lines skipped)."""
        if not self._path.is_file():
            return []
        return self._read()[0]

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _is_step(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def jsonable_tree(value):
    """Metrics (a dict of arrays, or one array) as JSON values; non-finite entries -> None."""
    if isinstance(value, Mapping):
        return {k: jsonable_tree(v) for k, v in value.items()}
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array) if np.isfinite(array) else None
    return [None if not np.isfinite(x) else float(x) for x in array.ravel()]
