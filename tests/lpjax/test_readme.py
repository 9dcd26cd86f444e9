"""The README's library example runs as written and trains."""

import contextlib
import io
import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_train_step_example_runs_and_lowers_the_loss():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has a python example"
    output = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(output):
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    final_loss = float(output.getvalue().split()[-1])
    # Zero weights give the initial (perturbed) loss; three SGD steps lower it.
    first_loss = namespace["loss_fn"](
        namespace["apply_fn"](
            {"w": namespace["params"]["w"] * 0, "b": namespace["params"]["b"] * 0},
            namespace["images"],
        ),
        namespace["labels"],
        namespace["transform"].init(),
    )[0].mean()
    assert final_loss < float(first_loss)


def test_readme_shard_map_example_equals_the_single_device_step():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README has the shard_map example"
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    before = {k: namespace[k] for k in ("params", "opt_state", "transform_state")}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["jax"].device_count() == 8  # tests/conftest.py: 8 fake devices
    params, _, _, loss = namespace["train_step"](
        before["params"],
        before["opt_state"],
        before["transform_state"],
        namespace["images"],
        namespace["labels"],
    )
    # Same global batch, same start: the sharded step (gradients summed once, by
    # shard_map's autodiff) gives the single-device loss and update.
    np.testing.assert_allclose(float(namespace["loss"]), float(loss), rtol=1e-5)
    for got, want in zip(
        jax.tree.leaves(namespace["params"]), jax.tree.leaves(params), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
