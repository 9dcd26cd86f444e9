"""Fashion-MNIST-LT configs and the study's plan: which runs, which settings, choices made on
validation only, fresh test seeds."""

import json
import pathlib
import zlib

import numpy as np
import pytest

import lpjax
from experiments import methods
from experiments.config import command_line as configuration
from experiments.data import in_memory
from studies import fashion_mnist_study as study
from studies import sweep

COUNTS_R100 = [5500, 3297, 1976, 1184, 710, 425, 255, 153, 91, 55]


@pytest.mark.parametrize("ratio", [10, 50, 100])
def test_configs(ratio):
    config = configuration.load_config(study.CONFIG_DIR / f"fashion_mnist_lt_r{ratio}.py")
    assert config.data.name == "fashion_mnist_lt" and config.data.imbalance_ratio == ratio
    assert config.model.name == "small_cnn28" and config.data.augment
    # Evaluation batches divide the 5,000 validation and 10,000 test images.
    assert 5000 % config.run.eval_batch_size == 0 and 10_000 % config.run.eval_batch_size == 0
    assert config.ldam.drw_start_epoch < config.optim.num_epochs


def _built(method, setting, config=None):
    config = config or configuration.load_config(study.CONFIG_DIR / "fashion_mnist_lt_r100.py")
    overrides = dict(o.removeprefix("--config.").split("=", 1) for o in setting.overrides)
    return configuration.apply_overrides(config, {"method.name": method, **overrides})


def test_every_method_and_grid_setting_builds():
    counts = np.array(COUNTS_R100)
    grids = study.grids()
    for method in study.METHODS:
        settings = grids.get(method, ()) + (study.DEFAULT,)
        if method == "la_lpl":
            settings += study.refinements(method, grids[method][5].chained(grids["la"][1]))
        for setting in settings:
            config = _built(method, setting)
            m = methods.make_method(config, counts, steps_per_epoch=106, feature_dim=64)
            assert m.transform.init() is not None, (method, setting.label)


@pytest.mark.parametrize("rule", study.STEP_RULES)
def test_lpl_grid_gives_the_rarest_class_the_tail_budget_and_scales_the_head(rule):
    # Independent of the study's arithmetic: the bounds lpjax derives from the overrides.
    setting = study.lpl_budget(3.0, 0.3, rule)
    lpl = _built("lpl_varied", setting).lpl
    signs, bounds = lpjax.longtail_signs_and_bounds(
        COUNTS_R100,
        num_head_classes=lpl.num_head_classes,
        epsilon=lpl.epsilon,
        delta_epsilon=lpl.delta_epsilon,
        head_scale=lpl.head_scale,
    )
    assert bounds[-1] == pytest.approx(3.0, rel=1e-5)  # rarest class: the tail budget T
    assert bounds[0] == pytest.approx(0.3 * 3.0, rel=1e-5)  # largest head class: h T
    assert lpjax.num_inner_steps(bounds, lpl.step_size)[-1] == study.STEPS_PER_BUDGET
    assert lpl.normalize == (rule == "unit")
    grid = study.grids()["lpl_varied"]
    assert {s.coord("tail") for s in grid} == set(study.TAIL_BUDGETS)
    assert max(study.TAIL_BUDGETS) >= 10 and set(study.HEAD_SCALES) == {0, 0.1, 0.3, 1}
    assert len(grid) == len(study.TAIL_BUDGETS) * len(study.HEAD_SCALES) * 2


def _fake_execute(accuracy_of):
    """``sweep.execute`` that writes a results.json whose accuracy ``accuracy_of(run)`` says."""
    executed = []

    def execute(run, overrides):
        run.workdir.mkdir(parents=True, exist_ok=True)
        result = {"validation_accuracy": accuracy_of(run), "accuracy": 0.5, "method": run.method}
        (run.workdir / "results.json").write_text(json.dumps(result))
        executed.append(run)
        return run, 0, "log"

    return execute, executed


def _accuracy(run: sweep.Run) -> float:
    """tau1.5 wins LA's seed 0, tau1 the mean of three seeds; la_lpl peaks at T1_h0.3_paper."""
    label = run.workdir.parent.name
    if run.method == "la":
        table = {"tau0.5": 0.70, "tau1": 0.78, "tau1.5": 0.80, "tau2": 0.60}
        value = table[label] - (0.05 if label == "tau1.5" and run.seed else 0)
        return value
    if "T1_h0.3_paper" in label:
        return 0.85 + (0.01 if "heads6" in label else 0)
    return 0.5 + 0.001 * (zlib.crc32(label.encode()) % 100)


