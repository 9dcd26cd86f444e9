"""The code of the README and of docs/library.md runs as written: the blocks that a
``<!-- test: NAME -->`` line marks, in order."""

import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def marked_blocks(path: pathlib.Path) -> dict[str, str]:
    """``{name: code}`` of the python blocks right after a ``<!-- test: name -->`` line."""
    text = path.read_text()
    found = re.findall(r"<!-- test: ([\w-]+) -->\n```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def _run(code: str, namespace: dict) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_readme_single_device_global_view_and_shard_map_steps_agree():
    blocks = marked_blocks(REPO / "README.md")
    assert list(blocks) == ["single-device", "global-view", "shard-map"]
    ns = _run(blocks["single-device"], {})
    # One step from zero weights lowers the (perturbed) loss of the batch.
    state = tuple(ns[k] for k in ("params", "opt_state", "transform_state"))
    batch = (ns["images"], ns["labels"])
    _, _, _, second_loss = ns["train_step"](*state, *batch)
    assert float(second_loss) < float(ns["loss"])
    expected = jax.device_get(ns["train_step"](*state, *batch))  # one device, whole batch

    _run(blocks["global-view"], ns)
    assert jax.device_count() == 8 and ns["images"].sharding.spec == jax.P("data")
    got = (ns["params"], ns["opt_state"], ns["transform_state"], ns["loss"])
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7), got, expected)

    _run(blocks["shard-map"], ns)
    sharded = jax.device_get(ns["sharded_train_step"](*state, ns["images"], ns["labels"]))
    jax.tree.map(
        lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7), sharded, expected
    )


def test_library_guide_meta_lpl_example_runs_and_learns_bounds():
    ns = _run(marked_blocks(REPO / "docs" / "library.md")["meta-lpl"], {})
    theta = np.asarray(ns["meta"].theta(ns["state"]))
    assert theta.shape == (3,) and np.all(theta != 0)  # one meta step moved every class
    assert np.isfinite(float(ns["loss"])) and ns["perturbed"].shape == (8, 3)
    # The meta loss is that of the looked-ahead weights: below the loss of w = 0, log 3.
    assert 0 < float(ns["loss"]) < float(jnp.log(3.0))
