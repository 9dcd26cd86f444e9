"""experiments.metrics and experiments.run.metric_writer: shot groups, accuracy and mAP, the log."""

import json

import numpy as np
import pytest

from experiments import metrics
from experiments.run import metric_writer


def test_shot_groups_follow_the_thresholds():
    groups = metrics.shot_groups(np.array([500, 101, 100, 20, 19, 1]))
    assert groups["many"].tolist() == [True, True, False, False, False, False]
    assert groups["medium"].tolist() == [False, False, True, True, False, False]
    assert groups["few"].tolist() == [False, False, False, False, True, True]


def test_classification_results_by_hand():
    # Class 0 (many): 2 of 2 right; class 1 (medium): 1 of 2; class 2 (few): 0 of 1.
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 0, 1])
    logits = np.eye(3)[predictions]
    results = metrics.classification_results(logits, labels, np.array([200, 50, 5]))
    assert results["accuracy"] == pytest.approx(3 / 5)
    assert results["per_class_accuracy"] == pytest.approx([1.0, 0.5, 0.0])
    assert results["many_shot_accuracy"] == 1.0
    assert results["medium_shot_accuracy"] == 0.5
    assert results["few_shot_accuracy"] == 0.0


def test_multilabel_results_by_hand():
    labels = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]])
    # Class 0 ranked perfectly (AP 1); class 1 has its positives ranked 1st and 3rd
    # (AP = (1 + 2/3) / 2); class 2's positives are ranked 1st and 2nd (AP 1).
    scores = np.array([[0.9, 0.1, 0.8], [0.2, 0.9, 0.7], [0.8, 0.5, 0.1], [0.1, 0.3, 0.2]])
    results = metrics.multilabel_results(scores, labels, np.array([30, 20, 10]))
    expected = [1.0, (1 + 2 / 3) / 2, 1.0]
    assert results["per_class_ap"] == pytest.approx(expected)
    assert results["mAP"] == pytest.approx(np.mean(expected))
    assert results["head_mAP"] == 1.0 and results["tail_mAP"] == 1.0
    assert results["medium_mAP"] == pytest.approx(expected[1])


def test_metric_log_drops_records_after_the_checkpoint_and_torn_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 4, "train_loss": 1.0}\n{"step": 8, "train_loss": 0.5}\n'
        '{"step": 12, "train_loss": 0.4}\n{"step": 16, "train_l'
    )
    writer = metric_writer.MetricWriter(tmp_path, resume_step=8)
    writer.write(12, {"train_loss": 0.25, "train_relative_loss_variation": [0.1, np.nan]})
    writer.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert records[-1] == {
        "step": 12,
        "train_loss": 0.25,
        "train_relative_loss_variation": [0.1, None],
    }
