"""What a run writes: metrics (JSON lines + TensorBoard), accuracy by shot group, plots."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

# Shot groups of the long-tail literature (Liu et al. 2019; LA paper), by training count.
MANY_SHOT_MIN = 101  # many-shot: more than 100 training images
FEW_SHOT_MAX = 19  # few-shot: fewer than 20; medium-shot: 20 to 100


def shot_groups(class_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean class masks ``many`` (> 100 images), ``medium`` (20-100), ``few`` (< 20)."""
    counts = np.asarray(class_counts)
    return {
        "many": counts >= MANY_SHOT_MIN,
        "medium": (counts > FEW_SHOT_MAX) & (counts < MANY_SHOT_MIN),
        "few": counts <= FEW_SHOT_MAX,
    }


def frequency_groups(class_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Classes ranked by count (most first) cut into thirds: ``head``, ``medium``, ``tail``.

    Used for multi-label data, whose positive counts do not follow the
    single-label shot thresholds.
    """
    counts = np.asarray(class_counts)
    rank = np.empty(len(counts), int)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    thirds = np.array_split(np.arange(len(counts)), 3)
    return {
        name: np.isin(rank, part)
        for name, part in zip(("head", "medium", "tail"), thirds, strict=True)
    }


def _group_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    return float(np.mean(values[mask])) if mask.any() else None


def classification_results(
    logits: np.ndarray, labels: np.ndarray, class_counts: np.ndarray
) -> dict:
    """Overall, per-class and shot-group accuracy (group = mean of its classes' accuracies)."""
    num_classes = logits.shape[-1]
    correct = np.argmax(logits, -1) == labels
    per_class = np.array(
        [correct[labels == c].mean() if np.any(labels == c) else np.nan for c in range(num_classes)]
    )
    groups = shot_groups(class_counts)
    return {
        "accuracy": float(correct.mean()),
        "many_shot_accuracy": _group_mean(per_class, groups["many"]),
        "medium_shot_accuracy": _group_mean(per_class, groups["medium"]),
        "few_shot_accuracy": _group_mean(per_class, groups["few"]),
        "per_class_accuracy": per_class.tolist(),
    }


def multilabel_results(logits: np.ndarray, labels: np.ndarray, positive_counts: np.ndarray) -> dict:
    """Mean average precision, per-class AP, and head / medium / tail mAP."""
    from sklearn.metrics import average_precision_score

    per_class = np.array(
        [
            average_precision_score(labels[:, c], logits[:, c]) if labels[:, c].any() else np.nan
            for c in range(labels.shape[1])
        ]
    )
    groups = frequency_groups(positive_counts)
    return {
        "mAP": float(np.nanmean(per_class)),
        "head_mAP": _group_mean(per_class, groups["head"]),
        "medium_mAP": _group_mean(per_class, groups["medium"]),
        "tail_mAP": _group_mean(per_class, groups["tail"]),
        "per_class_ap": per_class.tolist(),
    }


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
        record = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
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


def _jsonable(value):
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array)
    return [None if not np.isfinite(x) else float(x) for x in array.ravel()]


def jsonable_tree(value):
    """Metrics (a dict of arrays, or one array) as JSON values; non-finite entries -> None."""
    if isinstance(value, Mapping):
        return {k: jsonable_tree(v) for k, v in value.items()}
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array) if np.isfinite(array) else None
    return [None if not np.isfinite(x) else float(x) for x in array.ravel()]


def plot_per_class(
    series: Mapping[str, Sequence[float | None]],
    class_counts: np.ndarray,
    *,
    title: str,
    ylabel: str,
    path: pathlib.Path,
    signed: bool = False,
) -> None:
    """Bars over classes ordered by training count (most frequent left), one colour per series.

    With a single series and ``signed=True`` bars are red above zero and blue
    below (positive / negative augmentation in a loss-variation plot).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(class_counts)
    order = np.argsort(-counts, kind="stable")
    positions = np.arange(len(order))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.25 * len(order) * len(series))), 3.5))
    for i, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v for v in values], float)[order]
        heights = np.nan_to_num(heights)
        color = plt.cm.tab20(i % 20) if len(series) > 10 else None  # tab10 repeats past 10
        if signed and len(series) == 1:
            color = ["tab:red" if h > 0 else "tab:blue" for h in heights]
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(positions + offset, heights, width, label=label, color=color)
    if signed:
        ax.axhline(0.0, color="black", linewidth=0.8)
        magnitudes = np.abs([v for vs in series.values() for v in vs if v is not None])
        if magnitudes.size and magnitudes.max() > 10:  # e.g. LDAM's scaled logits
            ax.set_yscale("symlog", linthresh=1.0)
    if len(order) <= 30:
        ax.set_xticks(positions)
        ax.set_xticklabels([f"{c}\n({int(counts[c])})" for c in order], fontsize=7)
    ax.set_xlabel("class (training count), most frequent first")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    elif signed:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color="tab:red", label="loss raised (emphasised)"),
                Patch(color="tab:blue", label="loss lowered (de-emphasised)"),
            ],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend outside stays in
    plt.close(fig)