def test_choices_use_three_validation_seeds_and_tests_use_fresh_ones(tmp_path, monkeypatch):
    execute, executed = _fake_execute(_accuracy)
    monkeypatch.setattr(sweep, "execute", execute)
    s = study.Study(pathlib.Path(tmp_path), [100], ["ce", "la", "la_lpl"], processes=1)
    s.validate()
    la = s.chosen("la", 100)
    assert la.label == "tau1"  # best mean over seeds 0, 10, 11, not tau1.5 (best on seed 0)
    choice = s.choices["la", 100]
    assert choice.scores(la) == pytest.approx([0.78] * 3)
    la_lpl = s.choices["la_lpl", 100]
    labels = [setting.label for setting, _ in la_lpl.tried]
    assert all(label.startswith("tau1_") for label in labels)  # on top of LA's choice
    assert len(labels) == len(study.grids()["la_lpl"]) + 4  # grid + refinements
    assert s.chosen("la_lpl", 100).label == "tau1_T1_h0.3_paper_heads6"
    assert "--config.la.tau=1" in s.chosen("la_lpl", 100).overrides
    # Finalists: three per method, each with seeds 0, 10, 11; the rest with seed 0 only.
    for method in ("la", "la_lpl"):
        c = s.choices[method, 100]
        for setting, runs in c.tried:
            expected = set(study.VALIDATION_SEEDS) if setting in c.finalists else {0}
            assert set(runs) == expected
    assert all("validation" in str(run.workdir) for run in executed)
    # Test runs: every method at its choice, fresh seeds, in the test folders.
    runs = s.test_runs([1, 2])
    assert [r.seed for r in runs] == [1, 1, 1, 2, 2, 2]
    assert {r.method: r.workdir.parent.name for r in runs} == {
        "ce": "default",
        "la": "tau1",
        "la_lpl": "tau1_T1_h0.3_paper_heads6",
    }
    assert all("/test/" in str(r.workdir) for r in runs)
    with pytest.raises(ValueError, match="made the choices"):
        s.test_runs([0, 1])
    # Longer runs: LA, LDAM-DRW and the best LA + LPL variant, 4x the epochs.
    long = s.long_runs([1])
    assert [r.method for r in long] == ["la", "ldam_drw", "la_lpl"]
    assert all("--config.optim.num_epochs=60" in r.settings for r in long)
    assert all("--config.ldam.drw_start_epoch=48" in r.settings for r in long)
    # The reports.
    study.write_validation_report(s)
    text = (pathlib.Path(tmp_path) / "validation.md").read_text()
    assert "| 100 | la | tau1 | `la.tau=1` | **78.00** | **78.00** |" in text
    assert (pathlib.Path(tmp_path) / "validation_landscape.png").read_bytes()[:4] == b"\x89PNG"
    assert in_memory.FASHION_MNIST_VALIDATION_PER_CLASS == 500
    # Choosing on test instead: make one point that validation did not choose best on test.
    other = dict(s.choices["la_lpl", 100].tried)[study.lpl_budget(3.0, 1.0, "unit").chained(la)]
    result = json.loads((other[0].workdir / "results.json").read_text())
    (other[0].workdir / "results.json").write_text(json.dumps({**result, "accuracy": 0.6}))
    study.write_grid_selection(s, pathlib.Path(tmp_path) / "grid.md")
    text = (pathlib.Path(tmp_path) / "grid.md").read_text()
    assert (
        "| 100 | la_lpl | 36 | 50.00 | `tau1_T1_h0.3_paper_heads6` | 50.00 | +0.00 | "
        "`tau1_T3_h1_unit` | 60.00 | +10.00 | +10.00 |"
    ) in text


def test_comparison_pairs_each_method_with_la_on_the_same_seed(tmp_path, monkeypatch):
    execute, _ = _fake_execute(_accuracy)
    monkeypatch.setattr(sweep, "execute", execute)
    s = study.Study(pathlib.Path(tmp_path), [100], ["la", "ce"], processes=1)
    s.validate()
    runs = s.test_runs([1, 2, 3])
    accuracy = {("la", 1): 0.80, ("la", 2): 0.70, ("la", 3): 0.75}
    accuracy |= {("ce", 1): 0.71, ("ce", 2): 0.62, ("ce", 3): 0.64}  # -9, -8, -11 points
    for run in runs:
        run.workdir.mkdir(parents=True)
        result = {
            "accuracy": accuracy[run.method, run.seed],
            "per_class_accuracy": [0.9, 0.5, 0.4, 0.3],
            "class_counts": [10, 40, 5, 20],  # the three rarest: 5, 10, 20 -> 0.4, 0.9, 0.3
        }
        (run.workdir / "results.json").write_text(json.dumps(result))
    study.write_comparison(s, runs, pathlib.Path(tmp_path) / "comparison.md")
    text = (pathlib.Path(tmp_path) / "comparison.md").read_text()
    # Paired differences -9, -8, -11: mean -9.33, sd 1.528, standard error 0.88; the 95 %
    # interval is -9.33 ± t(0.975, 2) 0.88 = -9.33 ± 4.303 x 0.882.
    assert (
        "| 100 | ce | `default` | 3 | 65.67 ± 4.73 | -9.33 ± 0.88 | [-13.13, -5.54] | loss | 53.3 |"
        in text
    )
    assert "| 100 | la | `tau1` | 3 | 75.00 ± 5.00 | - |  |  | 53.3 |" in text
    assert "**1 comparisons** with LA" in text
    assert "0 exclude 0 above it, 1 below it." in text


