"""Data parallelism on 8 fake CPU devices (tests/conftest.py): with ``axis_name``,
``jax.shard_map`` and ``jax.pmap`` give the single-device result of the whole batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

NUM_DEVICES = 8
GLOBAL_BATCH = 64
AXIS = "data"

pytestmark = pytest.mark.skipif(
    jax.device_count() < NUM_DEVICES, reason="needs 8 (fake) devices, see tests/conftest.py"
)


def _batch(num_classes, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (GLOBAL_BATCH, num_classes)).astype(np.float32)
    # Only some classes appear; device shards hold different classes.
    labels = rng.integers(0, num_classes // 2, GLOBAL_BATCH) * 2
    labels[:8] = 1  # one class lives on device 0 only
    where = rng.random(GLOBAL_BATCH) < 0.8
    signs = rng.choice([-1, 0, 1], num_classes)
    bounds = rng.uniform(0.05, 0.3, num_classes).astype(np.float32)
    counts = np.floor(500 * 50.0 ** (-rng.permutation(num_classes) / (num_classes - 1)))
    return logits, labels, where, signs, bounds, counts.astype(int)


def _shard_map(f, in_specs, out_specs, **kwargs):
    """shard_map over a 1-D "data" mesh; the inputs are first laid out as ``in_specs`` say."""
    mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,))
    mapped = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **kwargs))

    def run(*args):
        args = [
            jax.device_put(a, NamedSharding(mesh, spec))
            for a, spec in zip(args, in_specs, strict=True)
        ]
        return mapped(*args)

    return run


def _pmap(f, *args, sharded):
    """pmap over AXIS; ``sharded[i]`` says whether argument i is split over the batch."""
    local = GLOBAL_BATCH // NUM_DEVICES
    args = [
        jnp.reshape(a, (NUM_DEVICES, local) + a.shape[1:]) if s else a
        for a, s in zip(args, sharded, strict=True)
    ]
    in_axes = tuple(0 if s else None for s in sharded)
    return jax.pmap(f, axis_name=AXIS, in_axes=in_axes)(*args)


def _unshard(x):
    """[devices, local, ...] -> [global, ...]."""
    return np.asarray(x).reshape((GLOBAL_BATCH,) + x.shape[2:])


def _replicated(x):
    """pmap output of a replicated value: every device holds the same thing."""
    x = np.asarray(x)
    for d in range(1, NUM_DEVICES):
        np.testing.assert_array_equal(x[d], x[0])
    return x[0]


@pytest.mark.parametrize("num_classes", [10, 100])
def test_lpl_perturbation(num_classes):
    logits, labels, where, signs, bounds, _ = _batch(num_classes, seed=num_classes)

    def f(u, y, s, b, w, axis_name=None):
        return lpjax.lpl_perturbation(
            u, y, signs=s, bounds=b, step_size=0.05, where=w, axis_name=axis_name
        )

    args = tuple(map(jnp.asarray, (logits, labels, signs, bounds, where)))
    single = np.asarray(jax.jit(f)(*args))
    np.testing.assert_allclose(
        single,
        ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05), where),
        atol=1e-5,
    )
    assert np.abs(single[labels == 1]).max() > 0.01  # the device-0-only class moves

    pmapped = _pmap(
        lambda *a: f(*a, axis_name=AXIS), *args, sharded=(True, True, False, False, True)
    )
    np.testing.assert_allclose(_unshard(pmapped), single, atol=1e-5)

    # jax.shard_map as users call it (check_vma=True, the default).
    sharded = _shard_map(
        lambda *a: f(*a, axis_name=AXIS),
        in_specs=(P(AXIS), P(AXIS), P(), P(), P(AXIS)),
        out_specs=P(AXIS),
    )(*args)
    np.testing.assert_allclose(sharded, single, atol=1e-5)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_mean_rule_signs_and_bounds(num_classes):
    logits, labels, where, _, _, _ = _batch(num_classes, seed=num_classes + 1)

    def f(u, y, w, axis_name=None):
        return lpjax.mean_rule_signs_and_bounds(
            u, y, epsilon=0.1, delta_epsilon=2.0, where=w, axis_name=axis_name
        )

    args = tuple(map(jnp.asarray, (logits, labels, where)))
    signs, bounds = map(np.asarray, jax.jit(f)(*args))
    ref_signs, ref_bounds = ref.mean_rule_signs_and_bounds(logits, labels, 0.1, 2.0, where)
    np.testing.assert_array_equal(signs, ref_signs)
    np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-5, atol=1e-6)

    sharded = _shard_map(
        lambda *a: f(*a, axis_name=AXIS), in_specs=(P(AXIS),) * 3, out_specs=(P(), P())
    )(*args)
    np.testing.assert_array_equal(sharded[0], signs)
    np.testing.assert_allclose(sharded[1], bounds, rtol=1e-5, atol=1e-6)

    pm_signs, pm_bounds = _pmap(lambda *a: f(*a, axis_name=AXIS), *args, sharded=(True,) * 3)
    np.testing.assert_array_equal(_replicated(pm_signs), signs)
    np.testing.assert_allclose(_replicated(pm_bounds), bounds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_relative_loss_variation(num_classes):
    logits, labels, where, _, _, _ = _batch(num_classes, seed=num_classes + 2)
    perturbed = (logits + np.random.default_rng(0).normal(0, 0.5, logits.shape)).astype(np.float32)

    def f(u, up, y, w, axis_name=None):
        return lpjax.relative_loss_variation(u, up, y, where=w, axis_name=axis_name)

    args = tuple(map(jnp.asarray, (logits, perturbed, labels, where)))
    single = np.asarray(jax.jit(f)(*args))
    expected = ref.relative_loss_variation(logits, perturbed, labels, where)
    np.testing.assert_array_equal(np.isnan(single), np.isnan(expected))
    assert np.isnan(single).any()
    np.testing.assert_allclose(single, expected, rtol=1e-4, atol=1e-6)

    sharded = _shard_map(lambda *a: f(*a, axis_name=AXIS), in_specs=(P(AXIS),) * 4, out_specs=P())(
        *args
    )
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)

    pmapped = _pmap(lambda *a: f(*a, axis_name=AXIS), *args, sharded=(True,) * 4)
    np.testing.assert_allclose(_replicated(pmapped), single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_la_lpl_loss(num_classes):
    logits, labels, where, _, _, counts = _batch(num_classes, seed=num_classes + 3)
    transform = lpjax.chain(
        lpjax.logit_adjustment_transform(counts, tau=1.0),
        lpjax.lpl_longtail_transform(
            counts,
            num_head_classes=num_classes // 3,
            epsilon=0.1,
            step_size=0.05,
            delta_epsilon=0.2,
        ),
    )

    def f(u, y, w, axis_name=None):
        perturbed, _ = transform.apply(u, y, transform.init(), where=w, axis_name=axis_name)
        loss = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, y, where=w)
        return loss, perturbed

    args = tuple(map(jnp.asarray, (logits, labels, where)))
    loss, perturbed = map(np.asarray, jax.jit(f)(*args))
    adjusted = (logits + ref.logit_adjustment(counts)).astype(np.float32)
    signs, bounds = ref.longtail_signs_and_bounds(counts, num_classes // 3, 0.1, 0.2)
    expected = adjusted + ref.lpl_perturbation(
        adjusted, labels, signs, bounds.astype(np.float32), np.float32(0.05), where
    )
    np.testing.assert_allclose(perturbed, expected, atol=2e-5)
    np.testing.assert_allclose(
        loss, np.where(where, ref.cross_entropy(expected, labels), 0.0), rtol=1e-5, atol=1e-5
    )

    pm_loss, pm_perturbed = _pmap(lambda *a: f(*a, axis_name=AXIS), *args, sharded=(True,) * 3)
    np.testing.assert_allclose(_unshard(pm_loss), loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_unshard(pm_perturbed), perturbed, atol=1e-5)

    sharded = _shard_map(
        lambda *a: f(*a, axis_name=AXIS), in_specs=(P(AXIS),) * 3, out_specs=(P(AXIS), P(AXIS))
    )(*args)
    np.testing.assert_allclose(sharded[0], loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sharded[1], perturbed, atol=1e-5)


def test_lpl_perturbation_shard_map_without_vma_check():
    # The numbers under shard_map, independently of the varying-axis type check
    # that the default shard_map applies (tested above).
    logits, labels, where, signs, bounds, _ = _batch(10, seed=7)
    args = tuple(map(jnp.asarray, (logits, labels, signs, bounds, where)))
    sharded = _shard_map(
        lambda u, y, s, b, w: lpjax.lpl_perturbation(
            u, y, signs=s, bounds=b, step_size=0.05, where=w, axis_name=AXIS
        ),
        in_specs=(P(AXIS), P(AXIS), P(), P(), P(AXIS)),
        out_specs=P(AXIS),
        check_vma=False,
    )(*args)
    expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05), where)
    np.testing.assert_allclose(sharded, expected, atol=1e-5)


def test_missing_axis_name_inside_shard_map_is_refused():
    logits, labels, where, signs, bounds, counts = _batch(10, seed=3)
    calls = {
        "lpl_perturbation": lambda u, y: lpjax.lpl_perturbation(
            u, y, signs=signs, bounds=bounds, step_size=0.05
        ),
        "mean_rule_signs_and_bounds": lambda u, y: lpjax.mean_rule_signs_and_bounds(
            u, y, epsilon=0.1
        )[1],
        "relative_loss_variation": lambda u, y: lpjax.relative_loss_variation(u, u, y),
        "lpl_mean_rule_transform": lambda u, y: lpjax.lpl_mean_rule_transform(
            epsilon=0.1, step_size=0.05
        ).apply(u, y, ())[0],
    }
    for name, call in calls.items():
        run = _shard_map(call, in_specs=(P(AXIS), P(AXIS)), out_specs=P())
        with pytest.raises(ValueError, match="Pass axis_name='data'"):
            run(logits, labels)
        print(name, "refused")
