"""The metric log of a run: JSON lines (``metrics.jsonl``) and TensorBoard events."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np


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
        if self._path.exists():
            kept = [r for r in self.records() if r["step"] <= resume_step]
            tmp = self._path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self._path)
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)

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
        if not self._path.exists():
            return []
        records = []
        for line in self._path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue
        return records

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def jsonable_tree(value):
    """Metrics (a dict of arrays, or one array) as JSON values; non-finite entries -> None."""
    if isinstance(value, Mapping):
        return {k: jsonable_tree(v) for k, v in value.items()}
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array) if np.isfinite(array) else None
    return [None if not np.isfinite(x) else float(x) for x in array.ravel()]
