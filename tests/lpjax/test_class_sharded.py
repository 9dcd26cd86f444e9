"""The class-sharded solver on 8 fake CPU devices (tests/conftest.py) equals one device.

Every transform that runs the LPL solver, in the global view (``Auto`` axes inside
``jax.set_mesh``, ``Explicit`` axes) and under ``jax.shard_map``, on batches with padding
masks and NaN rows, a class count not divisible by 8 (and one smaller than 8), every class
present or only a few, float32 and bfloat16 logits. "Equal" means within 1e-6 of the
largest entry (float32; the sums run in another order), bitwise for bfloat16 outputs.
The compiled steps' collectives are read too: no ``[B, C]`` array crosses devices inside
the solver's loop.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax
from lpjax import _solver

NUM_DEVICES = 8
AXIS = "data"

pytestmark = pytest.mark.skipif(
    jax.device_count() < NUM_DEVICES, reason="needs 8 (fake) devices, see tests/conftest.py"
)

# name -> (batch size, classes, classes present, logits dtype)
BATCHES = {
    "all_classes_c13_f32": (64, 13, 13, jnp.float32),
    "few_classes_c5_bf16": (64, 5, 2, jnp.bfloat16),
    "few_classes_c24_f32": (48, 24, 3, jnp.float32),
}


def _batch(name, seed=0):
    batch_size, num_classes, present, dtype = BATCHES[name]
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (batch_size, num_classes)).astype(np.float32)
    classes = rng.choice(num_classes, present, replace=False)
    labels = classes[rng.integers(0, present, batch_size)].astype(np.int32)
    labels[:present] = classes  # every chosen class appears
    labels[-6:] = classes[0]  # one class also lives on the last device only
    where = rng.random(batch_size) < 0.85
    where[:present] = True
    logits[present + 1, 2] = np.nan  # a NaN row, and an infinite one
    logits[present + 3, 0] = np.inf
    counts = np.floor(500 * 50.0 ** (-np.arange(num_classes) / (num_classes - 1))).astype(int)
    return jnp.asarray(logits, dtype), jnp.asarray(labels), jnp.asarray(where), counts


def _meta(num_classes):
    """Meta-LPL whose state has learned signed bounds (set by hand)."""
    optimizer = optax.sgd(1.0)
    meta = lpjax.lpl_meta_transform(
        num_classes, max_epsilon=0.5, step_size=0.05, meta_optimizer=optimizer
    )
    phi = jnp.linspace(-2.0, 2.0, num_classes)
    return meta._replace(init=lambda: lpjax.MetaLplState(phi, optimizer.init(phi)))


def _low_accuracy_rule(logits, labels, where, axis_name):
    """A custom split: maximise the classes misclassified in this batch, minimise the rest."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1]) * where[:, None]
    wrong = (jnp.argmax(logits, -1) != labels)[:, None] * onehot
    if axis_name is not None:
        onehot, wrong = jax.lax.psum((onehot.sum(0), wrong.sum(0)), axis_name)
    else:
        onehot, wrong = onehot.sum(0), wrong.sum(0)
    signs = jnp.where(wrong > onehot / 2, 1, -1)
    return signs, jnp.full(logits.shape[-1], 0.3)


TRANSFORMS = {
    "la_lpl": lambda counts: lpjax.chain(
        lpjax.logit_adjustment_transform(counts),
        lpjax.lpl_longtail_transform(
            counts,
            num_head_classes=len(counts) // 3,
            epsilon=0.2,
            delta_epsilon=0.3,
            step_size=0.05,
        ),
    ),
    "lpl_mean_rule_unit_step": lambda counts: lpjax.lpl_mean_rule_transform(
        epsilon=0.2, delta_epsilon=0.5, step_size=0.05, normalize=True
    ),
    "lpl_custom_split": lambda counts: lpjax.lpl_transform(_low_accuracy_rule, step_size=0.05),
    "lpl_adaptive": lambda counts: lpjax.lpl_adaptive_longtail_transform(
        counts, num_head_classes=len(counts) // 3, target=0.3, step_size=0.05, initial_epsilon=0.5
    ),
    "lpl_meta": lambda counts: _meta(len(counts)),
}


def _apply(transform, logits, labels, where, axis_name=None):
    perturbed, state = transform.apply(
        logits, labels, transform.init(), where=where, axis_name=axis_name
    )
    return perturbed, state


def _global_view(fn, axis_type, *arrays):
    mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(axis_type,))
    with jax.set_mesh(mesh):
        sharded = [jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in arrays]
        return jax.device_get(jax.jit(fn)(*sharded))


def _shard_map(fn, *arrays, out_specs):
    mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
    mapped = jax.jit(
        jax.shard_map(
            functools.partial(fn, axis_name=AXIS),
            mesh=mesh,
            in_specs=(P(AXIS),) * len(arrays),
            out_specs=out_specs,
        )
    )
    return jax.device_get(
        mapped(*[jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in arrays])
    )


def _assert_equal(got, expected):
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    finite = np.isfinite(expected)
    if jnp.asarray(expected).dtype == jnp.bfloat16:
        np.testing.assert_array_equal(got[finite], expected[finite])
        return
    scale = max(np.abs(expected[finite]).max(), 1e-30)
    assert np.abs(got[finite] - expected[finite]).max() <= 1e-6 * scale


