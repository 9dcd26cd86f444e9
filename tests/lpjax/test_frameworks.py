"""docs/frameworks.md runs as written: the flax.nnx, linen and equinox steps train, and
each gives the loss of the same step written with plain functions."""

import numpy as np
import pytest
from test_readme import REPO, _run, marked_blocks

import lpjax


@pytest.fixture(scope="module")
def blocks():
    found = marked_blocks(REPO / "docs" / "frameworks.md")
    assert list(found) == ["setup", "nnx", "linen", "equinox"]
    return found


def _plain_loss(ns, logits):
    perturbed, _ = ns["transform"].apply(logits, ns["labels"], ns["transform"].init())
    return float(lpjax.softmax_cross_entropy_with_integer_labels(perturbed, ns["labels"]).mean())


def test_nnx(blocks):
    pytest.importorskip("flax")
    ns = _run(blocks["setup"] + blocks["nnx"], {})
    assert np.isfinite(float(ns["nnx_loss"])) and ns["nnx_predictions"].shape == (64,)
    # The state was carried out of nnx.jit: the chain's tuple state, as init() gives it.
    state = ns["model"].transform_state.get_value()
    assert isinstance(state, tuple) and len(state) == 2
    ns["model"].train()
    second = ns["nnx_train_step"](ns["model"], ns["optimizer"], ns["images"], ns["labels"])
    assert np.isfinite(float(second))


def test_linen(blocks):
    pytest.importorskip("flax")
    ns = _run(blocks["setup"] + blocks["linen"], {})
    import jax

    initial = ns["linen_model"].init(jax.random.key(0), ns["images"])["params"]
    logits = ns["linen_model"].apply({"params": initial}, ns["images"])
    np.testing.assert_allclose(float(ns["linen_loss"]), _plain_loss(ns, logits), rtol=1e-5)
    after = ns["linen_model"].apply({"params": ns["params"]}, ns["images"])
    assert _plain_loss(ns, after) < float(ns["linen_loss"])


def test_equinox(blocks):
    eqx = pytest.importorskip("equinox")
    import jax

    ns = _run(blocks["setup"] + blocks["equinox"], {})
    initial = eqx.nn.MLP(16, 10, width_size=32, depth=1, key=jax.random.key(0))
    logits = jax.vmap(initial)(ns["images"])
    np.testing.assert_allclose(float(ns["eqx_loss"]), _plain_loss(ns, logits), rtol=1e-5)
    after = jax.vmap(ns["eqx_model"])(ns["images"])
    assert _plain_loss(ns, after) < float(ns["eqx_loss"])
    assert ns["eqx_predictions"].shape == (64,)
