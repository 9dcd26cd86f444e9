"""Inputs that must not hang the solver or leak from one sample into the others."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref

import lpjax

COUNTS = [500, 200, 50, 10]


def _batch(seed=0, batch=24, classes=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (batch, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    return logits, labels


# ----------------------------------------------------------------------------- step cap


def test_huge_bounds_are_refused_when_the_transform_is_built():
    with pytest.raises(ValueError, match=r"100,000,0\d\d inner steps.*max_inner_steps = 10,000"):
        lpjax.lpl_longtail_transform(COUNTS, num_head_classes=2, epsilon=1e6, step_size=0.01)
    with pytest.raises(ValueError, match="inner steps"):
        lpjax.lpl_mean_rule_transform(epsilon=50.0, delta_epsilon=60.0, step_size=0.01)
    with pytest.raises(ValueError, match="inner steps"):
        lpjax.lpl_multilabel_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=1e3, step_size=0.01
        )
    with pytest.raises(ValueError, match="inner steps"):
        lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=2, target=0.3, step_size=1e-4, initial_epsilon=0.5
        )
    logits, labels = _batch()
    with pytest.raises(ValueError, match="max_inner_steps = 5"):
        lpjax.lpl_perturbation(
            logits,
            labels,
            signs=jnp.ones(4, jnp.int32),
            bounds=jnp.full(4, 1.0),
            step_size=0.1,
            max_inner_steps=5,
        )
    # A large bound on an unsigned class costs nothing and is accepted.
    lpjax.lpl_perturbation(
        logits,
        labels,
        signs=jnp.array([1, 0, 0, 0]),
        bounds=jnp.array([0.2, 1e9, 0, 0]),
        step_size=0.1,
    )


def test_traced_bounds_are_clamped_to_the_cap():
    logits, labels = _batch()

    @jax.jit
    def solve(bounds, step_size):
        return lpjax.lpl_perturbation(
            logits,
            labels,
            signs=jnp.ones(4, jnp.int32),
            bounds=bounds,
            step_size=step_size,
            max_inner_steps=50,
        )

    zero_step = solve(jnp.full(4, 1.0), 0.0)  # 1 / 0 steps: clamped, and each step is 0
    np.testing.assert_array_equal(zero_step, np.zeros_like(logits))
    clamped = solve(jnp.full(4, 1e9), 0.01)  # clamped to 50 steps of 0.01
    want = ref.lpl_perturbation(logits, labels, np.ones(4), np.full(4, 0.5), 0.01)
    np.testing.assert_allclose(clamped, want, atol=2e-5)


# ----------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_a_non_finite_sample_changes_no_other_sample(masked, bad_value):
    logits, labels = _batch(1)
    bad = logits.copy()
    bad[3, 1] = bad_value
    where = np.ones(len(labels), bool)
    where[3] = not masked
    without = np.ones(len(labels), bool)
    without[3] = False
    others = np.arange(len(labels)) != 3
    transforms = {
        "mean_rule": lpjax.lpl_mean_rule_transform(epsilon=0.3, delta_epsilon=0.5, step_size=0.05),
        "longtail": lpjax.chain(
            lpjax.logit_adjustment_transform(COUNTS),
            lpjax.lpl_longtail_transform(COUNTS, num_head_classes=2, epsilon=0.3, step_size=0.05),
        ),
        "adaptive": lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=2, target=0.3, step_size=0.05, initial_epsilon=0.5
        ),
    }
    for name, transform in transforms.items():
        got, got_state = transform.apply(bad, labels, transform.init(), where=where)
        want, want_state = transform.apply(logits, labels, transform.init(), where=without)
        np.testing.assert_array_equal(np.asarray(got)[others], np.asarray(want)[others], name)
        jax.tree.map(np.testing.assert_array_equal, got_state, want_state)
    # The per-example loss of every other sample stays finite and unchanged.
    perturbed, _ = transforms["mean_rule"].apply(bad, labels, optax.EmptyState(), where=where)
    got = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels, where=where)
    perturbed, _ = transforms["mean_rule"].apply(logits, labels, optax.EmptyState(), where=without)
    want = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels, where=without)
    np.testing.assert_array_equal(np.asarray(got)[others], np.asarray(want)[others])
    variation = lpjax.relative_loss_variation(bad, bad + 0.1, labels, where=where)
    assert np.all(np.isfinite(variation) | np.isnan(variation))
    np.testing.assert_array_equal(
        variation, lpjax.relative_loss_variation(logits, logits + 0.1, labels, where=without)
    )


@pytest.mark.parametrize("masked", [False, True])
def test_a_non_finite_multilabel_sample_changes_no_other_sample(masked):
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (16, 4)).astype(np.float32)
    labels = (rng.random((16, 4)) < 0.4).astype(np.int32)
    bad = logits.copy()
    bad[5, 2] = np.nan
    where = np.ones(16, bool)
    where[5] = not masked
    without = np.ones(16, bool)
    without[5] = False
    others = np.arange(16) != 5
    for transform in (
        lpjax.lpl_multilabel_mean_rule_transform(epsilon=0.2, step_size=0.05),
        lpjax.lpl_multilabel_longtail_transform(
            COUNTS, num_head_classes=2, epsilon=0.2, step_size=0.05
        ),
    ):
        got, _ = transform.apply(bad, labels, transform.init(), where=where)
        want, _ = transform.apply(logits, labels, transform.init(), where=without)
        np.testing.assert_array_equal(np.asarray(got)[others], np.asarray(want)[others])
        got_loss = optax.sigmoid_binary_cross_entropy(got, labels).mean(-1)
        assert np.all(np.isfinite(np.asarray(got_loss)[others]))


# ----------------------------------------------------------------------------- arguments


def test_integer_scalars_of_any_kind_are_head_counts():
    want = lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=2, epsilon=0.1)
    for k in (np.int64(2), jnp.int32(2), jnp.array(2)):
        got = lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=k, epsilon=0.1)
        np.testing.assert_array_equal(got[0], want[0])
    for bad in (2.0, True, jnp.array([2])):
        with pytest.raises(TypeError, match="num_head_classes must be an int"):
            lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=bad, epsilon=0.1)


def test_a_missing_chain_state_is_named():
    transform = lpjax.chain(lpjax.identity(), lpjax.logit_adjustment_transform(COUNTS))
    with pytest.raises(TypeError, match=r"tuple returned by its init\(\); got NoneType"):
        transform.apply(jnp.zeros((2, 4)), jnp.zeros(2, jnp.int32), None)
