"""The distribution as a user gets it: the wheel holds the library only, with its version,
licence and type marker; installed with no extras in a fresh venv, ``import lpjax`` pulls
in none of the trainer's dependencies and the README's library example runs."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

import lpjax

REPO = pathlib.Path(__file__).resolve().parents[2]
REPOSITORY_URL = "https://github.com/lpjax/lpjax"
# The trainer's dependencies (the `train` extra): the library must import none of them.
TRAINER_ONLY = ("flax", "tensorflow", "tensorflow_datasets", "orbax", "grain", "ml_collections")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_one_version_from_one_place():
    project = _pyproject()
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lpjax.__version__"}
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## {lpjax.__version__}" in changelog


def test_no_console_script_and_no_trainer_in_the_wheel():
    project = _pyproject()
    assert "scripts" not in project["project"]
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["lpjax", "lpjax.*"]


def test_readme_links_work_off_the_repository():
    """A package index renders the README without the repository: every link is absolute."""
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links
    relative = [link for link in links if not link.startswith(("https://", "#"))]
    assert not relative, relative
    for link in links:
        if "github.com" in link:
            assert link.startswith(REPOSITORY_URL + "/")
            local = link.removeprefix(REPOSITORY_URL + "/blob/main/").split("#")[0]
            if local != link:
                assert (REPO / local).exists(), link


def _build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
    """Builds the wheel from a copy of the files it is made of (no build folder in the tree)."""
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lpjax", source / "lpjax", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--no-index", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


_CHECK_INSTALLED = """
import json, pathlib, sys
import lpjax
result = {
    "file": lpjax.__file__,
    "version": lpjax.__version__,
    "py_typed": (pathlib.Path(lpjax.__file__).parent / "py.typed").is_file(),
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
}
try:
    import experiments  # noqa: F401
    result["experiments"] = True
except ImportError:
    result["experiments"] = False
print(json.dumps(result))
"""


@pytest.mark.slow
def test_wheel_installs_the_library_alone_and_the_readme_example_runs(tmp_path):
    wheel = _build_wheel(tmp_path)
    version = lpjax.__version__
    assert wheel.name == f"lpjax-{version}-py3-none-any.whl"
    dist_info = f"lpjax-{version}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert all(name.startswith(("lpjax/", f"{dist_info}/")) for name in names), names
    assert "lpjax/__init__.py" in names and "lpjax/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert f"{dist_info}/entry_points.txt" not in names  # no console script
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nRequires-Python: >=3.11\n" in metadata
    assert f"\nProject-URL: Source, {REPOSITORY_URL}\n" in metadata
    assert "Classifier: Typing :: Typed" in metadata

    # A fresh venv with no extras. Offline, jax, numpy and optax come from the environment
    # that runs the tests: a plain path line in a .pth file (not addsitedir, so that this
    # environment's own .pth files, an editable lpjax among them, are not processed).
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = {pathlib.Path(pathlib.Path(m.__file__).parents[1]) for m in _host_packages()}
    (pathlib.Path(purelib) / "host-dependencies.pth").write_text(
        "".join(f"{path}\n" for path in sorted(host))
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    outside = tmp_path / "elsewhere"  # not the checkout: neither lpjax/ nor experiments/
    outside.mkdir()

    def run(code: str) -> str:
        process = subprocess.run(
            [str(python), "-W", "error::DeprecationWarning", "-c", code],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert process.returncode == 0, process.stderr[-3000:]
        return process.stdout

    installed = json.loads(run(_CHECK_INSTALLED).strip().splitlines()[-1])
    assert pathlib.Path(installed["file"]).is_relative_to(venv), installed["file"]
    assert installed["version"] == version and installed["py_typed"]
    assert not installed["experiments"]
    pulled_in = sorted(set(installed["modules"]) & set(TRAINER_ONLY))
    assert not pulled_in, f"import lpjax imported {pulled_in}"

    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "lpjax.chain" in example  # the library example, the first python block
    out = run(example + "\nprint(float(loss))\n")
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # the checkout's lpjax
    assert float(out.strip().splitlines()[-1]) == pytest.approx(float(namespace["loss"]), 1e-6)


def _host_packages():
    import jax
    import numpy
    import optax

    return (jax, numpy, optax)
