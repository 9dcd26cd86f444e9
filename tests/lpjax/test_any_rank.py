"""Logits of any rank: ``[B, T, C]`` and ``[B, H, W, C]`` give the flattened ``[B*T, C]``
result, reshaped, on one device and on 8 (global view with ``Explicit`` axes, and
``jax.shard_map``); class statistics run over every leading position."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

NUM_CLASSES = 6
FEATURES = 3
SHAPES = {"sequence": (8, 5), "dense": (8, 2, 3)}  # leading shapes [B, T], [B, H, W]
COUNTS = np.array([400, 200, 90, 40, 15, 5])


def _meta():
    optimizer = optax.sgd(1.0)
    meta = lpjax.lpl_meta_transform(
        NUM_CLASSES, max_epsilon=0.5, step_size=0.05, meta_optimizer=optimizer
    )
    phi = jnp.linspace(-2.0, 2.0, NUM_CLASSES)
    return meta._replace(init=lambda: lpjax.MetaLplState(phi, optimizer.init(phi)))


def _la_lpl():
    return lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS),
        lpjax.lpl_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=0.2, delta_epsilon=0.2, step_size=0.05
        ),
    )


def _apply(transform, logits, labels, where, **extra):
    return transform.apply(logits, labels, transform.init(), where=where, **extra)


def _isda():
    return lpjax.isda_transform(NUM_CLASSES, FEATURES, lambda_0=0.5, total_steps=10)


KERNEL = {"kernel": jnp.ones((FEATURES, NUM_CLASSES))}

# name -> fn(logits, labels, where, multihot, features) -> outputs; the same function
# runs on the flattened batch and on the batch of any rank.
CASES = {
    "la_lpl": lambda u, y, w, m, f: _apply(_la_lpl(), u, y, w)[0],
    "lpl_mean_rule": lambda u, y, w, m, f: _apply(
        lpjax.lpl_mean_rule_transform(epsilon=0.2, delta_epsilon=0.5, step_size=0.05), u, y, w
    )[0],
    "lpl_adaptive": lambda u, y, w, m, f: _apply(
        lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=2, target=0.3, step_size=0.05, initial_epsilon=0.5
        ),
        u,
        y,
        w,
    ),
    "lpl_meta": lambda u, y, w, m, f: _apply(_meta(), u, y, w)[0],
    "ldam": lambda u, y, w, m, f: _apply(lpjax.ldam_transform(COUNTS), u, y, w)[0],
    "isda": lambda u, y, w, m, f: _apply(_isda(), u, y, w, features=f, classifier=KERNEL),
    "multilabel_longtail": lambda u, y, w, m, f: _apply(
        lpjax.lpl_multilabel_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=0.2, step_size=0.05
        ),
        u,
        m,
        w,
    )[0],
    "lpl_perturbation": lambda u, y, w, m, f: lpjax.lpl_perturbation(
        u,
        y,
        signs=jnp.array([-1, -1, 1, 1, 1, 0]),
        bounds=jnp.full(6, 0.25),
        step_size=0.05,
        where=w,
    ),
    "mean_rule_signs_and_bounds": lambda u, y, w, m, f: lpjax.mean_rule_signs_and_bounds(
        u, y, epsilon=0.1, delta_epsilon=1.0, where=w
    ),
    "relative_loss_variation": lambda u, y, w, m, f: lpjax.relative_loss_variation(
        u, u + jnp.sin(u), y, where=w
    ),
    "loss": lambda u, y, w, m, f: lpjax.softmax_cross_entropy_with_integer_labels(u, y, where=w),
}
PER_SAMPLE = {"la_lpl", "lpl_mean_rule", "lpl_meta", "ldam", "multilabel_longtail"}
PER_SAMPLE |= {"lpl_perturbation", "loss"}


def _batch(lead, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (*lead, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, lead).astype(np.int32)
    where = rng.random(lead) < 0.8
    multihot = (rng.random((*lead, NUM_CLASSES)) < 0.3).astype(np.int32)
    features = rng.normal(size=(*lead, FEATURES)).astype(np.float32)
    return [jnp.asarray(x) for x in (logits, labels, where, multihot, features)]


def _flatten(x, lead):
    x = jnp.asarray(x)
    return x.reshape((-1, *x.shape[len(lead) :]))


def _reshaped(out, lead, per_sample):
    """The flattened run's outputs, per-sample ones given the leading shape back."""
    if not per_sample:
        return out
    return jax.tree.map(lambda x: x.reshape((*lead, *x.shape[1:])), out)


def _close(got, expected):
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6), got, expected)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_any_rank_equals_the_flattened_batch(case, shape):
    lead = SHAPES[shape]
    arrays = _batch(lead)
    fn = CASES[case]
    flat = jax.device_get(jax.jit(fn)(*[_flatten(a, lead) for a in arrays]))
    got = jax.device_get(jax.jit(fn)(*arrays))
    if case in PER_SAMPLE:
        expected = _reshaped(flat, lead, True)
    elif case in ("lpl_adaptive", "isda"):  # (perturbed logits, state)
        expected = (_reshaped(flat[0], lead, True), flat[1])
    else:  # class statistics
        expected = flat
    _close(got, expected)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("case", ["la_lpl", "lpl_meta", "multilabel_longtail", "isda"])
def test_any_rank_on_8_devices(case):
    lead = SHAPES["sequence"]
    arrays = _batch(lead)
    fn = CASES[case]
    expected = jax.device_get(jax.jit(fn)(*arrays))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    sharded = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in arrays]
    with jax.set_mesh(mesh):
        _close(jax.device_get(jax.jit(fn)(*sharded)), expected)

    def local(u, y, w, m, f):
        if case == "isda":
            return _apply(_isda(), u, y, w, axis_name="data", features=f, classifier=KERNEL)
        transform = {
            "la_lpl": _la_lpl(),
            "lpl_meta": _meta(),
            "multilabel_longtail": lpjax.lpl_multilabel_longtail_transform(
                COUNTS, num_head_classes=2, epsilon=0.2, step_size=0.05
            ),
        }[case]
        labels = m if case == "multilabel_longtail" else y
        return _apply(transform, u, labels, w, axis_name="data")[0]

    out_specs = P("data")
    if case == "isda":
        out_specs = (P("data"), jax.tree.map(lambda _: P(), expected[1]))
    mapped = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 5, out_specs=out_specs)
    )
    _close(jax.device_get(mapped(*sharded)), expected)


def test_labels_of_another_leading_shape_are_refused():
    logits, labels, where, _, _ = _batch(SHAPES["sequence"])
    with pytest.raises(ValueError, match=r"labels must have the logits' leading shape \(8, 5\)"):
        lpjax.lpl_perturbation(
            logits, labels[:, :4], signs=jnp.ones(6), bounds=jnp.ones(6), step_size=0.1
        )
    with pytest.raises(ValueError, match="where must have the logits' leading shape"):
        _apply(_la_lpl(), logits, labels, where.reshape(-1))
