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
import signal
import subprocess
import sys
import tempfile
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
    assert err[1] == "note: config.json was damaged; rewritten from checkpoint 16's copy."
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


# ------------------------------------------------------------- 6. a run knows its data


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (the MNIST format) holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _fake_fashion_mnist(directory: pathlib.Path, seed: int) -> pathlib.Path:
    """Fashion-MNIST-shaped IDX files: 600 random 28x28 images a class (500 of them the
    validation split), 100 a class for test."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, per_class in (("train", 600), ("t10k", 100)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
    return directory


_FASHION = [
    "--config",
    "fashion_mnist_lt_r10",
    "--config.optim.num_epochs=1",
    "--config.optim.batch_size=64",
    "--config.run.log_every_steps=2",
    "--config.run.checkpoint_every_steps=2",
    "--config.run.eval_every_epochs=1",
]


def _snapshot(workdir: pathlib.Path) -> dict:
    """Every file of a work directory and its bytes."""
    return {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_and_the_same_data_elsewhere_resumes(tmp_path, capsys):
    """The issue's attack: replace a run's IDX files with other images of the same shape
    and resume. Refused in one line (exit 2) naming the split, nothing touched; the same
    files at another path resume to identical results."""
    first = _fake_fashion_mnist(tmp_path / "fashion", seed=0)
    workdir = tmp_path / "run"
    data = [f"--config.data.fashion_mnist_dir={first}", "--workdir", str(workdir)]
    assert main_lib.main([*_FASHION, *data]) == 0
    reference = _results(workdir)
    record = json.loads((workdir / "config.json").read_text())["data_fingerprint"]
    assert record["train"]["kind"] == "in_memory" and record["validation"]["examples"] == 5000
    (workdir / "results.json").unlink()

    moved = tmp_path / "elsewhere"
    shutil.copytree(first, moved)
    capsys.readouterr()
    args = [*_FASHION, f"--config.data.fashion_mnist_dir={moved}", "--workdir", str(workdir)]
    assert main_lib.main(args) == 0
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("note: ") and "data.fashion_mnist_dir" in err[0]
    assert _results(workdir) == reference

    other = _fake_fashion_mnist(tmp_path / "other", seed=1)
    shutil.copy(other / "train-images-idx3-ubyte", moved / "train-images-idx3-ubyte")  # in place
    before = _snapshot(workdir)
    assert main_lib.main(args) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and "other data" in err[0], err
    assert "train images" in err[0] and "validation images" in err[0], err
    assert "config.json" in err[0] and len(err[0]) <= 200 + len(str(workdir)), err
    assert _snapshot(workdir) == before  # nothing touched, details.log included

    (workdir / "config.json").unlink()  # then the checkpoints' own record refuses it
    assert main_lib.main(args) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "checkpoint 6's record of its data" in err[0], err
    assert not (workdir / "config.json").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6"]


class _NoRecords:
    """A tfds data source whose records must not be read: only its metadata."""

    def __init__(self, info, split):
        self.dataset_info, self.split = info, split

    def __len__(self):
        return 12

    def __getitem__(self, index):
        raise AssertionError("the fingerprint read a record")


def test_streamed_data_is_fingerprinted_by_its_metadata_not_its_bytes(tmp_path):
    from types import SimpleNamespace

    from experiments.data import fingerprint, registry, tfds_splits

    shards = [tmp_path / "train.array_record-00000", tmp_path / "train.array_record-00001"]
    for i, shard in enumerate(shards):
        shard.write_bytes(b"x" * (100 + i))
    split_info = SimpleNamespace(num_bytes=201, shard_lengths=[6, 6], filepaths=shards)
    info = SimpleNamespace(full_name="imagenet_lt/1.0.0", splits={"train": split_info})
    split = tfds_splits.TfdsSplit(_NoRecords(info, "train"), "imagenet_lt", 1000, 224)
    record = fingerprint.fingerprint(registry.Splits(split, None, split))["train"]
    assert record == {
        "kind": "tfds",
        "name": "imagenet_lt",
        "examples": 12,
        "builder": "imagenet_lt/1.0.0",
        "split": "train",
        "num_bytes": 201,
        "shard_lengths": [6, 6],
        "file_sizes": [100, 101],
    }
    shards[1].write_bytes(b"x" * 50)  # a re-prepared file: the fingerprint changes
    changed = fingerprint.split_record(split)
    assert changed["file_sizes"] == [100, 50]


# ------------------------------------------------------------- 7. the gaps of validation


def _config_file(tmp_path, text: str) -> str:
    path = tmp_path / "my_config.py"
    path.write_text(text)
    return str(path)


_BAD_CONFIG_FILES = {
    "syntax error": ("def get_config(:\n", "does not parse: invalid syntax (line 1)"),
    "raises": ("def get_config():\n    raise RuntimeError('boom')\n", "raised RuntimeError in"),
    "raises on import": ("import nonexistent_module_xyz\n", "raised ModuleNotFoundError import"),
    "exits on import": ("import sys\nsys.exit(0)\n", "called sys.exit(0) importing it"),
    "exits": ("import sys\ndef get_config():\n    sys.exit(3)\n", "sys.exit(3) in get_config()"),
    "returns a dict": ("def get_config():\n    return {}\n", "returned dict, not an ml_coll"),
    "returns None": ("def get_config():\n    return None\n", "returned NoneType, not an"),
    "no get_config": ("x = 1\n", "defines no get_config()"),
}


@pytest.mark.parametrize("case", sorted(_BAD_CONFIG_FILES))
def test_a_config_file_that_fails_is_one_line(tmp_path, capsys, case):
    text, expected = _BAD_CONFIG_FILES[case]
    workdir = tmp_path / "run"
    assert main_lib.main(["--config", _config_file(tmp_path, text), "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: Config file ") and expected in err[0], err
    assert not workdir.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config.optim.momentum=5.0"], "config.optim.momentum must be in [0, 1); got 5.0."),
        (["--config.optim.momentum=1.0"], "config.optim.momentum must be in [0, 1); got 1.0."),
        (["--config.seed=9223372036854775808"], "config.seed must be < 2**63"),
        (
            ["--config.data.imbalance_ratio=200"],
            "config.data.imbalance_ratio = 200 leaves classes [9] of 'digits' without any "
            "image (at most 143 per class); the ratio it can hold: at most 143.",
        ),
        (
            ["--config", "default", "--config", "fashion_mnist_lt_r100"],
            "--config is given 2 times (default, fashion_mnist_lt_r100)",
        ),
        (["--config.optim.learning_rat=0.1"], "did you mean optim.learning_rate"),
        (["--config.lpl.step_size=0"], "config.lpl.step_size must be a finite number > 0"),
    ],
)
def test_the_gaps_of_validation_are_closed(tmp_path, capsys, args, expected):
    workdir = tmp_path / "run"
    assert main_lib.main([*args, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert len(err[0]) <= 200, err
    assert not workdir.exists()


def test_an_imbalance_ratio_just_below_the_limit_still_trains_every_class():
    from experiments.data import in_memory

    assert in_memory.max_imbalance_ratio(143, 10) == 143.0
    ratio = in_memory.max_imbalance_ratio(5500, 10)  # rounding takes the last image at 5500
    assert ratio < 5500 and in_memory.longtail_class_counts(5500, 10, ratio).min() == 1
    assert in_memory.longtail_class_counts(5500, 10, 5500.0).min() == 0


@pytest.mark.slow
def test_a_platform_that_is_not_available_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--workdir", str(workdir)],
        cwd=REPO,
        env=_env(JAX_PLATFORMS="cuda"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = _lines(process.stderr)
    assert process.returncode == 2, process.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("error: JAX cannot start the platform 'cuda'"), err
    assert not workdir.exists()


# ------------------------------------------------------------- 8. damaged run files


_GARBAGE = [b"42", b'{"step": 3, "train_lo', b"\xff\xfe\x00garbage\x9c", b'{"no_step": 1}', b"[]"]


@pytest.mark.slow
def test_lines_of_metrics_jsonl_that_are_not_records_are_skipped_with_one_note(
    reference, tmp_path, capsys
):
    workdir = _copy(reference, tmp_path)
    path = workdir / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[:2] + [g + b"\n" for g in _GARBAGE] + lines[2:] + [b"42\n"]
    path.write_bytes(b"".join(damaged))
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("note: ") and "6 line(s)" in err[0], err
    assert _results(workdir) == _results(reference)
    assert path.read_bytes() == (reference / "metrics.jsonl").read_bytes()


@pytest.mark.slow
def test_a_metrics_jsonl_that_is_a_directory_is_moved_aside(reference, tmp_path, capsys):
    workdir = _copy(reference, tmp_path)
    (workdir / "metrics.jsonl").unlink()
    (workdir / "metrics.jsonl").mkdir()
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 0
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("warning: ") and "moved to metrics.jsonl" in err[0]
    assert _results(workdir) == _results(reference)
    assert [p.is_dir() for p in workdir.glob("metrics.jsonl.damaged.*")] == [True]


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("checkpoints", lambda p: p.write_text("x"), "is not a directory"),
        ("config.json", lambda p: p.mkdir(), "is not a file"),
    ],
)
def test_a_run_file_of_the_wrong_kind_is_one_line(tmp_path, capsys, name, make, expected):
    workdir = tmp_path / "run"
    workdir.mkdir()
    make(workdir / name)
    before = sorted(p.name for p in workdir.iterdir())
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == [
        f"error: {str(workdir / name)!r} {expected}; move it away (or delete it) and run again."
    ]
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.slow
def test_a_config_json_of_another_run_is_one_short_line(reference, tmp_path, capsys):
    workdir = _copy(reference, tmp_path)
    (workdir / "config.json").write_text('{"seed": 0}')
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "another config" in err[0] and "more; config.json" in err[0], err
    assert len(err[0]) <= 200 + len(str(workdir)), err


@pytest.mark.slow
@pytest.mark.skipif(not _has_user_namespaces(), reason="needs unshare and user namespaces")
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    """Permissions hold for an unprivileged user only: the resume runs as one (a user
    namespace without a mapping), on a copy that it may write, but checkpoint 16 it
    cannot read (or move)."""
    shared = pathlib.Path(tempfile.mkdtemp(prefix="lpjax-unreadable-"))  # not under pytest's 700
    workdir = _copy(reference, shared)
    shared.chmod(0o777)
    subprocess.run(["chmod", "-R", "a+rwX", str(workdir)], check=True)
    (workdir / "checkpoints" / "16").chmod(0)
    command = [sys.executable, "-m", "experiments.train", *SHORT, "--workdir", str(workdir)]
    try:
        process = subprocess.run(
            ["unshare", "--user", *command],
            cwd=REPO,
            env=_env(),  # the compilation cache: read, not written
            capture_output=True,
            text=True,
            timeout=600,
        )
        err = _lines(process.stderr)
        assert process.returncode == 0, process.stderr[-3000:]
        assert len(err) == 1 and err[0].startswith("warning: checkpoint 16 "), err
        assert "PermissionError" in err[0] and "left in place" in err[0], err
        assert _results(workdir) == _results(reference)
    finally:
        (workdir / "checkpoints" / "16").chmod(0o755)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.slow
def test_a_work_directory_removed_under_a_running_run_is_one_line(
    reference, tmp_path, capsys, monkeypatch
):
    workdir = _copy(reference, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "16")
    original = pipeline.train_batches

    def removing(split, *, start_step, **kwargs):
        for step, batch in enumerate(original(split, start_step=start_step, **kwargs), start_step):
            if step == 10:
                shutil.rmtree(workdir)
            yield batch

    monkeypatch.setattr(pipeline, "train_batches", removing)
    capsys.readouterr()
    assert main_lib.main([*SHORT, "--workdir", str(workdir)]) == 1
    err = _lines(capsys.readouterr().err)
    assert err == [
        f"error: the work directory {workdir} was removed while the run was using it; run "
        "the same command again to start over."
    ]


# ------------------------------------------------------------- 9. real signals


# Runs the command line with each step paced (0.3 s) and written to PROGRESS, so that a
# signal lands on a known step; the signals received are counted in PROGRESS.signals;
# AWAIT_SECOND: after one signal, wait for the next; KILL_SAVE: SIGKILL from inside the
# save of that step.
_PACED = """
import os, pathlib, signal, sys, time
import orbax.checkpoint as ocp
from experiments import main
from experiments.data import pipeline
from experiments.run import workdir as workdir_lib

