"""The global view: ``jax.jit`` over batches sharded on a mesh of 8 fake CPU devices
(tests/conftest.py) gives the single-device result of every lpjax function, with no
``axis_name``, for meshes of ``Auto`` and of ``Explicit`` axes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

NUM_DEVICES = 8
BATCH = 64
NUM_CLASSES = 10

pytestmark = pytest.mark.skipif(
    jax.device_count() < NUM_DEVICES, reason="needs 8 (fake) devices, see tests/conftest.py"
)

COUNTS = np.floor(500 * 50.0 ** (-np.random.default_rng(3).permutation(10) / 9)).astype(int)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (BATCH, NUM_CLASSES)).astype(np.float32)
    labels = (rng.integers(0, NUM_CLASSES // 2, BATCH) * 2).astype(np.int32)
    labels[:8] = 1  # one class lives on device 0 only
    where = rng.random(BATCH) < 0.8
    multihot = (rng.random((BATCH, NUM_CLASSES)) < 0.3).astype(np.int32)
    features = rng.normal(size=(BATCH, 4)).astype(np.float32)
    return logits, labels, where, multihot, features


def _chained_lpl(normalize):
    return lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS),
        lpjax.lpl_longtail_transform(
            COUNTS,
            num_head_classes=4,
            epsilon=0.1,
            delta_epsilon=0.4,
            head_scale=0.3,
            step_size=0.05,
            normalize=normalize,
        ),
    )


# name -> (fn(logits, labels, where, multihot, features) -> pytree of outputs)
CASES = {
    "la_lpl_paper_step": lambda u, y, w, m, f: _apply(_chained_lpl(False), u, y, w),
    "la_lpl_unit_step": lambda u, y, w, m, f: _apply(_chained_lpl(True), u, y, w),
    "lpl_mean_rule": lambda u, y, w, m, f: _apply(
        lpjax.lpl_mean_rule_transform(epsilon=0.2, delta_epsilon=1.0, step_size=0.05), u, y, w
    ),
    "mean_rule_signs_and_bounds": lambda u, y, w, m, f: lpjax.mean_rule_signs_and_bounds(
        u, y, epsilon=0.1, delta_epsilon=1.0, where=w
    ),
    "lpl_adaptive": lambda u, y, w, m, f: _apply(
        lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=4, target=0.3, step_size=0.05, initial_epsilon=0.5
        ),
        u,
        y,
        w,
    ),
    "lpl_meta": lambda u, y, w, m, f: _apply(_meta_after_steps(), u, y, w),
    "ldam": lambda u, y, w, m, f: _apply(lpjax.ldam_transform(COUNTS), u, y, w),
    "multilabel_longtail": lambda u, y, w, m, f: _apply(
        lpjax.lpl_multilabel_longtail_transform(
            COUNTS, num_head_classes=4, epsilon=0.1, delta_epsilon=0.3, step_size=0.05
        ),
        u,
        m,
        w,
    ),
    "multilabel_mean_rule": lambda u, y, w, m, f: _apply(
        lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.2, delta_epsilon=0.5, step_size=0.05),
        u,
        m,
        w,
    ),
    "relative_loss_variation": lambda u, y, w, m, f: lpjax.relative_loss_variation(
        u, u + jnp.sin(u), y, where=w
    ),
    "loss": lambda u, y, w, m, f: lpjax.softmax_cross_entropy_with_integer_labels(u, y, where=w),
    "isda": lambda u, y, w, m, f: _apply(
        lpjax.isda_transform(NUM_CLASSES, 4, lambda_0=0.5, total_steps=10),
        u,
        y,
        w,
        features=f,
        classifier={"kernel": jnp.ones((4, NUM_CLASSES)) / 4},
    ),
}


def _meta_after_steps():
    """A Meta-LPL transform whose state has learned signed bounds (set by hand)."""
    meta = lpjax.lpl_meta_transform(
        NUM_CLASSES, max_epsilon=0.5, step_size=0.05, meta_optimizer=optax.sgd(1.0)
    )
    phi = jnp.linspace(-2.0, 2.0, NUM_CLASSES)
    return meta._replace(init=lambda: lpjax.MetaLplState(phi, optax.EmptyState()))


def _apply(transform, logits, labels, where, **extra):
    return transform.apply(logits, labels, transform.init(), where=where, **extra)


def _run_on_mesh(fn, axis_type, arrays):
    mesh = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(axis_type,))
    with jax.set_mesh(mesh):
        sharded = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in arrays]
        out = jax.jit(fn)(*sharded)
        # Per-sample outputs stay split over the batch.
        for leaf in jax.tree.leaves(out):
            if leaf.ndim and leaf.shape[0] == BATCH:
                assert leaf.sharding.spec[0] == "data", leaf.sharding
        return jax.device_get(out)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_global_view_equals_one_device(case, axis_type):
    arrays = _batch()
    expected = jax.device_get(jax.jit(CASES[case])(*arrays))
    got = _run_on_mesh(CASES[case], axis_type, arrays)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got, expected)
    # The perturbation is not trivially zero where it should act.
    if case.startswith(("la_lpl", "lpl_", "multilabel_")):
        perturbed = jax.tree.leaves(expected)[0]
        assert np.abs(perturbed - arrays[0]).max() > 1e-3
