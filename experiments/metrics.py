"""Evaluation metrics: accuracy by shot group, mAP by frequency group, their names.

The one home for what a run reports: the trainer computes these on the test (and
validation) split, and ``studies.summarize_runs`` averages them over seeds.
"""

from __future__ import annotations

import numpy as np

SINGLE_LABEL_METRICS = (
    "accuracy",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)
MULTILABEL_METRICS = ("mAP", "head_mAP", "medium_mAP", "tail_mAP")

# Shot groups of the long-tail literature (Liu et al. 2019; LA paper), by training count.
MANY_SHOT_MIN = 101  # many-shot: more than 100 training images
FEW_SHOT_MAX = 19  # few-shot: fewer than 20; medium-shot: 20 to 100


# Why a group's metric is None (printed as "-"): the group holds no class.
EMPTY_GROUP = {
    "many_shot_accuracy": f"no class has more than {MANY_SHOT_MIN - 1} training images",
    "medium_shot_accuracy": f"no class has {FEW_SHOT_MAX + 1}-{MANY_SHOT_MIN - 1} training images",
    "few_shot_accuracy": f"no class has fewer than {FEW_SHOT_MAX + 1} training images",
}


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


def nan_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite entries; NaN where a column has none."""
    values = np.asarray(values, np.float64)
    defined = np.isfinite(values)
    total = np.where(defined, values, 0).sum(0)
    return np.where(defined.any(0), total / np.maximum(defined.sum(0), 1), np.nan)


def summarize_window(window: list[dict]) -> dict:
    """``{"train_<name>": mean}`` of a logging window of step metrics.

    Scalars are plain means, so one non-finite step shows in its window; per-class
    vectors are averaged where defined (:func:`nan_mean`: NaN marks a class absent from a
    step's batch).
    """
    summary = {}
    for name in window[0]:
        values = np.stack([np.asarray(m[name], np.float64) for m in window])
        if values.ndim == 1:  # a non-finite step makes the window non-finite
            summary[f"train_{name}"] = float(np.mean(values))
        else:
            summary[f"train_{name}"] = nan_mean(values)
    return summary
