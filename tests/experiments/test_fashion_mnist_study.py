"""Fashion-MNIST-LT configs and the study's plan: which runs, which settings, no test-set use."""

import json
import pathlib

import numpy as np
import pytest

from experiments import configuration, methods
from experiments import fashion_mnist_study as study
from experiments.data import in_memory

COUNTS_R100 = [5500, 3297, 1976, 1184, 710, 425, 255, 153, 91, 55]


@pytest.mark.parametrize("ratio", [10, 50, 100])
def test_configs(ratio):
    config = configuration.load_config(study.CONFIG_DIR / f"fashion_mnist_lt_r{ratio}.py")
    assert config.data.name == "fashion_mnist_lt" and config.data.imbalance_ratio == ratio
    assert config.model.name == "small_cnn28" and config.data.augment
    # Evaluation batches divide the 5,000 validation and 10,000 test images.
    assert 5000 % config.run.eval_batch_size == 0 and 10_000 % config.run.eval_batch_size == 0
    assert config.ldam.drw_start_epoch < config.optim.num_epochs


def test_every_method_and_grid_setting_builds():
    config = configuration.load_config(study.CONFIG_DIR / "fashion_mnist_lt_r100.py")
    counts = np.array(COUNTS_R100)
    for method in study.METHODS:
        settings = study.GRIDS.get(method, ()) + ((study.Setting("default", 0, ()),))
        for setting in settings:
            overrides = dict(o.removeprefix("--config.").split("=", 1) for o in setting.overrides)
            built = configuration.apply_overrides(config, {"method.name": method, **overrides})
            m = methods.make_method(built, counts, steps_per_epoch=106, feature_dim=64)
            assert m.transform.init() is not None, (method, setting.label)


def test_grids_span_the_bound_scales_the_issue_asks_for():
    scales = [s.x for s in study.GRIDS["lpl_fixed"]]
    assert min(scales) <= 0.1 and max(scales) >= 10
    # lpl_varied: eps = s, d_eps = 2 s, alpha = s / 10.
    setting = study.GRIDS["lpl_varied"][2]
    assert setting.overrides == (
        "--config.lpl.epsilon=1",
        "--config.lpl.delta_epsilon=2",
        "--config.lpl.step_size=0.1",
    )


def _fake_result(run, accuracy):
    run.workdir.mkdir(parents=True, exist_ok=True)
    (run.workdir / "results.json").write_text(json.dumps({"validation_accuracy": accuracy}))


def test_choice_is_made_on_validation_and_test_seeds_are_fresh(tmp_path):
    root = pathlib.Path(tmp_path)
    tried = []
    for i, setting in enumerate(study.GRIDS["lpl_fixed"]):
        run = study._validation_run(root, 100, "lpl_fixed", setting, None)
        _fake_result(run, [0.5, 0.8, 0.6, 0.7, 0.1][i])
        tried.append((setting, run))
    choice = study.Choice("lpl_fixed", 100, tried)
    assert choice.best[0].label == "eps0.3"
    runs = study.test_runs(root, [100], [1, 2], {("lpl_fixed", 100): choice})
    fixed = [r for r in runs if r.method == "lpl_fixed"]
    assert [r.seed for r in fixed] == [1, 2]
    assert all(r.settings == choice.best[1].settings for r in fixed)
    assert all("validation" not in str(r.workdir) for r in runs)
    assert len(runs) == 2 * len(study.METHODS)
    with pytest.raises(ValueError, match="seed 0 chose the settings"):
        study.test_runs(root, [100], [0, 1], {})
    # LA-chained variants are tuned with LA's chosen tau, in their own directories.
    la = study.Setting("tau1.5", 1.5, ("--config.la.tau=1.5",))
    run = study._validation_run(root, 100, "la_lpl", study.GRIDS["la_lpl"][0], la)
    assert run.settings[0] == "--config.la.tau=1.5" and "tau1.5_eps0.03" in str(run.workdir)


def test_validation_report(tmp_path):
    root = pathlib.Path(tmp_path)
    choices = {}
    for ratio in (100, 10):
        for method in ("la", "lpl_varied"):
            tried = []
            for i, setting in enumerate(study.GRIDS[method]):
                run = study._validation_run(root, ratio, method, setting, None)
                _fake_result(run, 0.5 + 0.01 * i)
                tried.append((setting, run))
            choices[method, ratio] = study.Choice(method, ratio, tried)
    study.write_validation_report(root, choices)
    text = (root / "validation.md").read_text()
    flags = "`lpl.epsilon=3 lpl.delta_epsilon=6 lpl.step_size=0.3`"
    assert f"| 100 | lpl_varied | eps3 | {flags} | **53.00** |" in text
    assert (root / "validation_accuracy_vs_bound.png").read_bytes().startswith(b"\x89PNG")
    assert in_memory.FASHION_MNIST_VALIDATION_PER_CLASS == 500


def test_report_stage_needs_a_complete_validation_round(tmp_path, capsys):
    assert study.main(["--root", str(tmp_path), "--stage", "report"]) == 1
    assert "validation runs are missing" in capsys.readouterr().err
