"""``python -m studies.sweep``: grid planning, resumable execution, final report."""

import contextlib
import io
import pathlib

import pytest

from studies import sweep

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT = REPO / "experiments" / "configs" / "default.py"


def test_plan_expands_configs_methods_and_seeds(tmp_path):
    runs = sweep.plan([f"{DEFAULT}:ce,la"], [0, 1], tmp_path)
    assert [(r.method, r.seed) for r in runs] == [("ce", 0), ("ce", 1), ("la", 0), ("la", 1)]
    assert runs[3].workdir == tmp_path / "default" / "la" / "seed1"
    assert runs[0].command(["--config.optim.num_epochs=1"])[-3:] == [
        "--config.method.name=ce",
        "--config.seed=0",
        "--config.optim.num_epochs=1",
    ]
    with pytest.raises(ValueError, match="CONFIG.py:METHOD"):
        sweep.plan(["ce,la"], [0], tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        sweep.plan(["missing.py:ce"], [0], tmp_path)


@pytest.mark.slow
def test_sweep_runs_resumes_and_reports(tmp_path):
    args = [
        "--grid",
        f"{DEFAULT}:ce",
        "--seeds",
        "0,1",
        "--root",
        str(tmp_path / "runs"),
        "--processes",
        "2",
        "--config.optim.num_epochs=1",
        "--config.run.eval_every_epochs=1",
    ]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert sweep.main(args) == 0
    assert "2 runs, 0 already finished." in output.getvalue()
    for seed in (0, 1):
        assert (tmp_path / "runs" / "default" / "ce" / f"seed{seed}" / "results.json").exists()
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "| digits_lt | 15 | small_cnn | ce | 2 |" in report
    assert (
        tmp_path / "runs" / "report" / "per_class_accuracy_digits_lt_r15_small_cnn.png"
    ).exists()

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert sweep.main(args) == 0
    assert "2 runs, 2 already finished." in output.getvalue()