progress = pathlib.Path(os.environ["PROGRESS"])
kill_save = int(os.environ.get("KILL_SAVE", "-1"))
batches, save = pipeline.train_batches, workdir_lib.save
json_save = ocp.handlers.JsonCheckpointHandler.async_save
handle = workdir_lib.StopSignals._handle
saving, received = [], []

def paced(split, *, start_step, **kwargs):
    for step, batch in enumerate(batches(split, start_step=start_step, **kwargs), start_step):
        progress.write_text(str(step))
        time.sleep(0.3)
        while os.environ.get("AWAIT_SECOND") and len(received) == 1:  # the second Ctrl-C
            time.sleep(0.01)
        yield batch

def noting_handle(self, signum, frame):
    received.append(signum)
    pathlib.Path(str(progress) + ".signals").write_text(str(len(received)))
    return handle(self, signum, frame)

def killing_save(manager, step, *args, **kwargs):
    saving[:] = [step]
    return save(manager, step, *args, **kwargs)

def killing_json_save(self, directory, *args, **kwargs):
    if saving == [kill_save]:  # a checkpoint's item, half written
        os.kill(os.getpid(), signal.SIGKILL)
    return json_save(self, directory, *args, **kwargs)

pipeline.train_batches, workdir_lib.save = paced, killing_save
workdir_lib.StopSignals._handle = noting_handle
ocp.handlers.JsonCheckpointHandler.async_save = killing_json_save
sys.argv[0] = "experiments.train"
main.entry_point()
"""


def _paced_run(tmp_path, workdir, *, kill_save=None, await_second=False):
    progress = tmp_path / "progress"
    progress.unlink(missing_ok=True)
    pathlib.Path(f"{progress}.signals").unlink(missing_ok=True)
    env = _env(PROGRESS=str(progress), **({"KILL_SAVE": str(kill_save)} if kill_save else {}))
    if await_second:  # after one signal, the run waits for the second
        env["AWAIT_SECOND"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", _PACED, *SHORT, "--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, progress


def _wait_for_step(process, progress, step: int) -> None:
    deadline = time.monotonic() + 300
    while not (progress.exists() and progress.read_text() and int(progress.read_text()) >= step):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_real_signals_through_the_command_line_resume_to_identical_results(reference, tmp_path):
    """Ctrl-C twice (stops at once), Ctrl-C (saves the step), SIGKILL in the middle of a
    save, then the plain command: the results of the uninterrupted run, exactly."""
    workdir = tmp_path / "run"

    process, progress = _paced_run(tmp_path, workdir, await_second=True)
    _wait_for_step(process, progress, 10)  # after checkpoint 8
    process.send_signal(signal.SIGINT)
    signals = pathlib.Path(f"{progress}.signals")  # two signals sent at once merge into one
    while not signals.exists() or not signals.read_text():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert _lines(err) == [
        "error: stopped at once by Ctrl-C, without saving a checkpoint; run the same command "
        "again to resume from the last one."
    ]
    assert workdir_lib.complete_checkpoints(workdir) == [8]

    process, progress = _paced_run(tmp_path, workdir)
    _wait_for_step(process, progress, 10)  # restored 8: steps 9, 10 ...
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    (line,) = _lines(err)
    assert line.startswith("stopped by SIGINT after step 1") and "Run the same command" in line
    stopped = int(line.split("after step ")[1].split(";")[0])
    assert workdir_lib.complete_checkpoints(workdir) == [8, stopped]

    process, progress = _paced_run(tmp_path, workdir, kill_save=16)
    _, err = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, err
    assert workdir_lib.complete_checkpoints(workdir) == [8, stopped]  # 16 never finished
    assert any(not p.name.isdigit() for p in (workdir / "checkpoints").iterdir())  # its remains

    command = [sys.executable, "-m", "experiments.train", *SHORT, "--workdir", str(workdir)]
    process = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
    assert process.returncode == 0, process.stderr[-3000:]
    assert _lines(process.stderr) == []
    assert _results(workdir) == _results(reference)


# ------------------------------------------------------------- 10. newcomer comfort


def test_the_progress_bar_counts_from_after_the_first_compile():
    """A 10 s compile and then 0.1 s steps: the ETA is that of the steps alone."""
    import io

    from tqdm import tqdm

    now = [100.0]
    bar = tqdm(total=1000, initial=0, file=io.StringIO(), mininterval=0)
    bar._time = lambda: now[0]
    bar.reset()
    now[0] += 10.0  # the first step: compilation
    train_lib.start_clock(bar, 1)
    for _ in range(10):
        now[0] += 0.1
        bar.update(1)
    info = bar.format_dict
    assert info["n"] == 11 and info["elapsed"] == pytest.approx(1.0)
    remaining = (info["total"] - info["n"]) / info["rate"]
    assert remaining == pytest.approx(98.9, rel=0.01)  # 989 steps of 0.1 s, no compile in it


def test_help_is_plain_text_and_shows_the_named_config(capsys):
    with pytest.raises(SystemExit) as info:
        main_lib.main(["--config", "fashion_mnist_lt_r100", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":mod:" not in out
    assert "--config.data.name='fashion_mnist_lt'" in out
    assert "--config.data.imbalance_ratio=100.0" in out
    assert "the values of fashion_mnist_lt_r100" in out


def test_an_empty_shot_group_is_explained_in_the_results(tmp_path, capsys, monkeypatch):
    results = {"accuracy": 0.5, "many_shot_accuracy": None, "medium_shot_accuracy": 0.25}
    monkeypatch.setattr(train_lib, "train_and_evaluate", lambda *a, **k: results)
    assert main_lib.main(["--workdir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "  many_shot_accuracy     -  (no class has more than 100 training images: no " in out
    assert "  medium_shot_accuracy   25.00%" in out
