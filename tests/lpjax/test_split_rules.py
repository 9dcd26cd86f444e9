"""Tests for the LPL splits (method.md section 3.2) against tests/reference.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

import lpjax


@jax.jit
def _mean_rule(logits, labels, epsilon, delta_epsilon, where):
    return lpjax.mean_rule_signs_and_bounds(
        logits, labels, epsilon=epsilon, delta_epsilon=delta_epsilon, where=where
    )


def mean_rule(logits, labels, epsilon, delta_epsilon=0.0, where=None):
    signs, bounds = _mean_rule(
        jnp.asarray(logits, jnp.float32),
        jnp.asarray(labels, jnp.int32),
        jnp.asarray(epsilon, jnp.float32),
        jnp.asarray(delta_epsilon, jnp.float32),
        None if where is None else jnp.asarray(where, bool),
    )
    return np.asarray(signs), np.asarray(bounds)


def _logits_with_true_probs(labels, true_probs, num_classes):
    """Rows whose softmax puts exactly ``true_probs[i]`` on ``labels[i]``, the rest uniform."""
    probs = np.empty((len(labels), num_classes))
    for i, (y, q) in enumerate(zip(labels, true_probs, strict=True)):
        probs[i] = (1.0 - q) / (num_classes - 1)
        probs[i, y] = q
    return np.log(probs).astype(np.float32)


# ----------------------------------------------------------------------------- mean rule


@pytest.mark.parametrize("delta_epsilon", [0.0, 2.0])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_mean_rule_matches_reference(num_classes, delta_epsilon):
    rng = np.random.default_rng(num_classes)
    logits = rng.normal(0, 3, (64, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes - 1, 64)  # the last class is absent
    where = rng.random(64) < 0.8
    signs, bounds = mean_rule(logits, labels, 0.1, delta_epsilon, where)
    ref_signs, ref_bounds = ref.mean_rule_signs_and_bounds(
        logits, labels, 0.1, delta_epsilon, where
    )
    assert signs.dtype == np.int32 and bounds.dtype == np.float32
    np.testing.assert_array_equal(signs, ref_signs)
    np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-5, atol=1e-6)
    absent = ~np.isin(np.arange(num_classes), labels[where])
    assert absent.any()
    np.testing.assert_array_equal(signs[absent], 0)
    np.testing.assert_array_equal(bounds[absent], 0.0)
    assert set(np.unique(signs[~absent])) == {-1, 1}


def test_threshold_is_over_present_classes_only():
    # Ten classes, three present, with mean true-class probabilities
    # q = (0.9, 0.5, 0.4) for classes (2, 5, 8). Over the present classes
    # tau = 0.6, so class 5 (q = 0.5 < 0.6) is hard: sign +1. Counting the 7
    # absent classes as q = 0 (the authors' bug) would give tau = 0.18 and
    # flip class 5 (and class 8) to -1.
    labels = np.array([2, 2, 5, 5, 5, 8])
    q = np.array([0.85, 0.95, 0.5, 0.45, 0.55, 0.4])
    logits = _logits_with_true_probs(labels, q, 10)
    signs, bounds = mean_rule(logits, labels, 0.1, delta_epsilon=1.0)
    expected_signs = np.zeros(10, int)
    expected_signs[[2, 5, 8]] = [-1, 1, 1]
    np.testing.assert_array_equal(signs, expected_signs)
    expected_bounds = np.zeros(10)
    expected_bounds[[2, 5, 8]] = 0.1 + np.abs(0.6 - np.array([0.9, 0.5, 0.4]))
    np.testing.assert_allclose(bounds, expected_bounds, rtol=1e-5)
    ref_signs, ref_bounds = ref.mean_rule_signs_and_bounds(logits, labels, 0.1, 1.0)
    np.testing.assert_array_equal(signs, ref_signs)
    np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-5)


def test_fixed_bounds_are_epsilon_for_present_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (64, 10)).astype(np.float32)
    labels = rng.integers(0, 7, 64)  # classes 7, 8, 9 absent
    signs, bounds = mean_rule(logits, labels, 0.25)
    present = np.isin(np.arange(10), labels)
    np.testing.assert_allclose(bounds[present], 0.25)
    np.testing.assert_array_equal(bounds[~present], 0.0)
    np.testing.assert_array_equal(signs[~present], 0)


def test_varied_bounds_grow_with_distance_to_threshold():
    labels = np.array([0, 1, 2, 3])
    logits = _logits_with_true_probs(labels, [0.2, 0.4, 0.6, 0.8], 4)  # tau = 0.5
    signs, bounds = mean_rule(logits, labels, 0.1, delta_epsilon=3.0)
    np.testing.assert_array_equal(signs, [1, 1, -1, -1])
    np.testing.assert_allclose(bounds, 0.1 + 3.0 * np.array([0.3, 0.1, 0.1, 0.3]), rtol=1e-5)


def test_single_class_batch_is_untouched():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (64, 10)).astype(np.float32)
    signs, bounds = mean_rule(logits, np.full(64, 4), 0.1, 1.0)
    np.testing.assert_array_equal(signs, 0)
    assert bounds[4] == pytest.approx(0.1)


def test_mean_rule_where_mask_equals_slicing():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    where = rng.random(64) < 0.5
    masked = mean_rule(logits, labels, 0.1, 2.0, where)
    # The masked-out samples are garbage; they must not matter.
    logits2 = logits.copy()
    logits2[~where] = 50.0
    again = mean_rule(logits2, labels, 0.1, 2.0, where)
    ref_signs, ref_bounds = ref.mean_rule_signs_and_bounds(logits[where], labels[where], 0.1, 2.0)
    for signs, bounds in (masked, again):
        np.testing.assert_array_equal(signs, ref_signs)
        np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-5, atol=1e-6)


def test_mean_rule_out_of_range_labels_are_masked():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    labels[:6] = [-1, 10, 12, -5, 10, -1]
    signs, bounds = mean_rule(logits, labels, 0.1, 2.0)
    ref_signs, ref_bounds = ref.mean_rule_signs_and_bounds(logits[6:], labels[6:], 0.1, 2.0)
    np.testing.assert_array_equal(signs, ref_signs)
    np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- long-tailed


@functools.partial(jax.jit, static_argnames="num_head")
def _longtail(counts, num_head, epsilon, delta_epsilon):
    return lpjax.longtail_signs_and_bounds(
        counts, num_head_classes=num_head, epsilon=epsilon, delta_epsilon=delta_epsilon
    )


def longtail(counts, num_head, epsilon, delta_epsilon=0.0):
    signs, bounds = _longtail(
        jnp.asarray(counts, jnp.int32),
        num_head,
        jnp.asarray(epsilon, jnp.float32),
        jnp.asarray(delta_epsilon, jnp.float32),
    )
    assert signs.dtype == jnp.int32 and bounds.dtype == jnp.float32
    return np.asarray(signs), np.asarray(bounds)


def test_longtail_eager_example():
    signs, bounds = lpjax.longtail_signs_and_bounds(
        [10, 500, 50], num_head_classes=1, epsilon=0.1, delta_epsilon=0.5
    )
    np.testing.assert_array_equal(signs, [1, -1, 1])
    np.testing.assert_allclose(bounds, [0.1 + 0.5, 0.1 + 0.5, 0.1 + 0.5 * 10 / 50], rtol=1e-6)


@pytest.mark.parametrize("delta_epsilon", [0.0, 0.7])
def test_longtail_matches_reference(delta_epsilon):
    rng = np.random.default_rng(5)
    counts = np.floor(500 * 100.0 ** (-np.arange(20) / 19)).astype(int)
    counts = counts[rng.permutation(20)]  # class index order is not frequency order
    for num_head in [0, 1, 7, 19, 20]:
        signs, bounds = longtail(counts, num_head, 0.2, delta_epsilon)
        ref_signs, ref_bounds = ref.longtail_signs_and_bounds(counts, num_head, 0.2, delta_epsilon)
        np.testing.assert_array_equal(signs, ref_signs)
        np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-6)
        assert (signs == -1).sum() == num_head


def test_longtail_head_scale_scales_only_the_head_bounds():
    counts = np.array([10, 500, 50, 200, 5])
    for head_scale in (0.0, 0.2, 1.0, 3.0):
        signs, bounds = lpjax.longtail_signs_and_bounds(
            counts, num_head_classes=2, epsilon=0.1, delta_epsilon=1.0, head_scale=head_scale
        )
        ref_signs, ref_bounds = ref.longtail_signs_and_bounds(counts, 2, 0.1, 1.0, head_scale)
        np.testing.assert_array_equal(signs, ref_signs)
        np.testing.assert_allclose(bounds, ref_bounds, rtol=1e-6)
        # head: h (eps + d n_c / n_max); tail unchanged.
        np.testing.assert_allclose(
            bounds,
            [0.1 + 5 / 10, head_scale * 1.1, 0.1 + 5 / 50, head_scale * 0.5, 1.1],
            rtol=1e-6,
        )
    with pytest.raises(ValueError, match="head_scale"):
        lpjax.longtail_signs_and_bounds(counts, num_head_classes=2, epsilon=0.1, head_scale=-1)


def test_deprecated_names_warn_and_are_the_new_functions():
    for old, new in lpjax._DEPRECATED.items():
        with pytest.warns(DeprecationWarning, match=f"lpjax.{new}"):
            assert getattr(lpjax, old) is getattr(lpjax, new)
    with pytest.raises(AttributeError):
        lpjax.no_such_function  # noqa: B018


def test_longtail_ranks_by_counts_not_index():
    counts = [10, 500, 50, 200, 5]
    signs, bounds = longtail(counts, 2, 0.1, delta_epsilon=1.0)
    np.testing.assert_array_equal(signs, [1, -1, 1, -1, 1])
    # head: eps + d * n_c / n_max; tail: eps + d * n_min / n_c.
    np.testing.assert_allclose(
        bounds, [0.1 + 5 / 10, 0.1 + 1.0, 0.1 + 5 / 50, 0.1 + 200 / 500, 0.1 + 1.0], rtol=1e-6
    )


def test_longtail_ties_lower_index_first():
    counts = [30, 100, 30, 100, 30]
    np.testing.assert_array_equal(longtail(counts, 1, 0.1)[0], [1, -1, 1, 1, 1])
    np.testing.assert_array_equal(longtail(counts, 2, 0.1)[0], [1, -1, 1, -1, 1])
    np.testing.assert_array_equal(longtail(counts, 3, 0.1)[0], [-1, -1, 1, -1, 1])
    np.testing.assert_array_equal(longtail(counts, 4, 0.1)[0], [-1, -1, -1, -1, 1])


def test_longtail_head_and_tail_extremes():
    counts = np.array([7, 3, 11, 2])
    signs, bounds = longtail(counts, 0, 0.3, 0.5)
    np.testing.assert_array_equal(signs, 1)
    np.testing.assert_allclose(bounds, 0.3 + 0.5 * 2 / counts, rtol=1e-6)
    signs, bounds = longtail(counts, 4, 0.3, 0.5)
    np.testing.assert_array_equal(signs, -1)
    np.testing.assert_allclose(bounds, 0.3 + 0.5 * counts / 11, rtol=1e-6)
    # Fixed bounds: d_eps = 0.
    np.testing.assert_allclose(longtail(counts, 2, 0.3)[1], 0.3)


def test_multilabel_split_is_a_named_tuple_of_the_solver_arguments():
    split = lpjax.multilabel_longtail_signs_and_bounds(
        [10, 500, 50], num_head_classes=1, epsilon=0.1
    )
    assert isinstance(split, lpjax.MultilabelSignsAndBounds)
    assert split.positive_signs.tolist() == [1, -1, 1] and split.negative_signs.tolist() == [-1] * 3
    logits, labels = jnp.zeros((2, 3)), jnp.array([[1, 0, 1], [0, 1, 0]])
    delta = lpjax.lpl_multilabel_perturbation(logits, labels, **split._asdict(), step_size=0.05)
    # Two steps of 0.05 * (sigmoid(u + delta) - y): raising a positive's loss (tail class 0)
    # lowers its logit, lowering it (head class 1) raises the logit.
    np.testing.assert_allclose([delta[0, 0], delta[1, 1]], [-0.05031, 0.04969], atol=1e-4)


def test_lpl_transform_takes_a_user_written_rule():
    def hardest_class_only(logits, labels, where, axis_name):
        # Maximise class 2 by 0.3, leave the others: a rule written without lpjax internals.
        return jnp.array([0, 0, 1]), jnp.array([0.0, 0.0, 0.3])

    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.5, 0.0, 0.0]])
    labels = jnp.array([0, 1, 2])
    transform = lpjax.lpl_transform(hardest_class_only, step_size=0.1)
    perturbed, _ = transform.apply(logits, labels, transform.init())
    want = ref.lpl_perturbation(logits, labels, [0, 0, 1], [0.0, 0.0, 0.3], 0.1)
    np.testing.assert_allclose(perturbed - logits, want, atol=1e-6)
    np.testing.assert_array_equal(perturbed[:2], logits[:2])
