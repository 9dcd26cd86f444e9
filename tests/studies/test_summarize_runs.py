"""studies.summarize_runs on synthetic results.json: grouping, mean ± std, tables, plots."""

import json

import numpy as np
import pytest

from studies import summarize_runs


def _single_label(method, seed, accuracy, *, ratio=100.0, variation=True, **extra):
    result = {
        "method": method,
        "dataset": "cifar10",
        "imbalance_ratio": ratio,
        "model": "resnet32",
        "seed": seed,
        "num_steps": 100,
        "accuracy": accuracy,
        "many_shot_accuracy": accuracy + 0.1,
        "medium_shot_accuracy": accuracy,
        "few_shot_accuracy": None,  # CIFAR-10-LT has no class under 20 images
        "per_class_accuracy": [accuracy] * 9 + [None if seed == 0 else 0.5],
        "final_train_loss": 0.3,
        "class_counts": [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    }
    if variation:
        result["relative_loss_variation"] = [0.1 * (c - 4) for c in range(10)]
    return {**result, **extra}


def _multilabel(seed, mAP):
    return {
        "method": "lpl_multilabel",
        "dataset": "multilabel_digits",
        "imbalance_ratio": 10,  # an int in the file still groups with 10.0
        "model": "small_cnn",
        "seed": seed,
        "mAP": mAP,
        "head_mAP": 0.95,
        "medium_mAP": mAP,
        "tail_mAP": mAP - 0.1,
        "per_class_ap": [mAP] * 10,
        "class_counts": [900, 700, 500, 400, 300, 250, 200, 150, 120, 90],
    }


def _write(path, result):
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(result))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, accuracy in zip((0, 1, 2), (0.78, 0.80, 0.79), strict=True):
        _write(root / "lt" / f"la_lpl_seed{seed}", _single_label("la_lpl", seed, accuracy))
    _write(root / "lt" / "ce_seed0", _single_label("ce", 0, 0.70, variation=False))
    _write(root / "ml" / "a" / "deep", _multilabel(0, 0.90))
    _write(root / "ml" / "b", _multilabel(1, 0.80))
    return root


def test_collect_results_searches_recursively_and_once(runs):
    # The parent, a run folder inside it and a results.json inside it: each run counted once.
    paths = [runs, runs / "lt" / "ce_seed0", runs / "ml" / "b" / "results.json"]
    results = summarize_runs.collect_results(paths)
    assert len(results) == 6
    assert all(r["path"].endswith("results.json") for r in results)


def test_collect_results_rejects_missing_paths_and_fields(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        summarize_runs.collect_results([tmp_path / "nothing"])
    _write(tmp_path / "bad", {"method": "ce", "dataset": "cifar10"})
    with pytest.raises(ValueError, match="imbalance_ratio, model"):
        summarize_runs.collect_results([tmp_path])


def test_summarize_groups_and_computes_sample_std(runs):
    rows = summarize_runs.summarize(summarize_runs.collect_results([runs]))
    keys = [(r.dataset, r.imbalance_ratio, r.model, r.method, r.num_seeds) for r in rows]
    assert keys == [
        ("cifar10", 100.0, "resnet32", "ce", 1),
        ("cifar10", 100.0, "resnet32", "la_lpl", 3),
        ("multilabel_digits", 10.0, "small_cnn", "lpl_multilabel", 2),
    ]
    ce, la_lpl, multilabel = rows
    # Hand values: accuracies 0.78, 0.80, 0.79 -> mean 0.79, sample std 0.01.
    mean, std = la_lpl.metrics["accuracy"]
    assert mean == pytest.approx(0.79) and std == pytest.approx(0.01)
    assert la_lpl.metrics["many_shot_accuracy"] == (pytest.approx(0.89), pytest.approx(0.01))
    assert la_lpl.metrics["few_shot_accuracy"] == (None, None)
    assert la_lpl.seeds == (0, 1, 2)
    assert ce.metrics["accuracy"] == (pytest.approx(0.70), None)  # one seed: no std
    # mAP 0.9, 0.8 -> mean 0.85, sample std sqrt(0.005) = 0.0707.
    assert multilabel.multilabel and not la_lpl.multilabel
    assert multilabel.metrics["mAP"][0] == pytest.approx(0.85)
    assert multilabel.metrics["mAP"][1] == pytest.approx(np.sqrt(0.005))
    # Per-class means skip missing values: class 9 is None for seed 0, 0.5 for seeds 1, 2.
    np.testing.assert_allclose(la_lpl.per_class, [0.79] * 9 + [0.5])
    assert ce.relative_loss_variation is None
    np.testing.assert_allclose(la_lpl.relative_loss_variation, 0.1 * (np.arange(10) - 4))
    # Class counts come from results.json.
    np.testing.assert_array_equal(
        la_lpl.class_counts, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    )
    assert multilabel.class_counts[0] == 900


def _cells(table, method):
    line = next(line for line in table.splitlines() if f"| {method} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_markdown_table_error_and_accuracy(runs):
    rows = summarize_runs.summarize(summarize_runs.collect_results([runs]))
    table = summarize_runs.markdown_table(rows, metric="error")
    assert "top-1 error %" in table and "head mAP" in table
    # Errors 22, 20, 21 -> 21.00 ± 1.00; many-shot errors 12, 10, 11 -> 11.00 ± 1.00.
    assert _cells(table, "la_lpl") == [
        "cifar10",
        "100",
        "resnet32",
        "la_lpl",
        "3",
        "21.00 ± 1.00",
        "11.00 ± 1.00",
        "21.00 ± 1.00",
        "-",
    ]
    assert _cells(table, "ce")[5] == "30.00 ± -"
    # Multi-label rows are in their own table and always show mAP (not 1 - mAP).
    assert _cells(table, "lpl_multilabel")[4:7] == ["2", "85.00 ± 7.07", "95.00 ± 0.00"]
    accuracy = summarize_runs.markdown_table(rows)  # the default speaks accuracy
    assert "accuracy %" in accuracy and _cells(accuracy, "la_lpl")[5] == "79.00 ± 1.00"
    with pytest.raises(ValueError, match="error"):
        summarize_runs.markdown_table(rows, metric="top5")


def test_write_report_and_cli(runs, tmp_path, capsys):
    output = tmp_path / "out"
    summarize_runs.main([str(runs), "--output", str(output), "--metric", "error"])
    printed = capsys.readouterr().out
    text = (output / "report.md").read_text()
    assert "21.00 ± 1.00" in printed and "21.00 ± 1.00" in text
    figures = sorted(p.name for p in output.glob("*.png"))
    assert figures == [
        "per_class_accuracy_cifar10_r100_resnet32.png",
        "per_class_ap_multilabel_digits_r10_small_cnn.png",
        "relative_loss_variation_cifar10_r100_resnet32_la_lpl.png",
    ]
    for name in figures:
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    with pytest.raises(SystemExit, match="No results.json"):
        summarize_runs.main([str(tmp_path / "out"), "--output", str(tmp_path / "out2")])


def test_report_is_written_beside_the_runs_by_default(runs, capsys):
    summarize_runs.main([str(runs)])
    assert "79.00 ± 1.00" in capsys.readouterr().out  # accuracy, as the trainer prints it
    assert (runs / "report" / "report.md").is_file()
    files = [runs / "ml" / "b" / "results.json", runs / "lt"]
    assert summarize_runs.default_output(files) == runs.resolve() / "report"
