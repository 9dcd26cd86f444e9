"""End-to-end tests of ``python -m experiments.train``: outputs, resume, devices, hosts."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import main as main_lib
from experiments import methods
from experiments import train as train_lib
from experiments.config import command_line as configuration
from experiments.data import in_memory, pipeline
from experiments.run import errors
from experiments.run import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[2]

# Two epochs of the offline default (16 steps), logging and checkpointing every 4 / 8 steps.
SHORT = {
    "optim.num_epochs": "2",
    "run.eval_every_epochs": "1",
    "run.log_every_steps": "4",
    "run.checkpoint_every_steps": "8",
}


def _parse_args(argv):
    """``(config, workdir)`` of a command line."""
    return main_lib.command_line(argv)[:2]


def short_default_config(overrides=None):
    return configuration.apply_overrides(
        configuration.load_config(), {**SHORT, **(overrides or {})}
    )


def _timing_free(records):
    return [{k: v for k, v in r.items() if k != "train_images_per_second"} for r in records]


def _patch_batches(monkeypatch, action):
    """Makes the trainer's batch iterator call ``action(step, batch)`` as each batch is
    handed to the train step (not when grain prefetches it); returns the original."""
    original = pipeline.train_batches

    def patched(split, *, start_step, **kwargs):
        for step, batch in enumerate(original(split, start_step=start_step, **kwargs), start_step):
            yield action(step, batch)

    monkeypatch.setattr(pipeline, "train_batches", patched)
    return original


@pytest.mark.slow
def test_default_on_real_digits_writes_every_output(tmp_path):
    config = short_default_config({"optim.num_epochs": "12", "run.eval_every_epochs": "6"})
    results = train_lib.train_and_evaluate(config, tmp_path)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for key in ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["num_steps"] == 12 * 8
    assert len(saved["per_class_accuracy"]) == 10
    # The per-class mean over a balanced test set equals the overall accuracy.
    assert np.isclose(np.mean(saved["per_class_accuracy"]), saved["accuracy"])
    assert saved["accuracy"] > 0.7, "a small CNN learns digits within 12 epochs"
    assert saved["final_train_loss"] < 1.0
    # LA + LPL lowers the loss of the most frequent class and raises the rarest one's.
    variation = saved["relative_loss_variation"]
    assert variation[0] < 0 < variation[9]

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("train_loss" in r for r in records)
    assert [r["step"] for r in records if "eval_accuracy" in r] == [48, 96]
    assert json.loads((tmp_path / "config.json").read_text())["method"]["name"] == "la_lpl"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
        "88",
        "96",
    ]
    assert any((tmp_path / "tensorboard").iterdir())
    for plot in ("per_class_accuracy.png", "relative_loss_variation.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_eval_test_every_epoch_keeps_each_epochs_accuracy_and_la_lpl_logs_its_delta(tmp_path):
    config = short_default_config(
        {"run.eval_every_epochs": "5", "run.eval_test_every_epoch": "True"}
    )
    results = train_lib.train_and_evaluate(config, tmp_path)

    epochs = results["epoch_history"]
    assert [e["epoch"] for e in epochs] == [1, 2]  # every epoch, whatever eval_every_epochs
    assert epochs[-1]["accuracy"] == results["accuracy"]  # results stay the final epoch's
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [8, 16]
    # The default method is LA + LPL: each logging window has its delta against LA's logits.
    windows = results["perturbation_history"]
    assert len(windows) == 16 // 4
    for window in windows:
        assert window["delta_l1"] > 0 and window["reference_margin"] > 0
        assert 0 <= window["flips"] <= config.optim.batch_size


META = {"meta.per_class": "4", "meta.batch_size": "40", "meta.every_steps": "3"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, extra",
    [("la_lpl", {}), ("la_lpl_adaptive", {}), ("la_meta_lpl", META)],
    ids=["la_lpl", "la_lpl_adaptive", "la_meta_lpl"],
)
def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch, method, extra):
    # la_lpl_adaptive carries its per-class bounds in the checkpointed transform state,
    # la_meta_lpl its learned phi, its Adam state and its meta batches (a function of step).
    config = short_default_config({"method.name": method, **extra})
    reference = train_lib.train_and_evaluate(config, tmp_path / "uninterrupted")

    def crashing(step, batch):
        if step == 13:
            raise KeyboardInterrupt("simulated kill at step 13")
        return batch

    original = _patch_batches(monkeypatch, crashing)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train_and_evaluate(config, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(pipeline, "train_batches", original)
    resumed = train_lib.train_and_evaluate(config, tmp_path / "resumed")

    assert resumed == reference
    if method == "la_meta_lpl":
        assert len(resumed["theta_history"]) == 4 and any(resumed["theta"])
        assert (tmp_path / "resumed" / "theta.png").read_bytes().startswith(b"\x89PNG")
    logs = [
        _timing_free(
            json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        )
        for d in ("uninterrupted", "resumed")
    ]
    assert logs[0] == logs[1]


@pytest.mark.slow
def test_workdir_of_another_config_is_refused(tmp_path):
    train_lib.train_and_evaluate(short_default_config({"optim.num_epochs": "1"}), tmp_path)
    with pytest.raises(workdir_lib.WorkdirConfigMismatchError, match="lpl.epsilon: 0.2 -> 0.3"):
        train_lib.train_and_evaluate(
            short_default_config({"optim.num_epochs": "1", "lpl.epsilon": "0.3"}), tmp_path
        )


def test_command_line_rejects_unknown_keys_and_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown config key 'lpl.eps'.*lpl\.epsilon"):
        _parse_args(["--config.lpl.eps=0.1"])
    with pytest.raises(ValueError, match="Cannot parse 'abc' for config key 'optim.num_epochs'"):
        _parse_args(["--config.optim.num_epochs=abc"])
    with pytest.raises(ValueError, match="Unrecognized argument"):
        _parse_args(["--epochs", "3"])
    config, workdir = _parse_args(
        ["--config.method.name=lpl_fixed", "--config.optim.milestones=(3, 5)", "--workdir", "w"]
    )
    assert config.method.name == "lpl_fixed" and config.optim.milestones == (3, 5)
    assert workdir == pathlib.Path("w")


@pytest.mark.slow
def test_cifar10_longtail_end_to_end_on_mocked_data(tmp_path):
    config = configuration.load_config(REPO / "experiments" / "configs" / "cifar10_lt_r100.py")
    config = configuration.apply_overrides(
        config,
        {
            "optim.num_epochs": "1",
            "optim.batch_size": "32",
            "run.eval_batch_size": "64",
            "run.log_every_steps": "1",
            "run.checkpoint_every_steps": "2",
            "optim.warmup_epochs": "0",
            # Mocked CIFAR has ~20 random images per class; ratio 10 keeps every class.
            "data.imbalance_ratio": "10.0",
        },
    )
    with tfds.testing.mock_data(num_examples=200):
        results = train_lib.train_and_evaluate(config, tmp_path)
    assert results["num_steps"] >= 1
    assert 0.0 <= results["accuracy"] <= 1.0
    assert np.isfinite(results["final_train_loss"])
    assert len(results["per_class_accuracy"]) == 10
    assert (tmp_path / "results.json").exists()
    assert any(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


FASHION_MNIST = pathlib.Path(in_memory.FASHION_MNIST_IDX_DIR)


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists()
    and not os.environ.get("LPJAX_REQUIRE_FASHION_MNIST"),
    reason="apt-get install dataset-fashion-mnist (CI sets LPJAX_REQUIRE_FASHION_MNIST)",
)
def test_fashion_mnist_longtail_end_to_end_on_real_data(tmp_path):
    config = configuration.load_config(
        REPO / "experiments" / "configs" / "fashion_mnist_lt_r100.py"
    )
    config = configuration.apply_overrides(
        config,
        {"method.name": "la_lpl_adaptive", "optim.num_epochs": "2", "run.eval_every_epochs": "2"},
    )
    results = train_lib.train_and_evaluate(config, tmp_path)
    assert results["class_counts"] == [5500, 3297, 1976, 1184, 710, 425, 255, 153, 91, 55]
    assert results["num_steps"] == 2 * (13_646 // 128)
    # Two epochs of a small CNN are far above chance (10 %) on both held-out splits.
    assert results["accuracy"] > 0.5 and results["validation_accuracy"] > 0.5
    assert len(results["validation_per_class_accuracy"]) == 10
    # LA + adaptive LPL lowers the head class's loss and raises the rarest class's.
    variation = results["relative_loss_variation"]
    assert variation[0] < 0 < variation[9]


def _run_trainer(workdir, *, devices, extra_env=None):
    """The command line on ``devices`` fake CPU devices (the tests' other XLA flags kept)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env = {
        **os.environ,
        "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
        **(extra_env or {}),
    }
    args = [f"--config.{k}={v}" for k, v in SHORT.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--workdir", str(workdir), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def _assert_same_values(a, b, where):
    """Equal records: numbers to float rounding, everything else exactly, recursively."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_values(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and any(isinstance(x, dict | list) for x in a):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float | list):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=where)
    else:
        assert a == b, where


def _assert_same_run(dir_a, dir_b):
    a = json.loads((dir_a / "results.json").read_text())
    b = json.loads((dir_b / "results.json").read_text())
    _assert_same_values(a, b, "results")
    losses = [
        [
            json.loads(line).get("train_loss")
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (dir_a, dir_b)
    ]
    np.testing.assert_allclose(
        [x for x in losses[0] if x is not None], [x for x in losses[1] if x is not None], rtol=1e-5
    )


@pytest.mark.slow
def test_one_device_and_two_processes_of_four_equal_one_process_of_eight(tmp_path):
    """The command line on one device, and as two processes (hosts) of four devices each,
    trains as this process does on its eight (conftest)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    processes = [_run_trainer(tmp_path / "one_device", devices=1)] + [
        _run_trainer(
            tmp_path / "two_hosts",
            devices=4,
            extra_env={
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    train_lib.train_and_evaluate(short_default_config(), tmp_path / "eight_devices")
    for process in processes:
        _finish(process)
    _assert_same_run(tmp_path / "eight_devices", tmp_path / "one_device")
    _assert_same_run(tmp_path / "eight_devices", tmp_path / "two_hosts")


@pytest.mark.slow
def test_voc2007_multilabel_end_to_end_on_mocked_data(tmp_path):
    config = configuration.load_config(REPO / "experiments" / "configs" / "voc2007.py")
    config = configuration.apply_overrides(
        config,
        {
            "model.name": "small_cnn",  # the config's ResNet-32 at 128 pixels is a GPU job
            "data.image_size": "16",
            "optim.num_epochs": "1",
            "optim.batch_size": "16",
            "run.eval_batch_size": "16",
            "run.log_every_steps": "1",
            "run.checkpoint_every_steps": "2",
            "optim.warmup_epochs": "0",
        },
    )
    with tfds.testing.mock_data(num_examples=48):
        results = train_lib.train_and_evaluate(config, tmp_path)
    assert results["num_steps"] == 3
    assert len(results["per_class_ap"]) == 20
    for key in ("mAP", "head_mAP", "medium_mAP", "tail_mAP"):
        assert 0.0 <= results[key] <= 1.0
    assert (tmp_path / "per_class_ap.png").exists()


# ----------------------------------------------------------------------------- reliability


def _interrupt_at(monkeypatch, step, action):
    def patched(s, batch):
        if s == step:
            action()
        return batch

    return _patch_batches(monkeypatch, patched)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resume_is_exact(tmp_path, monkeypatch):
    config = short_default_config()
    reference = train_lib.train_and_evaluate(config, tmp_path / "uninterrupted")
    original = _interrupt_at(monkeypatch, 13, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(workdir_lib.TrainingInterrupted, match="SIGTERM after step 14") as info:
        train_lib.train_and_evaluate(config, tmp_path / "resumed")
    assert info.value.exit_code == 143
    # Step 14 (the one running when the signal came) finished and was checkpointed,
    # although it is not a checkpoint step; the log was flushed up to step 12.
    steps = [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()]
    assert "14" in steps and not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(pipeline, "train_batches", original)
    # The log may even be lost: results come from the checkpointed history.
    (tmp_path / "resumed" / "metrics.jsonl").unlink()
    resumed = train_lib.train_and_evaluate(config, tmp_path / "resumed")
    assert resumed == reference


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    config = short_default_config()
    reference = train_lib.train_and_evaluate(config, tmp_path)
    latest = tmp_path / "checkpoints" / "16"
    for path in latest.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (tmp_path / "results.json").unlink()
    assert train_lib.train_and_evaluate(config, tmp_path) == reference
    assert "warning: checkpoint 16" in capsys.readouterr().err
    # The broken checkpoint is kept aside, not deleted.
    assert [p.name.split(".")[0] for p in (tmp_path / "broken_checkpoints").iterdir()] == ["16"]
    # Every checkpoint broken: one line naming the directory.
    for path in (tmp_path / "checkpoints").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    with pytest.raises(workdir_lib.UserError, match="no checkpoint in .* can be restored"):
        train_lib.train_and_evaluate(config, tmp_path)


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_names_the_steps(tmp_path, monkeypatch):
    def poisoned(step, batch):
        if step == 9:  # 0-based: the 10th step, in the logging window of steps 9-12
            batch["image"] = np.full_like(batch["image"], np.nan)
        return batch

    _patch_batches(monkeypatch, poisoned)
    with pytest.raises(errors.NonFiniteLossError, match="steps 9-12.*checkpoint 8"):
        train_lib.train_and_evaluate(short_default_config(), tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [8]  # nothing after the poisoned step was saved


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.method.name=foo"], "config.method.name must be one of ce, la, "),
        (["--config.optim.num_epochs=-1"], "config.optim.num_epochs must be >= 1"),
        (["--config.optim.batch_size=1024"], "larger than the 512 training images"),
        (["--config.lpl.eps=0.1"], "Unknown config key 'lpl.eps'"),
        (["--config.method.name=bce"], "does not apply to the single-label digits_lt"),
        (["--config.optim.schedule=linear"], "schedule must be one of multistep, cosine, constant"),
        (["--config.optim.name=rmsprop"], "config.optim.name must be one of sgd, adam, adamw"),
        (
            ["--config.optim.schedule=onecycle", "--config.optim.warmup_epochs=0"],
            "rises over config.optim.warmup_epochs, which must lie",
        ),
        (["--config.lpl.step_size=0.00001"], "max_inner_steps"),
    ],
)
def test_config_errors_exit_2_in_one_line_before_writing(tmp_path, capsys, args, message):
    workdir = tmp_path / "run"
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not workdir.exists()


def test_unusable_workdirs_are_refused(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("")
    assert main_lib.main(["--workdir", str(file / "run")]) == 2
    assert "is a file" in capsys.readouterr().err
    workdir = tmp_path / "busy"
    with workdir_lib.lock(workdir, enabled=True):
        assert main_lib.main(["--workdir", str(workdir)]) == 2
    assert "in use by another training process" in capsys.readouterr().err
    assert not (workdir / "config.json").exists()


@pytest.mark.slow
def test_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, sys, time; from experiments import workdir; "
            f"ctx = workdir.lock(pathlib.Path({str(tmp_path)!r}), True); ctx.__enter__(); "
            "print('locked', flush=True); time.sleep(600)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lib.WorkdirLockedError):
        with workdir_lib.lock(tmp_path, enabled=True):
            pass
    holder.kill()
    holder.wait()
    with workdir_lib.lock(tmp_path, enabled=True):
        pass


@pytest.mark.slow
def test_sigterm_to_the_command_line_exits_143_and_resumes_exactly(tmp_path):
    overrides = {**SHORT, "optim.num_epochs": "20"}
    command = [sys.executable, "-m", "experiments.train"]
    command += [f"--config.{k}={v}" for k, v in overrides.items()]
    train_lib.train_and_evaluate(short_default_config(overrides), tmp_path / "a")  # reference
    process = subprocess.Popen(
        [*command, "--workdir", str(tmp_path / "b")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "b" / "metrics.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM after step" in err and "Traceback" not in err
    assert subprocess.run([*command, "--workdir", str(tmp_path / "b")], cwd=REPO).returncode == 0
    _assert_same_run(tmp_path / "a", tmp_path / "b")


def test_help_lists_methods_datasets_and_config_keys(capsys):
    with pytest.raises(SystemExit) as info:
        main_lib.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "la_lpl_adaptive" in out and "fashion_mnist_lt" in out and "small_cnn28" in out
    assert "--config.lpl.adaptive_target=0.3" in out and "--config.optim.num_epochs=60" in out
    # The methods come from the registry, each with its summary and the blocks it reads.
    for name in methods.NAMES:
        assert f"  {name:17s} {methods.entry(name).summary}" in out, name
    assert "[la, lpl]" in out and "--config.method.name='la_lpl'" in out