def test_provenance_lists_the_runs_of_the_earlier_trainer(tmp_path):
    runs = tmp_path / "runs"
    flat = {"la_tau": 1.0, "method": "la", "batch_size": 128}  # the earlier flat keys
    nested = {"method": {"name": "la"}, "la": {"tau": 1.0}}
    for where, config in (
        ("test/r100/la/tau1/seed1", flat),
        ("test/r100/la/tau1/seed2", flat),
        ("test/r10/la/tau1/seed1", nested),
        ("validation/r100/ce/default/seed0", flat),
    ):
        (runs / where).mkdir(parents=True)
        (runs / where / "config.json").write_text(json.dumps(config))
        (runs / where / "results.json").write_text("{}")
    (runs / "test/r100/ce/default/seed9").mkdir(parents=True)  # unfinished: not listed
    (runs / "test/r100/ce/default/seed9/config.json").write_text(json.dumps(flat))
    study.write_provenance(tmp_path, tmp_path / "old.md")
    text = (tmp_path / "old.md").read_text()
    assert "3 committed runs" in text
    assert "| test | 100 | la | `tau1` | 1, 2 |" in text
    assert "| validation | 100 | ce | `default` | 0 |" in text
    assert "r10" not in text and "| test | 10 |" not in text and "seed9" not in text


def test_report_stage_needs_a_complete_validation_round(tmp_path, capsys):
    assert study.main(["--root", str(tmp_path), "--stage", "report"]) == 1
    assert "runs are missing" in capsys.readouterr().err


def test_emulation_sets_the_three_selections_side_by_side(tmp_path, monkeypatch):
    execute, _ = _fake_execute(_accuracy)
    monkeypatch.setattr(sweep, "execute", execute)
    s = study.Study(pathlib.Path(tmp_path), [100], ["la", "la_lpl"], processes=1)
    s.validate()
    runs = study.emulation_runs(s)
    assert len(runs) == 3 * 5 and {r.seed for r in runs} == {1, 2, 3}
    assert all("--config.run.eval_test_every_epoch=True" in r.settings for r in runs)
    assert all("--config.optim.num_epochs=60" in r.settings for r in runs)
    assert all("/emulation/r100/" in str(r.workdir) for r in runs)
    # LA: final 80 + seed, best epoch 81 + seed. The points: final test 80 + seed + bump,
    # best epoch one point above that; validation prefers T0.3_h0.3, test prefers T3_h1.
    bump = {"tau1_T0.3_h0.3_paper": 0.0, "tau1_T0.3_h1_paper": 0.1,
            "tau1_T3_h0.3_paper": 0.2, "tau1_T3_h1_paper": 0.5}  # fmt: skip
    for run in runs:
        label = run.workdir.parent.name
        final = 80 + run.seed + bump.get(label, 0.0) + (0.01 * run.seed if label in bump else 0)
        best = final + 1
        validation = 70 + (1 if label == "tau1_T0.3_h0.3_paper" else 0)
        run.workdir.mkdir(parents=True)
        history = [{"epoch": 1, "accuracy": best / 100}, {"epoch": 2, "accuracy": final / 100}]
        windows = [{"delta_l1": 0.02, "reference_margin": 4.0, "flips": 0.25}] * 3
        result = {
            "accuracy": final / 100,
            "validation_accuracy": validation / 100,
            "epoch_history": history,
            **({"perturbation_history": windows} if label in bump else {}),
        }
        (run.workdir / "results.json").write_text(json.dumps(result))
    study.write_emulation_report(s, runs, pathlib.Path(tmp_path))
    text = (pathlib.Path(tmp_path) / "emulation.md").read_text()
    # Differences per seed: 0.01 s (+ bump), so mean 0.02, SE 0.01 / sqrt(3) = 0.006.
    assert "| ours: chosen on validation, final epoch | `tau1_T0.3_h0.3_paper` |" in text
    assert "| +0.02 ± 0.01 | [-0.00, +0.04] |  |" in text
    assert "| best epoch on test, the validation-chosen point | `tau1_T0.3_h0.3_paper` |" in text
    assert "| +1.02 ± 0.01 | [+1.00, +1.04] | +1.00 |" in text
    assert "(the authors' selection) | `tau1_T3_h1_paper` |" in text
    assert "| +1.52 ± 0.01 | [+1.50, +1.54] | +1.50 |" in text
    assert "not valid estimates" in text
    assert "| `tau1_T3_h1_paper` | 0.020 | 4.00 | 0.5 % | 0.25 |" in text
    assert (pathlib.Path(tmp_path) / "logit_effect.png").read_bytes()[:4] == b"\x89PNG"
    # With one seed so far: the differences without intervals; the pooled best-epoch gain
    # over the five runs of that seed (each exactly 1 point) has one.
    one = pathlib.Path(tmp_path) / "one_seed"
    one.mkdir()
    study.write_emulation_report(s, [r for r in runs if r.seed == 1], one)
    text = (one / "emulation.md").read_text()
    assert "one seed so far: no interval" in text and "+0.01 (1 seed)" in text
    assert "over all 5 finished runs" in text and "+1.00 ± 0.00 points [+1.00, +1.00]" in text
