"""Fault injection: the trainer under attack, each outcome asserted.

Corrupt checkpoints (bytes flipped, same size, in each kind of file), forgotten
``--config``, missing data and TensorFlow, bad values (NaN, wrong types), a damaged or
deleted ``config.json``, a full disk (a real 400 KiB tmpfs where a user namespace can
mount one, else skipped; an ``OSError(ENOSPC)`` raised in the save path runs anywhere), a
second process on a locked work directory, the trainer run from another directory.

The runs are two epochs of the offline default (16 steps; checkpoints 8 and 16), made
once per module (``reference``) and copied; XLA's persistent compilation cache (set up
in ``tests/conftest.py``) makes the runs after the first one cheap.
"""

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import main as main_lib
from experiments import train as train_lib
from experiments.config import command_line as configuration
from experiments.data import pipeline
from experiments.run import errors
from experiments.run import lock as launch
from experiments.run import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
# orbax's futures of a checkpoint that failed to restore end later, on a closed event loop;
# in process (no capture to WORKDIR/details.log outside the command's run) pytest sees them.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
SHORT = [
    "--config.optim.num_epochs=2",
    "--config.run.eval_every_epochs=1",
    "--config.run.log_every_steps=4",
    "--config.run.checkpoint_every_steps=8",
]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    """A directory of this test session that every pytest-xdist worker sees."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # .../pytest-N/popen-gwK: share pytest-N
        base = base.parent
    directory = base / "fault_injection"
    directory.mkdir(exist_ok=True)
    return directory


@contextlib.contextmanager
def _exclusive(path: pathlib.Path):
    """One worker at a time (the others wait), across pytest-xdist workers."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def reference(shared_dir):
    """An uninterrupted run: its work directory (checkpoints 8 and 16, results.json),
    made by the first worker that needs it (the others wait, then read it)."""
    workdir = shared_dir / "reference"
    with _exclusive(shared_dir / "reference.lock"):
        if not (workdir / "results.json").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0
    return workdir