def _compare(got, expected):
    jax.tree.map(_assert_equal, got, expected)


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_on_8_devices_equals_one_device(name, batch):
    logits, labels, where, counts = _batch(batch)
    transform = TRANSFORMS[name](counts)
    run = functools.partial(_apply, transform)
    expected = jax.device_get(jax.jit(run)(logits, labels, where))
    finite = np.isfinite(np.asarray(logits, np.float32)).all(-1)
    moved = np.asarray(expected[0], np.float32)[finite] - np.asarray(logits, np.float32)[finite]
    assert np.abs(moved).max() > 1e-3  # LPL acts
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        _compare(_global_view(run, axis_type, logits, labels, where), expected)
    state_spec = jax.tree.map(lambda _: P(), expected[1])
    _compare(_shard_map(run, logits, labels, where, out_specs=(P(AXIS), state_spec)), expected)


def test_meta_gradient_on_8_devices_equals_one_device():
    logits, labels, where, _ = _batch("all_classes_c13_f32")
    num_classes = logits.shape[-1]
    meta = _meta(num_classes)
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(logits.shape[0], 6)), jnp.float32)
    meta_x = jnp.asarray(rng.normal(size=(num_classes, 6)), jnp.float32)
    meta_y = jnp.arange(num_classes)
    weights = jnp.asarray(rng.normal(size=(6, num_classes)), jnp.float32)
    valid = jnp.asarray(where & np.isfinite(np.asarray(logits)).all(-1))

    def step(x, y, w, axis_name=None):
        count = w.sum() if axis_name is None else jax.lax.psum(w.sum(), axis_name)

        def train_loss(weights, theta):
            u = x @ weights
            perturbed = u + meta.perturbation(u, y, theta, where=w, axis_name=axis_name)
            loss = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, y, where=w)
            return loss.sum() / count

        def meta_loss(weights):  # a replicated meta batch: the same loss on every device
            return lpjax.softmax_cross_entropy_with_integer_labels(meta_x @ weights, meta_y).mean()

        state, loss = meta.update(meta.init(), train_loss, meta_loss, weights, learning_rate=0.5)
        return state.phi, loss

    expected = jax.device_get(jax.jit(step)(features, labels, valid))
    assert np.abs(expected[0] - np.asarray(meta.init().phi)).max() > 1e-4  # phi moved
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        _compare(_global_view(step, axis_type, features, labels, valid), expected)
    _compare(_shard_map(step, features, labels, valid, out_specs=(P(), P())), expected)


def _lpl(logits, labels, where=None):
    num_classes = logits.shape[-1]
    return lpjax.lpl_perturbation(
        logits,
        labels,
        signs=jnp.where(jnp.arange(num_classes) % 2 == 0, 1, -1),
        bounds=jnp.full((num_classes,), 0.25),
        step_size=0.05,
        where=where,
    )


def test_batch_not_divisible_by_the_devices_is_padded():
    # Auto axes inside jax.set_mesh: a replicated batch of 60 rows on 8 devices.
    logits, labels, where, _ = _batch("all_classes_c13_f32")
    logits, labels, where = logits[:60], labels[:60], where[:60]
    expected = jax.jit(_lpl)(logits, labels, where)
    mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Auto,))
    with jax.set_mesh(mesh):
        got = jax.jit(_lpl)(logits, labels, where)
        got_unmasked = jax.jit(_lpl)(logits, labels)
        hlo = jax.jit(_lpl).lower(logits, labels, where).as_text()
    assert "all_to_all" in hlo  # the class layout, not the row layout
    _assert_equal(got, expected)
    _assert_equal(got_unmasked, jax.jit(_lpl)(logits, labels))


def test_two_dimensional_mesh_uses_every_device():
    # The batch split over "data" only; the solver lays it out over both mesh axes.
    logits, labels, where, _ = _batch("few_classes_c24_f32")
    expected = jax.jit(_lpl)(logits, labels, where)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        arrays = [
            jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (logits, labels, where)
        ]
        got = jax.jit(_lpl)(*arrays)
    _assert_equal(got, expected)


def test_row_layout_is_still_reachable_and_equal():
    logits, labels, where, _ = _batch("all_classes_c13_f32")
    expected = jax.jit(_lpl)(logits, labels, where)
    with _solver.row_layout():
        got = _global_view(lambda *a: _lpl(*a), AxisType.Explicit, logits, labels, where)
    _assert_equal(got, expected)


def _loop_collectives(fn, *arrays):
    """Shapes of the collectives inside ``while`` loops of the compiled global-view ``fn``."""
    mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        sharded = [jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in arrays]
        text = jax.jit(fn).lower(*sharded).compile().as_text()
    from benchmarks import _hlo

    found = _hlo.collectives(text, loop_trips=10, num_devices=NUM_DEVICES)
    return [c for c in found if c.runs > 1], found


def test_no_batch_by_class_array_crosses_devices_inside_the_loop():
    logits, labels, where, _ = _batch("few_classes_c24_f32")
    in_loop, found = _loop_collectives(lambda *a: _lpl(*a), logits, labels, where)
    batch_size, num_classes = logits.shape
    assert [c.kind for c in in_loop] == ["all-reduce"]
    assert in_loop[0].nbytes == 2 * batch_size * 4  # [2, B] float32 per inner step
    # Outside the loop: two all-to-alls of the logits, no more.
    outside = sum(c.nbytes for c in found if c.runs == 1)
    assert outside <= 2 * 4 * batch_size * num_classes // NUM_DEVICES * 2 + 16 * batch_size
    with _solver.row_layout():  # the comparison can fail: the row layout is caught
        in_loop, _ = _loop_collectives(lambda *a: _lpl(*a), logits, labels, where)
    assert max(c.nbytes for c in in_loop) >= 4 * num_classes * num_classes
