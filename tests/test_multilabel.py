"""Tests of lpjax._multilabel against a plain NumPy float64 reference (docs/method.md, section 4).

The reference below is written straight from the specification, one (class,
polarity) pair at a time, independent of lpjax.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import lpjax
from lpjax import _multilabel as ml

# ---------------------------------------------------------------------------
# NumPy float64 reference.


def ref_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(
        x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    )


def ref_num_steps(bound, step_size):
    return int(math.floor(float(bound) / float(step_size) + 1e-6))


def ref_members(labels, where, c, polarity):
    labels = np.asarray(labels)
    batch = labels.shape[0]
    valid = np.ones(batch, bool) if where is None else np.asarray(where, bool)
    return [i for i in range(batch) if valid[i] and labels[i, c] == polarity]


def ref_solver(logits, labels, pos_signs, neg_signs, pos_bounds, neg_bounds, step_size, where=None):
    u = np.asarray(logits, np.float64)
    batch, num_classes = u.shape
    delta = np.zeros((batch, num_classes))
    for c in range(num_classes):
        for polarity, sign, bound in (
            (1, pos_signs[c], pos_bounds[c]),
            (0, neg_signs[c], neg_bounds[c]),
        ):
            members = ref_members(labels, where, c, polarity)
            if not members or sign == 0:
                continue
            d = 0.0
            for _ in range(ref_num_steps(bound, step_size)):
                g = np.mean([ref_sigmoid(u[i, c] + d) - polarity for i in members])
                d += float(sign) * float(step_size) * g
            for i in members:
                delta[i, c] = d
    return delta


def ref_longtail(counts, num_head, epsilon, delta_epsilon, negative_sign, negative_epsilon):
    n = [float(x) for x in counts]
    num_classes = len(n)
    order = sorted(range(num_classes), key=lambda c: (-n[c], c))
    head = set(order[:num_head])
    pos_signs, pos_bounds = np.zeros(num_classes, int), np.zeros(num_classes)
    for c in range(num_classes):
        if c in head:
            pos_signs[c], pos_bounds[c] = -1, epsilon + delta_epsilon * n[c] / max(n)
        else:
            pos_signs[c], pos_bounds[c] = 1, epsilon + delta_epsilon * min(n) / n[c]
    neg_signs = np.broadcast_to(negative_sign, (num_classes,))
    neg_bounds = np.broadcast_to(negative_epsilon, (num_classes,))
    return pos_signs, neg_signs, pos_bounds, neg_bounds


def ref_balanced(logits, labels, epsilon, delta_epsilon=0.0, where=None):
    u = np.asarray(logits, np.float64)
    num_classes = u.shape[1]
    q = {}
    for c in range(num_classes):
        for polarity in (1, 0):
            members = ref_members(labels, where, c, polarity)
            if members:
                probs = [ref_sigmoid(u[i, c] if polarity else -u[i, c]) for i in members]
                q[(c, polarity)] = float(np.mean(probs))
    signs = {1: np.zeros(num_classes, int), 0: np.zeros(num_classes, int)}
    bounds = {1: np.zeros(num_classes), 0: np.zeros(num_classes)}
    if q:
        tau = sum(q.values()) / len(q)
        for (c, polarity), qc in q.items():
            signs[polarity][c] = int(np.sign(tau - qc))
            bounds[polarity][c] = epsilon + delta_epsilon * abs(tau - qc)
    return signs[1], signs[0], bounds[1], bounds[0]


def ref_bce(u, y):
    u = np.asarray(u, np.float64)
    return np.logaddexp(0, -u) * y + np.logaddexp(0, u) * (1 - y)


def ref_asl(u, y, gamma_negative, gamma_positive, clip):
    p = ref_sigmoid(u)
    p_m = np.maximum(p - clip, 0)
    positive = (1 - p) ** gamma_positive * np.log(p)
    negative = p_m**gamma_negative * np.log(1 - p_m)
    return -(y * positive + (1 - y) * negative).mean(axis=-1)


# ---------------------------------------------------------------------------
# Helpers.

solver_jit = jax.jit(ml.multilabel_lpl_perturbation, static_argnames="axis_name")
longtail_jit = jax.jit(ml.multilabel_longtail_signs_and_bounds, static_argnames="num_head_classes")


def random_problem(seed, batch, num_classes, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((batch, num_classes))).astype(np.float32)
    rate = rng.uniform(0.05, 0.6, num_classes)
    labels = (rng.uniform(size=(batch, num_classes)) < rate).astype(np.int32)
    labels[:, 0] = 0  # class 0: no positive entry
    if num_classes > 1:
        labels[:, 1] = 1  # class 1: no negative entry
    step_size = 0.05
    # Bounds a whole number of steps plus a fraction, away from the floor's edge.
    pos_bounds = step_size * (rng.integers(0, 12, num_classes) + rng.uniform(0.2, 0.8, num_classes))
    neg_bounds = step_size * (rng.integers(0, 12, num_classes) + rng.uniform(0.2, 0.8, num_classes))
    pos_signs = rng.integers(-1, 2, num_classes)
    neg_signs = rng.integers(-1, 2, num_classes)
    return dict(
        logits=logits,
        labels=labels,
        pos_signs=pos_signs.astype(np.int32),
        neg_signs=neg_signs.astype(np.int32),
        pos_bounds=pos_bounds.astype(np.float32),
        neg_bounds=neg_bounds.astype(np.float32),
        step_size=step_size,
    )


def solve(p, where=None, axis_name=None, logits=None):
    return solver_jit(
        p["logits"] if logits is None else logits,
        p["labels"],
        positive_signs=p["pos_signs"],
        negative_signs=p["neg_signs"],
        positive_bounds=p["pos_bounds"],
        negative_bounds=p["neg_bounds"],
        step_size=p["step_size"],
        where=where,
        axis_name=axis_name,
    )


def loss_and_grad(loss_fn, logits, labels, state, **kwargs):
    """``(loss, logits_out, state_out, d sum(loss) / d logits)``."""

    def total(u):
        loss, out, new_state = loss_fn(u, labels, state, **kwargs)
        return loss.astype(jnp.float32).sum(), (loss, out, new_state)

    grad, (loss, out, new_state) = jax.grad(total, has_aux=True)(logits)
    return loss, out, new_state, grad


def ref_solve(p, where=None):
    return ref_solver(
        p["logits"],
        p["labels"],
        p["pos_signs"],
        p["neg_signs"],
        p["pos_bounds"],
        p["neg_bounds"],
        p["step_size"],
        where,
    )


# ---------------------------------------------------------------------------
# Solver.


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_solver_matches_reference(batch, num_classes):
    p = random_problem(batch * 1000 + num_classes, batch, num_classes)
    delta = jax.jit(lambda logits: solve(p, logits=logits))(p["logits"])
    assert delta.dtype == jnp.float32 and delta.shape == (batch, num_classes)
    np.testing.assert_allclose(delta, ref_solve(p), atol=2e-6, rtol=1e-5)


def test_solver_shares_one_delta_per_class_and_polarity():
    p = random_problem(0, 64, 10)
    delta = np.asarray(solve(p))
    for c in range(10):
        for polarity in (0, 1):
            values = delta[p["labels"][:, c] == polarity, c]
            if values.size:
                assert np.all(values == values[0])


def test_solver_moves_the_loss_in_the_direction_of_the_sign():
    p = random_problem(1, 64, 10)
    p["pos_bounds"][:] = p["neg_bounds"][:] = 0.3
    delta = np.asarray(solve(p), np.float64)
    loss, perturbed_loss = (
        ref_bce(p["logits"], p["labels"]),
        ref_bce(p["logits"] + delta, p["labels"]),
    )
    for c in range(10):
        for polarity, signs in ((1, p["pos_signs"]), (0, p["neg_signs"])):
            rows = p["labels"][:, c] == polarity
            if rows.any():
                change = perturbed_loss[rows, c].mean() - loss[rows, c].mean()
                assert np.sign(change) == signs[c], (c, polarity)


def test_solver_leaves_absent_polarities_untouched():
    p = random_problem(2, 16, 4)
    where = np.ones(16, bool)
    where[:4] = False
    p["labels"][:, 2] = 0
    p["labels"][:4, 2] = 1  # class 2's only positives are masked samples
    p["pos_signs"][:] = 1
    p["pos_bounds"][:] = 0.5
    delta = np.asarray(solve(p, where=jnp.asarray(where)))
    assert np.all(delta[:4] == 0)
    no_positive = dict(p, pos_signs=np.where(np.arange(4) == 2, 0, p["pos_signs"]))
    np.testing.assert_array_equal(delta, solve(no_positive, where=jnp.asarray(where)))
    # Class 0 has no positive, class 1 no negative: their other polarity still moves.
    assert np.all(delta[:, 1][where] != 0)


def test_solver_where_equals_slicing():
    p = random_problem(3, 64, 10)
    where = np.random.default_rng(3).uniform(size=64) < 0.6
    delta = np.asarray(jax.jit(lambda w: solve(p, where=w))(where))
    sliced = dict(p, logits=p["logits"][where], labels=p["labels"][where])
    np.testing.assert_allclose(delta[where], solve(sliced), atol=1e-6)
    assert np.all(delta[~where] == 0)
    np.testing.assert_allclose(delta, ref_solve(p, where), atol=2e-6)


def test_solver_bounds_hold():
    p = random_problem(4, 64, 100)
    delta = np.asarray(solve(p), np.float64)
    for c in range(100):
        for polarity, signs, bounds in (
            (1, p["pos_signs"], p["pos_bounds"]),
            (0, p["neg_signs"], p["neg_bounds"]),
        ):
            steps = ref_num_steps(bounds[c], p["step_size"]) if signs[c] else 0
            assert steps * p["step_size"] <= bounds[c] + 1e-7
            values = delta[p["labels"][:, c] == polarity, c]
            assert np.all(np.abs(values) <= steps * p["step_size"] + 1e-6)


def test_solver_accepts_bool_and_float_labels():
    p = random_problem(5, 7, 10)
    expected = solve(p)
    for labels in (p["labels"].astype(bool), p["labels"].astype(np.float32)):
        np.testing.assert_array_equal(solve(dict(p, labels=labels)), expected)
    # Traced non-binary entries (unreportable under jit) belong to neither polarity.
    labels = p["labels"].astype(np.float32)
    labels[[0, 3, 5], [2, 4, 4]] = 0.5
    delta = solve(dict(p, labels=labels))
    assert np.all(np.asarray(delta)[[0, 3, 5], [2, 4, 4]] == 0)
    np.testing.assert_allclose(delta, ref_solve(dict(p, labels=labels)), atol=2e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_extreme_logits_are_finite(dtype):
    p = random_problem(6, 16, 10)
    rng = np.random.default_rng(6)
    logits = jnp.asarray(np.where(rng.uniform(size=(16, 10)) < 0.5, -1e4, 1e4), dtype)
    p["pos_bounds"][:] = p["neg_bounds"][:] = 0.5
    delta = solve(p, logits=logits)
    assert delta.dtype == dtype
    assert np.all(np.isfinite(np.asarray(delta, np.float32)))
    assert np.all(np.abs(np.asarray(delta, np.float32)) <= 0.5 + 1e-2)
    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.2, step_size=0.05)
    loss_fns = (
        ml.perturbed_sigmoid_binary_cross_entropy(transform),
        ml.focal_loss(),
        ml.asymmetric_loss(),
        ml.asymmetric_loss(clip=0.0, gamma_positive=1.0),
    )

    @jax.jit
    def losses_and_grads(u):
        return [loss_and_grad(f, u, p["labels"], transform.init()) for f in loss_fns]

    for loss, out, _, grad in losses_and_grads(logits):
        assert loss.dtype == dtype and out.dtype == dtype and grad.dtype == dtype
        assert np.all(np.isfinite(np.asarray(loss, np.float32)))
        assert np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_bfloat16_solver_uses_float32_statistics():
    p = random_problem(7, 64, 10)
    logits16 = jnp.asarray(p["logits"], jnp.bfloat16)
    delta16 = solve(p, logits=logits16)
    expected = solve(p, logits=logits16.astype(jnp.float32)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(delta16, np.float32), np.asarray(expected, np.float32))


def test_solver_traces_once_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(logits, labels, pos_signs, neg_signs, pos_bounds, neg_bounds, step_size, where):
        return ml.multilabel_lpl_perturbation(
            logits,
            labels,
            positive_signs=pos_signs,
            negative_signs=neg_signs,
            positive_bounds=pos_bounds,
            negative_bounds=neg_bounds,
            step_size=step_size,
            where=where,
        )

    for seed in range(3):
        p = random_problem(seed, 8, 5)
        args = [
            p[k] for k in ("logits", "labels", "pos_signs", "neg_signs", "pos_bounds", "neg_bounds")
        ]
        fn(*args, jnp.float32(0.05 * (seed + 1)), jnp.arange(8) < 5 + seed)
    chex.clear_trace_counter()


# ---------------------------------------------------------------------------
# Splits.


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_longtail_split_matches_reference(num_classes):
    rng = np.random.default_rng(num_classes)
    counts = rng.integers(1, 40, num_classes)  # ties likely
    num_head = num_classes // 3
    out = longtail_jit(counts, num_head_classes=num_head, epsilon=0.1, delta_epsilon=0.4)
    expected = ref_longtail(counts, num_head, 0.1, 0.4, -1, 0.1)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert out[0].dtype == out[1].dtype == jnp.int32
    # Every choice configurable: per-class negative signs and bounds.
    negative_sign = rng.integers(-1, 2, num_classes)
    negative_epsilon = rng.uniform(0, 1, num_classes)
    out = longtail_jit(
        counts,
        num_head_classes=num_head,
        epsilon=0.1,
        negative_sign=negative_sign,
        negative_epsilon=negative_epsilon,
    )
    expected = ref_longtail(counts, num_head, 0.1, 0.0, negative_sign, negative_epsilon)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_longtail_split_ranks_by_count_not_index():
    pos_signs, neg_signs, pos_bounds, neg_bounds = ml.multilabel_longtail_signs_and_bounds(
        [5, 100, 5, 50], num_head_classes=2, epsilon=0.2, negative_sign=0, negative_epsilon=0.3
    )
    assert pos_signs.tolist() == [1, -1, 1, -1]
    assert neg_signs.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(neg_bounds, 0.3)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_balanced_split_matches_reference(batch, num_classes):
    p = random_problem(batch + 7 * num_classes, batch, num_classes)
    where = np.random.default_rng(batch).uniform(size=batch) < 0.8
    out = jax.jit(
        lambda u, y, w: ml.multilabel_balanced_signs_and_bounds(
            u, y, epsilon=0.1, delta_epsilon=0.5, where=w
        )
    )(p["logits"], p["labels"], where)
    expected = ref_balanced(p["logits"], p["labels"], 0.1, 0.5, where)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # Absent pairs: class 0 has no positive, class 1 no negative.
    assert out[0][0] == 0 and out[2][0] == 0
    if num_classes > 1:
        assert out[1][1] == 0 and out[3][1] == 0


def test_balanced_split_all_masked_gives_zero():
    p = random_problem(8, 4, 3)
    out = jax.jit(
        lambda u, y, w: ml.multilabel_balanced_signs_and_bounds(u, y, epsilon=0.1, where=w)
    )(p["logits"], p["labels"], jnp.zeros(4, bool))
    for x in out:
        assert np.all(np.asarray(x) == 0)


# ---------------------------------------------------------------------------
# Transforms and losses.


def test_lpl_loss_value_and_gradient():
    p = random_problem(9, 32, 10)
    counts = np.random.default_rng(9).integers(1, 100, 10)
    where = np.arange(32) < 27
    transform = lpjax.chain(
        lpjax.identity(),
        ml.lpl_multilabel_longtail_transform(
            counts, num_head_classes=4, epsilon=0.3, step_size=0.05, delta_epsilon=0.2
        ),
    )
    loss_fn = ml.perturbed_sigmoid_binary_cross_entropy(transform)

    def total(u):
        loss, perturbed, state = loss_fn(u, p["labels"], transform.init(), where=where)
        return loss.sum(), (loss, perturbed)

    grad, (loss, perturbed) = jax.jit(jax.grad(total, has_aux=True))(p["logits"])
    signs_and_bounds = ref_longtail(counts, 4, 0.3, 0.2, -1, 0.3)
    delta = ref_solver(p["logits"], p["labels"], *signs_and_bounds, 0.05, where)
    np.testing.assert_allclose(perturbed, p["logits"] + delta, atol=2e-6)
    expected_loss = np.where(where, ref_bce(p["logits"] + delta, p["labels"]).mean(-1), 0)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    expected_grad = (ref_sigmoid(p["logits"] + delta) - p["labels"]) / 10 * where[:, None]
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def test_balanced_transform_matches_reference():
    p = random_problem(10, 64, 10)
    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.2, step_size=0.05, delta_epsilon=1.0)
    perturbed, state = jax.jit(lambda u: transform.apply(u, p["labels"], transform.init()))(
        p["logits"]
    )
    signs_and_bounds = ref_balanced(p["logits"], p["labels"], 0.2, 1.0)
    delta = ref_solver(p["logits"], p["labels"], *signs_and_bounds, 0.05)
    np.testing.assert_allclose(perturbed, p["logits"] + delta, atol=2e-6)
    assert state == transform.init()


def test_zero_budget_is_plain_bce():
    p = random_problem(11, 16, 5)
    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.04, step_size=0.05)
    loss, perturbed, _ = jax.jit(ml.perturbed_sigmoid_binary_cross_entropy(transform))(
        p["logits"], p["labels"], transform.init()
    )
    np.testing.assert_array_equal(perturbed, p["logits"])
    expected = optax.sigmoid_binary_cross_entropy(p["logits"], p["labels"]).mean(-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "gamma_negative, gamma_positive, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (3.0, 0.5, 0.0)]
)
def test_asymmetric_loss_matches_formula(gamma_negative, gamma_positive, clip):
    p = random_problem(12, 32, 10)
    where = np.arange(32) % 5 != 0
    loss_fn = ml.asymmetric_loss(
        gamma_negative=gamma_negative, gamma_positive=gamma_positive, clip=clip
    )
    state = (jnp.arange(3),)
    loss, logits, out_state, grad = jax.jit(
        lambda u: loss_and_grad(loss_fn, u, p["labels"], state, where=where)
    )(p["logits"])
    expected = ref_asl(p["logits"], p["labels"], gamma_negative, gamma_positive, clip)
    np.testing.assert_allclose(loss, np.where(where, expected, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(logits, p["logits"])
    np.testing.assert_array_equal(out_state[0], state[0])
    assert np.all(np.asarray(loss) >= 0)
    assert np.all(np.isfinite(grad))


def test_asymmetric_loss_without_focusing_or_clip_is_bce():
    p = random_problem(13, 8, 6)
    loss, _, _ = ml.asymmetric_loss(gamma_negative=0.0, gamma_positive=0.0, clip=0.0)(
        p["logits"], p["labels"], ()
    )
    np.testing.assert_allclose(loss, ref_bce(p["logits"], p["labels"]).mean(-1), rtol=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_loss_equals_optax(alpha):
    p = random_problem(14, 16, 10)
    where = np.arange(16) < 11
    loss, logits, state = jax.jit(
        lambda u: ml.focal_loss(gamma=1.5, alpha=alpha)(u, p["labels"], (), where=where)
    )(p["logits"])
    expected = optax.sigmoid_focal_loss(p["logits"], p["labels"], alpha=alpha, gamma=1.5).mean(-1)
    np.testing.assert_allclose(loss, np.where(where, expected, 0), rtol=1e-6)
    assert state == ()


def test_soft_targets_accepted_by_plain_losses_only():
    p = random_problem(15, 4, 3)
    soft = np.full((4, 3), 0.3, np.float32)
    loss, _, _ = ml.perturbed_sigmoid_binary_cross_entropy(lpjax.identity())(p["logits"], soft, ())
    np.testing.assert_allclose(loss, ref_bce(p["logits"], soft).mean(-1), rtol=1e-6)
    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.1, step_size=0.05)
    with pytest.raises(ValueError, match="only 0 and 1"):
        ml.perturbed_sigmoid_binary_cross_entropy(transform)(p["logits"], soft, transform.init())


# ---------------------------------------------------------------------------
# Sharding: 8 fake devices (tests/conftest.py).


def test_sharded_equals_single_device():
    assert jax.device_count() >= 8
    mesh = jax.make_mesh((8,), ("data",))
    p = random_problem(16, 64, 10)
    where = np.random.default_rng(16).uniform(size=64) < 0.7
    # The batch split over the "data" axis, as a global array (the mesh's axes are explicit).
    p["logits"], p["labels"], where = jax.device_put(
        (p["logits"], p["labels"], where), jax.NamedSharding(mesh, P("data"))
    )
    vectors = [p[k] for k in ("pos_signs", "neg_signs", "pos_bounds", "neg_bounds")]

    def solver(logits, labels, where, pos_signs, neg_signs, pos_bounds, neg_bounds):
        return ml.multilabel_lpl_perturbation(
            logits,
            labels,
            positive_signs=pos_signs,
            negative_signs=neg_signs,
            positive_bounds=pos_bounds,
            negative_bounds=neg_bounds,
            step_size=p["step_size"],
            where=where,
            axis_name="data",
        )

    sharded = jax.jit(
        jax.shard_map(
            solver,
            mesh=mesh,
            in_specs=(P("data"), P("data"), P("data")) + (P(),) * 4,
            out_specs=P("data"),
        )
    )
    delta = sharded(p["logits"], p["labels"], where, *vectors)
    np.testing.assert_allclose(delta, solve(p, where=where), atol=1e-6)

    split = jax.jit(
        jax.shard_map(
            lambda u, y, w: ml.multilabel_balanced_signs_and_bounds(
                u, y, epsilon=0.1, delta_epsilon=0.5, where=w, axis_name="data"
            ),
            mesh=mesh,
            in_specs=(P("data"),) * 3,
            out_specs=P(),  # one spec for every field of the MultilabelSplit
        )
    )
    expected = ml.multilabel_balanced_signs_and_bounds(
        p["logits"], p["labels"], epsilon=0.1, delta_epsilon=0.5, where=where
    )
    for got, want in zip(split(p["logits"], p["labels"], where), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)

    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.3, step_size=0.05, delta_epsilon=0.5)
    loss_fn = ml.perturbed_sigmoid_binary_cross_entropy(transform)

    def loss_and_grad(u, y, w):
        def total(u):
            loss, perturbed, _ = loss_fn(u, y, transform.init(), where=w, axis_name="data")
            return loss.sum(), (loss, perturbed)

        return jax.grad(total, has_aux=True)(u)

    sharded_loss = jax.jit(
        jax.shard_map(loss_and_grad, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P("data"))
    )
    grad, (loss, perturbed) = sharded_loss(p["logits"], p["labels"], where)
    expected_grad, (expected_loss, expected_perturbed) = jax.jit(
        lambda u: jax.grad(
            lambda u: (
                (out := loss_fn(u, p["labels"], transform.init(), where=where))[0].sum(),
                out[:2],
            ),
            has_aux=True,
        )(u)
    )(p["logits"])
    np.testing.assert_allclose(perturbed, expected_perturbed, atol=1e-6)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)


# ---------------------------------------------------------------------------
# Errors.


def test_errors():
    p = random_problem(17, 4, 3)
    kwargs = dict(
        positive_signs=p["pos_signs"],
        negative_signs=p["neg_signs"],
        positive_bounds=p["pos_bounds"],
        negative_bounds=p["neg_bounds"],
        step_size=0.05,
    )
    u, y = p["logits"], p["labels"]
    solver = ml.multilabel_lpl_perturbation
    with pytest.raises(ValueError, match=r"labels must be multi-hot of shape .*\(4, 3\)"):
        solver(u, y[:, :2], **kwargs)
    with pytest.raises(ValueError, match="jax.nn.one_hot"):
        solver(u, np.array([0, 1, 2, 0]), **kwargs)
    with pytest.raises(ValueError, match=r"only 0 and 1.*\[2\.0\]"):
        solver(u, np.where(y == 1, 2, 0), **kwargs)
    with pytest.raises(ValueError, match="only 0 and 1"):
        solver(u, y * 0.5, **kwargs)
    with pytest.raises(TypeError, match="multi-hot array; got dtype complex64"):
        solver(u, y.astype(np.complex64), **kwargs)
    with pytest.raises(ValueError, match="positive_bounds must be finite and >= 0"):
        solver(u, y, **dict(kwargs, positive_bounds=-p["pos_bounds"] - 1))
    with pytest.raises(ValueError, match="negative_signs must take values in"):
        solver(u, y, **dict(kwargs, negative_signs=np.array([2, 0, 1])))
    with pytest.raises(ValueError, match=r"negative_bounds must have shape \[num_classes\]"):
        solver(u, y, **dict(kwargs, negative_bounds=np.zeros(4)))
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        solver(u, y, **dict(kwargs, step_size=0.0))
    with pytest.raises(ValueError, match=r"where must have shape \[batch\]"):
        solver(u, y, where=np.ones(3, bool), **kwargs)
    with pytest.raises(ValueError, match="logits must have shape"):
        solver(u[0], y[0], **kwargs)
    with pytest.raises(ValueError, match="negative_sign must take values in"):
        ml.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_sign=-2
        )
    with pytest.raises(ValueError, match="negative_epsilon must be finite and >= 0"):
        ml.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_epsilon=-0.1
        )
    with pytest.raises(ValueError, match=r"negative_sign must have shape \[num_classes\]"):
        ml.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_sign=[-1, 1]
        )
    with pytest.raises(ValueError, match="num_head_classes must lie in"):
        ml.multilabel_longtail_signs_and_bounds([3, 2, 1], num_head_classes=4, epsilon=0.1)
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        ml.multilabel_balanced_signs_and_bounds(u, y, epsilon=-1.0)
    transform = ml.lpl_multilabel_balanced_transform(epsilon=0.1, step_size=0.05)
    with pytest.raises(ValueError, match="needs the labels of the batch"):
        transform.apply(u, None, transform.init())
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        ml.lpl_multilabel_balanced_transform(epsilon=0.1, step_size=-1.0)
    with pytest.raises(ValueError, match=r"clip must lie in \[0, 1\)"):
        ml.asymmetric_loss(clip=1.0)
    with pytest.raises(ValueError, match="gamma_negative must be finite and >= 0"):
        ml.asymmetric_loss(gamma_negative=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be None or lie in \[0, 1\]"):
        ml.focal_loss(alpha=2.0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        ml.focal_loss()(u, y * 3.0, ())
