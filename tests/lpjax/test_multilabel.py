"""Tests of lpjax._multilabel against a plain NumPy float64 reference (docs/method.md, section 4).

The reference below is written straight from the specification, one (class,
polarity) pair at a time, independent of lpjax.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from jax.sharding import PartitionSpec as P

import lpjax

# ---------------------------------------------------------------------------
# Helpers.

solver_jit = jax.jit(lpjax.lpl_multilabel_perturbation, static_argnames="axis_name")
longtail_jit = jax.jit(
    lpjax.multilabel_longtail_signs_and_bounds, static_argnames="num_head_classes"
)


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


def perturbed_bce(transform, logits, labels, where=None, axis_name=None):
    """The README's multi-label step: transform, then BCE averaged over classes.

    Returns ``(per-example loss, perturbed logits)``; 0 where ``where`` is False.
    """
    perturbed, _ = transform.apply(
        logits, labels, transform.init(), where=where, axis_name=axis_name
    )
    loss = optax.sigmoid_binary_cross_entropy(perturbed, labels).mean(-1)
    return (loss if where is None else jnp.where(where, loss, 0)), perturbed


def loss_and_grad(loss_fn, logits):
    """``(loss, d sum(loss) / d logits)`` of an element-wise loss ``loss_fn(logits)``."""

    def total(u):
        loss = loss_fn(u)
        return loss.astype(jnp.float32).sum(), loss

    grad, loss = jax.grad(total, has_aux=True)(logits)
    return loss, grad


def ref_solve(p, where=None):
    return ref.lpl_multilabel_perturbation(
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
        ref.sigmoid_binary_cross_entropy(p["logits"], p["labels"]),
        ref.sigmoid_binary_cross_entropy(p["logits"] + delta, p["labels"]),
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
            steps = ref.num_steps(bounds[c], p["step_size"]) if signs[c] else 0
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
    transform = lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.2, step_size=0.05)
    labels = p["labels"]
    loss_fns = (
        lambda u: perturbed_bce(transform, u, labels)[0],
        lambda u: lpjax.asymmetric_loss(u, labels),
        lambda u: lpjax.asymmetric_loss(u, labels, clip=0.0, gamma_positive=1.0),
        lambda u: lpjax.asymmetric_loss(u, labels, stop_focusing_gradient=True),
    )

    @jax.jit
    def losses_and_grads(u):
        return [loss_and_grad(f, u) for f in loss_fns]

    for loss, grad in losses_and_grads(logits):
        assert loss.dtype == dtype and grad.dtype == dtype
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
        return lpjax.lpl_multilabel_perturbation(
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
    expected = ref.multilabel_longtail_signs_and_bounds(counts, num_head, 0.1, 0.4, -1, 0.1)
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
    expected = ref.multilabel_longtail_signs_and_bounds(
        counts, num_head, 0.1, 0.0, negative_sign, negative_epsilon
    )
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_longtail_split_ranks_by_count_not_index():
    pos_signs, neg_signs, pos_bounds, neg_bounds = lpjax.multilabel_longtail_signs_and_bounds(
        [5, 100, 5, 50], num_head_classes=2, epsilon=0.2, negative_sign=0, negative_epsilon=0.3
    )
    assert pos_signs.tolist() == [1, -1, 1, -1]
    assert neg_signs.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(neg_bounds, 0.3)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_mean_rule_signs_and_bounds_matches_reference(batch, num_classes):
    p = random_problem(batch + 7 * num_classes, batch, num_classes)
    where = np.random.default_rng(batch).uniform(size=batch) < 0.8
    out = jax.jit(
        lambda u, y, w: lpjax.multilabel_mean_rule_signs_and_bounds(
            u, y, epsilon=0.1, delta_epsilon=0.5, where=w
        )
    )(p["logits"], p["labels"], where)
    expected = ref.multilabel_mean_rule_signs_and_bounds(p["logits"], p["labels"], 0.1, 0.5, where)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # Absent pairs: class 0 has no positive, class 1 no negative.
    assert out[0][0] == 0 and out[2][0] == 0
    if num_classes > 1:
        assert out[1][1] == 0 and out[3][1] == 0


def test_mean_rule_signs_and_bounds_all_masked_gives_zero():
    p = random_problem(8, 4, 3)
    out = jax.jit(
        lambda u, y, w: lpjax.multilabel_mean_rule_signs_and_bounds(u, y, epsilon=0.1, where=w)
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
        lpjax.lpl_multilabel_longtail_transform(
            counts, num_head_classes=4, epsilon=0.3, step_size=0.05, delta_epsilon=0.2
        ),
    )

    def total(u):
        loss, perturbed = perturbed_bce(transform, u, p["labels"], where=where)
        return loss.sum(), (loss, perturbed)

    grad, (loss, perturbed) = jax.jit(jax.grad(total, has_aux=True))(p["logits"])
    signs_and_bounds = ref.multilabel_longtail_signs_and_bounds(counts, 4, 0.3, 0.2, -1, 0.3)
    delta = ref.lpl_multilabel_perturbation(
        p["logits"], p["labels"], *signs_and_bounds, 0.05, where
    )
    np.testing.assert_allclose(perturbed, p["logits"] + delta, atol=2e-6)
    expected_loss = np.where(
        where, ref.sigmoid_binary_cross_entropy(p["logits"] + delta, p["labels"]).mean(-1), 0
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    expected_grad = (ref.sigmoid(p["logits"] + delta) - p["labels"]) / 10 * where[:, None]
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def test_mean_rule_transform_matches_reference():
    p = random_problem(10, 64, 10)
    transform = lpjax.lpl_multilabel_mean_rule_transform(
        epsilon=0.2, step_size=0.05, delta_epsilon=1.0
    )
    perturbed, state = jax.jit(lambda u: transform.apply(u, p["labels"], transform.init()))(
        p["logits"]
    )
    signs_and_bounds = ref.multilabel_mean_rule_signs_and_bounds(p["logits"], p["labels"], 0.2, 1.0)
    delta = ref.lpl_multilabel_perturbation(p["logits"], p["labels"], *signs_and_bounds, 0.05)
    np.testing.assert_allclose(perturbed, p["logits"] + delta, atol=2e-6)
    assert state == transform.init()


def test_zero_budget_is_plain_bce():
    p = random_problem(11, 16, 5)
    transform = lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.04, step_size=0.05)
    loss, perturbed = jax.jit(lambda u: perturbed_bce(transform, u, p["labels"]))(p["logits"])
    np.testing.assert_array_equal(perturbed, p["logits"])
    expected = optax.sigmoid_binary_cross_entropy(p["logits"], p["labels"]).mean(-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "gamma_negative, gamma_positive, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (3.0, 0.5, 0.0)]
)
def test_asymmetric_loss_matches_formula(gamma_negative, gamma_positive, clip):
    p = random_problem(12, 32, 10)
    hyper = dict(gamma_negative=gamma_negative, gamma_positive=gamma_positive, clip=clip)
    loss, grad = jax.jit(
        lambda u: loss_and_grad(lambda v: lpjax.asymmetric_loss(v, p["labels"], **hyper), u)
    )(p["logits"])
    assert loss.shape == p["logits"].shape
    expected = ref.asymmetric_loss(p["logits"], p["labels"], gamma_negative, gamma_positive, clip)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(loss) >= 0)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_asymmetric_loss_can_stop_the_gradient_at_the_focusing_weights(clip):
    p = random_problem(16, 16, 6)
    u, y = p["logits"], p["labels"]
    hyper = dict(gamma_negative=4.0, gamma_positive=1.0, clip=clip)
    loss, grad = jax.jit(
        lambda v: loss_and_grad(
            lambda w: lpjax.asymmetric_loss(w, y, **hyper, stop_focusing_gradient=True), v
        )
    )(u)
    np.testing.assert_allclose(loss, ref.asymmetric_loss(u, y, 4.0, 1.0, clip), rtol=1e-5)
    # Hand-derived with the weights constant: d/du -w log p = -w (1 - p) for positives;
    # d/du -w log(1 - p_m) = w p (1 - p) / (1 - p + m) where p > m (0 elsewhere).
    prob = ref.sigmoid(u)
    positive = -((1 - prob) ** 1.0) * (1 - prob)
    shifted = np.maximum(prob - clip, 0)
    negative = np.where(prob > clip, shifted**4.0 * prob * (1 - prob) / (1 - prob + clip), 0)
    np.testing.assert_allclose(grad, y * positive + (1 - y) * negative, rtol=1e-4, atol=1e-7)
    _, exact = jax.jit(lambda v: loss_and_grad(lambda w: lpjax.asymmetric_loss(w, y, **hyper), v))(
        u
    )
    assert np.max(np.abs(np.asarray(exact) - np.asarray(grad))) > 1e-3


def test_asymmetric_loss_without_focusing_or_clip_is_bce():
    p = random_problem(13, 8, 6)
    loss = lpjax.asymmetric_loss(
        p["logits"], p["labels"], gamma_negative=0.0, gamma_positive=0.0, clip=0.0
    )
    expected = ref.sigmoid_binary_cross_entropy(p["logits"], p["labels"])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_soft_targets_accepted_by_asl_not_by_lpl():
    p = random_problem(15, 4, 3)
    soft = np.full((4, 3), 0.3, np.float32)
    loss = lpjax.asymmetric_loss(p["logits"], soft)
    np.testing.assert_allclose(
        loss, ref.asymmetric_loss(p["logits"], soft, 4.0, 0.0, 0.05), rtol=1e-5
    )
    transform = lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.1, step_size=0.05)
    with pytest.raises(ValueError, match="only 0 and 1"):
        transform.apply(p["logits"], soft, transform.init())


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
        return lpjax.lpl_multilabel_perturbation(
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
            lambda u, y, w: lpjax.multilabel_mean_rule_signs_and_bounds(
                u, y, epsilon=0.1, delta_epsilon=0.5, where=w, axis_name="data"
            ),
            mesh=mesh,
            in_specs=(P("data"),) * 3,
            out_specs=P(),  # one spec for every field of the MultilabelSignsAndBounds
        )
    )
    expected = lpjax.multilabel_mean_rule_signs_and_bounds(
        p["logits"], p["labels"], epsilon=0.1, delta_epsilon=0.5, where=where
    )
    for got, want in zip(split(p["logits"], p["labels"], where), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)

    transform = lpjax.lpl_multilabel_mean_rule_transform(
        epsilon=0.3, step_size=0.05, delta_epsilon=0.5
    )

    def sharded_loss_and_grad(u, y, w):
        def total(u):
            loss, perturbed = perturbed_bce(transform, u, y, where=w, axis_name="data")
            return loss.sum(), (loss, perturbed)

        return jax.grad(total, has_aux=True)(u)

    sharded_loss = jax.jit(
        jax.shard_map(
            sharded_loss_and_grad, mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P("data")
        )
    )
    grad, (loss, perturbed) = sharded_loss(p["logits"], p["labels"], where)
    expected_grad, (expected_loss, expected_perturbed) = jax.jit(
        lambda u: jax.grad(
            lambda u: (
                (out := perturbed_bce(transform, u, p["labels"], where=where))[0].sum(),
                out,
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
    solver = lpjax.lpl_multilabel_perturbation
    with pytest.raises(ValueError, match=r"labels must be multi-hot of the logits' shape \(4, 3\)"):
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
        lpjax.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_sign=-2
        )
    with pytest.raises(ValueError, match="negative_epsilon must be finite and >= 0"):
        lpjax.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_epsilon=-0.1
        )
    with pytest.raises(ValueError, match=r"negative_sign must have shape \[num_classes\]"):
        lpjax.multilabel_longtail_signs_and_bounds(
            [3, 2, 1], num_head_classes=1, epsilon=0.1, negative_sign=[-1, 1]
        )
    with pytest.raises(ValueError, match="num_head_classes must lie in"):
        lpjax.multilabel_longtail_signs_and_bounds([3, 2, 1], num_head_classes=4, epsilon=0.1)
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        lpjax.multilabel_mean_rule_signs_and_bounds(u, y, epsilon=-1.0)
    transform = lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.1, step_size=0.05)
    with pytest.raises(ValueError, match="needs the labels of the batch"):
        transform.apply(u, None, transform.init())
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.1, step_size=-1.0)
    with pytest.raises(ValueError, match=r"clip must lie in \[0, 1\)"):
        lpjax.asymmetric_loss(u, y, clip=1.0)
    with pytest.raises(ValueError, match="gamma_negative must be finite and >= 0"):
        lpjax.asymmetric_loss(u, y, gamma_negative=-1.0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        lpjax.asymmetric_loss(u, y * 3.0)
    with pytest.raises(ValueError, match="labels must be multi-hot of the logits' shape"):
        lpjax.asymmetric_loss(u, y[:, :1])