def _copy(reference: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the reference run without its outputs: running it again resumes."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    for name in ("results.json", "per_class_accuracy.png", "relative_loss_variation.png"):
        (workdir / name).unlink()
    return workdir


def _results(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _flip(path: pathlib.Path, count: int = 64) -> None:
    """Flips ``count`` bytes in the middle of a file; its size does not change."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - count // 2)
    data[start : start + count] = bytes(b ^ 0x5A for b in data[start : start + count])
    path.write_bytes(bytes(data))


def _replace_same_size(path: pathlib.Path, old: str, new: str) -> None:
    """A change that keeps the file valid JSON of the same size."""
    assert len(old) == len(new)
    text = path.read_text()
    assert old in text, (old, text[:300])
    path.write_text(text.replace(old, new, 1))


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _env(**extra) -> dict:
    return {**os.environ, **extra}


# ----------------------------------------------------------------- 1. checkpoint integrity


def _largest_data_file(checkpoint: pathlib.Path) -> pathlib.Path:
    files = [p for p in (checkpoint / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _change_a_digit(path: pathlib.Path, after: str) -> None:
    """Changes the first digit after ``after``: the file stays valid JSON of its size."""
    text = path.read_text()
    i = text.index(after) + len(after)
    while not text[i].isdigit():
        i += 1
    digit = "7" if text[i] != "7" else "3"
    path.write_text(text[:i] + digit + text[i + 1 :])


_CORRUPTIONS = {
    # name -> what is done to checkpoint 16
    "largest array data file": lambda c: _flip(_largest_data_file(c)),
    "ocdbt manifest": lambda c: _flip(c / "state" / "manifest.ocdbt"),
    "state tree metadata": lambda c: _flip(c / "state" / "_METADATA"),
    "array metadata": lambda c: _flip(c / "state" / "array_metadatas" / "process_0"),
    "history json": lambda c: _flip(c / "history" / "metadata"),
    "config json": lambda c: _flip(c / "config" / "metadata"),
    "digest json": lambda c: _flip(c / "digest" / "metadata"),
    # Still valid JSON, same size: only the digest tells.
    "history value": lambda c: _change_a_digit(c / "history" / "metadata", '"final_train_loss": '),
    "config value": lambda c: _replace_same_size(
        c / "config" / "metadata", '"learning_rate": 0.05', '"learning_rate": 0.07'
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("corruption", sorted(_CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_falls_back_to_identical_results(
    reference, tmp_path, capsys, corruption
):
    workdir = _copy(reference, tmp_path)
    size = {p: p.stat().st_size for p in (workdir / "checkpoints" / "16").rglob("*")}
    _CORRUPTIONS[corruption](workdir / "checkpoints" / "16")
    assert size == {p: p.stat().st_size for p in (workdir / "checkpoints" / "16").rglob("*")}
    capsys.readouterr()

    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0

    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("warning: checkpoint 16 "), err
    assert [p.name.split(".")[0] for p in (workdir / "broken_checkpoints").iterdir()] == ["16"]
    assert _results(workdir) == _results(reference)  # every number, exactly


@pytest.mark.slow
def test_harmless_checkpoint_files_change_nothing(reference, tmp_path, capsys):
    """Files a restore does not read (orbax's bookkeeping): the checkpoint still restores
    exactly what was saved, as its digest shows."""
    workdir = _copy(reference, tmp_path)
    checkpoint = workdir / "checkpoints" / "16"
    for path in (checkpoint / "_CHECKPOINT_METADATA", checkpoint / "commit_success.txt"):
        _flip(path, count=8)
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0
    assert _results(workdir) == _results(reference)
    assert len(_lines(capsys.readouterr().err)) <= 1


@pytest.mark.slow
def test_a_non_finite_loss_right_after_a_restore_names_the_restored_checkpoint(
    reference, tmp_path, monkeypatch
):
    workdir = _copy(reference, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "16")
    original = pipeline.train_batches

    def poisoned(split, *, start_step, **kwargs):
        for step, batch in enumerate(original(split, start_step=start_step, **kwargs), start_step):
            if step == 8:  # 0-based: the first step after checkpoint 8
                batch["image"] = np.full_like(batch["image"], np.nan)
            yield batch

    monkeypatch.setattr(pipeline, "train_batches", poisoned)
    config = configuration.apply_overrides(
        configuration.load_config(), dict(a[len("--config.") :].split("=") for a in SHORT)
    )
    with pytest.raises(errors.NonFiniteLossError) as info:
        train_lib.train_and_evaluate(config, workdir)
    message = str(info.value)
    assert "steps 9-12, the first after restoring checkpoint 8" in message
    assert "the checkpoint before it: none" in message and "last good state" not in message


# ----------------------------------------------------------------- 2. a strict command line


@pytest.mark.parametrize(
    "args, hint",
    [
        (["experiments/configs/fashion_mnist_lt_r100.py"], "--config experiments/configs/"),
        (["fashion_mnist_lt_r100"], "--config fashion_mnist_lt_r100"),
        (["--config.seed=1", "extra"], "expected --config PATH"),
    ],
)
def test_a_positional_argument_is_an_error_suggesting_config(tmp_path, capsys, args, hint):
    workdir = tmp_path / "run"
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: Unexpected argument") and hint in err[0]
    assert not workdir.exists()


# ----------------------------------------------------------- 3. one line per failure


def test_missing_fashion_mnist_without_tensorflow_says_where_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # the `train` extra alone
    workdir = tmp_path / "run"
    args = ["--config", "fashion_mnist_lt_r100", "--config.data.fashion_mnist_dir=/nonexistent"]
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) <= 2 and err[0].startswith("error: "), err
    text = " ".join(err)
    assert "'/nonexistent'" in text and "train-images-idx3-ubyte" in text
    assert "needs TensorFlow" in text and "dataset-fashion-mnist" in text
    assert "[prepare]" in text
    assert not workdir.exists()


@pytest.mark.slow
def test_a_damaged_config_json_is_rewritten_from_the_checkpoint(reference, tmp_path, capsys):
    workdir = _copy(reference, tmp_path)
    path = workdir / "config.json"
    path.write_text(path.read_text()[:100])  # truncated
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0
    err = _lines(capsys.readouterr().err)
    assert len(err) == 2, err
    assert err[0].startswith("warning: ") and "config.json is damaged" in err[0]
    assert err[1] == "note: config.json was missing; rewritten from checkpoint 16's copy."
    assert json.loads(path.read_text()) == json.loads((reference / "config.json").read_text())
    assert _results(workdir) == _results(reference)


def _has_user_namespaces() -> bool:
    try:
        command = ["unshare", "--user", "--map-root-user", "--mount", "true"]
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_user_namespaces(), reason="needs unshare and user namespaces")
def test_a_full_disk_is_one_line_and_the_run_resumes(reference, tmp_path):
    """A real full disk: a 400 KiB tmpfs (in a private mount namespace) holds the first
    checkpoint, not the second; grown to 8 MiB, the same command finishes the run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = [sys.executable, "-m", "experiments.train", *SHORT, "--workdir", f"{mount}/run"]
    script = (
        f"mount -t tmpfs -o size=400k tmpfs {mount} || exit 99\n"
        f"{' '.join(command)} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc\n"
        f"mount -o remount,size=8m {mount}\n"
        f"{' '.join(command)} 2> {tmp_path}/again.err; echo $? > {tmp_path}/again.rc\n"
        f"cp {mount}/run/results.json {tmp_path}/results.json\n"
    )
    process = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if process.returncode == 99:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    full = _lines((tmp_path / "full.err").read_text())
    assert (tmp_path / "full.rc").read_text().strip() == "1", full
    assert len(full) == 1 and full[0].startswith(f"error: the disk of {mount}/run is full"), full
    assert "No space left on device" in full[0] and "run the same command again" in full[0]
    assert (tmp_path / "again.rc").read_text().strip() == "0", (tmp_path / "again.err").read_text()
    assert _lines((tmp_path / "again.err").read_text()) == []
    assert json.loads((tmp_path / "results.json").read_text()) == _results(reference)


@pytest.mark.slow
def test_a_full_disk_in_the_save_path_is_one_line(reference, tmp_path, capsys, monkeypatch):
    """Anywhere (no mount needed): the save raises ENOSPC as Python's writes do."""
    workdir = _copy(reference, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "16")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workdir / "checkpoints"))

    monkeypatch.setattr(workdir_lib, "save", full)
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 1
    err = _lines(capsys.readouterr().err)
    assert err == [
        f"error: the disk of {workdir} is full (No space left on device). Free some space "
        "and run the same command again: the run resumes from checkpoint 8."
    ]
    assert "OSError" in (workdir / "details.log").read_text()  # the traceback is kept there


@pytest.mark.slow
def test_the_fallback_prints_one_line_and_logs_the_noise(reference, tmp_path):
    """The command line: orbax's and asyncio's tracebacks of a torn checkpoint go to
    WORKDIR/details.log; stderr holds the one warning."""
    workdir = _copy(reference, tmp_path)
    metadata = workdir / "checkpoints" / "16" / "state" / "array_metadatas" / "process_0"
    metadata.write_bytes(metadata.read_bytes()[:100])
    process = subprocess.run(
        [sys.executable, "-m", "experiments.train", *SHORT, "--workdir", str(workdir)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    err = _lines(process.stderr)
    assert process.returncode == 0, process.stderr[-3000:]
    assert len(err) == 1 and err[0].startswith("warning: checkpoint 16 "), err
    assert _results(workdir) == _results(reference)
    log = (workdir / "details.log").read_text()
    assert log.startswith("==== ") and "warning: checkpoint 16" in log


# ------------------------------------------------------------ 4. every value validated


@pytest.mark.parametrize(
    "args, field",
    [
        (["--config.optim.learning_rate=nan"], "config.optim.learning_rate must be a finite"),
        (["--config.optim.weight_decay=nan"], "config.optim.weight_decay must be a finite"),
        (["--config.la.tau=nan"], "config.la.tau must be a finite number"),
        (["--config.la.tau=inf"], "config.la.tau must be a finite number"),
        (["--config.ldam.scale=-inf"], "config.ldam.scale must be a finite number"),
        (["--config.data.imbalance_ratio=nan"], "config.data.imbalance_ratio must be a finite"),
        (["--config.optim.milestones=abc"], "config.optim.milestones must be a sequence"),
        (
            ["--config.optim.schedule=multistep", "--config.optim.milestones=abc"],
            "config.optim.milestones must be a sequence",
        ),
        (["--config.model.dtype=float16"], "config.model.dtype must be one of float32, bfloat16"),
        (["--config.seed=-1"], "config.seed must be >= 0"),
        (
            ["--config.method.name=ce", "--config.lpl.split_rule=tail"],
            "config.lpl.split_rule must be one of longtail, mean",
        ),
        (["--config.data.threads=-1"], "config.data.threads must be >= 0"),
    ],
)
def test_every_value_is_checked_before_anything_is_written(tmp_path, capsys, args, field):
    workdir = tmp_path / "run"
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err
    assert not workdir.exists()


@pytest.mark.slow
def test_the_checkpoints_copy_of_the_config_guards_a_deleted_config_json(
    reference, tmp_path, capsys
):
    workdir = _copy(reference, tmp_path)
    (workdir / "config.json").unlink()
    capsys.readouterr()
    longer = [*SHORT, "--config.optim.num_epochs=3"]
    assert main_lib.main([*longer, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "optim.num_epochs: 2 -> 3" in err[0], err
    assert "checkpoint 16's copy of its config" in err[0]
    assert not (workdir / "config.json").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["16", "8"]

    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0  # the same config
    err = _lines(capsys.readouterr().err)
    assert err == ["note: config.json was missing; rewritten from checkpoint 16's copy."]
    assert (workdir / "config.json").read_text() == (reference / "config.json").read_text()
    assert _results(workdir) == _results(reference)


# ------------------------------------------------------------------ 5. first-run comfort


def _default_workdir(args):
    return configuration.default_workdir(configuration.parse_command_line(args))


def test_the_default_workdir_reflects_the_overrides():
    assert _default_workdir([]) == pathlib.Path("workdirs/default_la_lpl_seed0")
    # Method and seed are in the name; keys that never change results are left out.
    assert _default_workdir(["--config.method.name=la", "--config.seed=3"]) == pathlib.Path(
        "workdirs/default_la_seed3"
    )
    assert _default_workdir(["--config.data.threads=1"]) == _default_workdir([])
    assert _default_workdir(["--config.optim.num_epochs=60"]) == _default_workdir([])  # its own
    trial = _default_workdir(["--config.optim.num_epochs=2"])
    assert trial.name.startswith("default_la_lpl_seed0_") and len(trial.name) == 29
    assert trial == _default_workdir(["--config.optim.num_epochs=2", "--config.data.threads=4"])
    assert trial != _default_workdir(["--config.optim.num_epochs=3"])
    named = _default_workdir(["--config", "fashion_mnist_lt_r100"])
    assert named == pathlib.Path("workdirs/fashion_mnist_lt_r100_la_lpl_seed0")


@pytest.mark.slow
def test_keys_that_cannot_change_results_may_differ_on_resume(reference, tmp_path, capsys):
    workdir = _copy(reference, tmp_path)
    capsys.readouterr()
    other = ["--config.data.threads=1", "--config.data.prefetch_batches=1"]
    assert main_lib.main([*SHORT, *other, "--workdir", str(workdir)]) == 0
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("note: ") and "data.threads: 2 -> 1" in err[0]
    assert _results(workdir) == _results(reference)


@pytest.mark.slow
def test_log_every_steps_may_not_differ_on_resume(reference, tmp_path, capsys):
    """Its windows are what results.json's loss-variation median is taken over."""
    workdir = _copy(reference, tmp_path)
    args = [*SHORT[:2], "--config.run.log_every_steps=8", SHORT[3]]
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "run.log_every_steps: 4 -> 8" in err[0], err


@pytest.mark.slow
def test_the_trainer_runs_from_another_directory(tmp_path):
    """As installed: the package on the path, the current directory elsewhere; the
    default config comes from the package, the default work directory is relative."""
    process = subprocess.run(
        [sys.executable, "-m", "experiments.train", *SHORT],
        cwd=tmp_path,
        env=_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    (run,) = (tmp_path / "workdirs").iterdir()
    assert run.name.startswith("default_la_lpl_seed0_")
    assert _results(run)["num_steps"] == 16


def test_the_trainer_runs_from_the_checkout_not_from_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["lpjax", "lpjax.*"]
    assert "scripts" not in project["project"]  # no command that needs the train extra
    # The config files are modules of the package, found from any directory.
    assert configuration.resolve_config_path("default") == configuration.DEFAULT_CONFIG
    assert (configuration.CONFIG_DIR / "__init__.py").is_file()


@pytest.mark.slow
def test_a_locked_workdir_is_refused_at_once(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lib.lock(workdir, enabled=True):
        start = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-m", "experiments.train", "--workdir", str(workdir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.perf_counter() - start
    assert process.returncode == 2
    assert _lines(process.stderr) == [f"error: {launch.locked_message(workdir)}"]
    assert elapsed < 3.0, f"refused after {elapsed:.1f} s"
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]
