"""Tests for lpjax.lpl_perturbation (the LPL inner solver, method.md section 3.3).

Every value is compared with the plain-loops NumPy reference in tests/reference.py.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from jax.test_util import check_grads

import lpjax


@functools.partial(jax.jit, static_argnames="normalize")
def _solve(logits, labels, signs, bounds, step_size, where, normalize=False):
    return lpjax.lpl_perturbation(
        logits,
        labels,
        signs=signs,
        bounds=bounds,
        step_size=step_size,
        where=where,
        normalize=normalize,
    )


def solve(logits, labels, signs, bounds, step_size, where=None, normalize=False):
    """The jitted solver; values (not Python scalars) so shapes alone key the cache.

    ``normalize=False`` is the paper's step (the default), True the unit step.
    """
    return np.asarray(
        _solve(
            jnp.asarray(logits),
            jnp.asarray(labels, jnp.int32),
            jnp.asarray(signs, jnp.int32),
            jnp.asarray(bounds, jnp.float32),
            jnp.asarray(step_size, jnp.float32),
            None if where is None else jnp.asarray(where, bool),
            normalize=normalize,
        )
    )


def _f32(x):
    """Rounds to float32 first, so lpjax and the reference see the same numbers."""
    return np.asarray(x, np.float32)


def _problem(num_classes, batch, seed, scale=20.0, max_bound=0.3):
    rng = np.random.default_rng(seed)
    logits = _f32(rng.uniform(-scale, scale, (batch, num_classes)))
    labels = rng.integers(0, num_classes, batch)
    signs = rng.integers(-1, 2, num_classes)
    bounds = _f32(rng.uniform(0.0, max_bound, num_classes))
    return logits, labels, signs, bounds


# ----------------------------------------------------------------------------- reference grid


@pytest.mark.parametrize("batch", [1, 7, 128])
@pytest.mark.parametrize("num_classes", [2, 10, 100, 1000])
def test_matches_reference(num_classes, batch):
    # Logits up to +-20; bounds below 0.3 with step 0.05 (at most 5 steps).
    logits, labels, signs, bounds = _problem(num_classes, batch, seed=num_classes * 1000 + batch)
    delta = solve(logits, labels, signs, bounds, 0.05)
    expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05))
    assert delta.shape == (batch, num_classes) and delta.dtype == np.float32
    np.testing.assert_allclose(delta, expected, atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 100])
def test_unit_step_matches_reference(num_classes):
    logits, labels, signs, bounds = _problem(num_classes, 32, seed=num_classes + 7, scale=6.0)
    signs = np.where(signs == 0, 1, signs)
    delta = solve(logits, labels, signs, bounds, 0.05, normalize=True)
    expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05), normalize=True)
    np.testing.assert_allclose(delta, expected, atol=1e-5)
    # The paper's step is another perturbation (no smaller or larger by construction).
    assert np.abs(delta - solve(logits, labels, signs, bounds, 0.05)).max() > 1e-3


@pytest.mark.parametrize("num_classes", [10, 100])
def test_matches_reference_with_where_mask(num_classes):
    logits, labels, signs, bounds = _problem(num_classes, 32, seed=num_classes, scale=6.0)
    where = np.random.default_rng(1).random(32) < 0.6
    delta = solve(logits, labels, signs, bounds, 0.05, where)
    expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05), where)
    np.testing.assert_allclose(delta, expected, atol=1e-5)
    np.testing.assert_array_equal(delta[~where], 0.0)


# ----------------------------------------------------------------------------- batch structure


def test_batch_with_a_single_class():
    logits, _, signs, bounds = _problem(10, 32, seed=4, scale=4.0)
    labels = np.full(32, 3)
    signs[3], bounds[3] = 1, 0.3
    for normalize in (False, True):
        delta = solve(logits, labels, signs, bounds, 0.05, normalize=normalize)
        expected = ref.lpl_perturbation(
            logits, labels, signs, bounds, np.float32(0.05), normalize=normalize
        )
        np.testing.assert_allclose(delta, expected, atol=1e-5)
    assert np.linalg.norm(delta[0]) == pytest.approx(0.3, rel=1e-5)  # 6 unit steps


def test_absent_classes_do_not_matter():
    logits, _, _, _ = _problem(10, 32, seed=5, scale=4.0)
    labels = np.random.default_rng(5).choice([1, 4, 7], 32)
    signs = np.ones(10, int)
    bounds = np.full(10, 0.2, np.float32)
    expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05))
    np.testing.assert_allclose(solve(logits, labels, signs, bounds, 0.05), expected, atol=1e-5)
    # Huge budgets or other signs for absent classes change nothing.
    absent = ~np.isin(np.arange(10), [1, 4, 7])
    bounds_absent = np.where(absent, 50.0, bounds).astype(np.float32)
    signs_absent = np.where(absent, -1, signs)
    np.testing.assert_allclose(
        solve(logits, labels, signs_absent, bounds_absent, 0.05), expected, atol=1e-5
    )


def test_where_mask_equals_slicing():
    logits, labels, signs, bounds = _problem(10, 32, seed=6, scale=5.0)
    where = np.random.default_rng(6).random(32) < 0.5
    delta = solve(logits, labels, signs, bounds, 0.05, where)
    np.testing.assert_array_equal(delta[~where], 0.0)
    sliced = solve(logits[where], labels[where], signs, bounds, 0.05)
    np.testing.assert_allclose(delta[where], sliced, atol=1e-6)
    # Changing the masked samples' logits and labels changes nothing.
    logits2, labels2 = logits.copy(), labels.copy()
    logits2[~where] = 100.0 * np.sign(logits2[~where])
    labels2[~where] = (labels2[~where] + 1) % 10
    np.testing.assert_allclose(
        solve(logits2, labels2, signs, bounds, 0.05, where), delta, atol=1e-6
    )


def test_out_of_range_labels_are_masked():
    logits, labels, signs, bounds = _problem(10, 32, seed=7, scale=5.0)
    signs[:] = 1
    bad = np.zeros(32, bool)
    bad[[0, 5, 11, 31]] = True
    labels = labels.copy()
    labels[[0, 11]] = -1
    labels[[5, 31]] = 10
    delta = solve(logits, labels, signs, bounds, 0.05)
    np.testing.assert_array_equal(delta[bad], 0.0)
    np.testing.assert_allclose(
        delta[~bad], solve(logits[~bad], labels[~bad], signs, bounds, 0.05), atol=1e-6
    )
    np.testing.assert_allclose(
        delta, ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05)), atol=1e-5
    )


def test_mixed_signs_including_zero():
    logits, _, _, _ = _problem(10, 32, seed=8, scale=3.0)
    labels = np.arange(32) % 10
    signs = np.array([1, -1, 0, 1, 0, -1, 1, 1, -1, 0])
    bounds = np.full(10, 0.25, np.float32)
    untouched = np.isin(labels, [2, 4, 9])
    loss = ref.cross_entropy(logits, labels)
    for normalize in (False, True):
        delta = solve(logits, labels, signs, bounds, 0.05, normalize=normalize)
        expected = ref.lpl_perturbation(
            logits, labels, signs, bounds, np.float32(0.05), normalize=normalize
        )
        np.testing.assert_allclose(delta, expected, atol=1e-5)
        np.testing.assert_array_equal(delta[untouched], 0.0)
        # Maximised classes gain loss, minimised ones lose it.
        change = ref.cross_entropy(logits + delta, labels) - loss
        assert np.all(change[signs[labels] == 1] > 0)
        assert np.all(change[signs[labels] == -1] < 0)
    # The unit step moves every class its whole budget.
    np.testing.assert_allclose(np.linalg.norm(delta[~untouched], axis=1), 0.25, rtol=1e-5)


@pytest.mark.parametrize("bound_in_steps", [0.0, 0.5, 0.999])
def test_bounds_below_one_step_give_zero(bound_in_steps):
    logits, labels, _, _ = _problem(10, 32, seed=9, scale=5.0)
    signs = np.ones(10, int)
    bounds = np.full(10, bound_in_steps * 0.1, np.float32)
    np.testing.assert_array_equal(solve(logits, labels, signs, bounds, 0.1), 0.0)


def test_all_signs_zero_give_zero():
    logits, labels, _, _ = _problem(10, 32, seed=10, scale=5.0)
    delta = solve(logits, labels, np.zeros(10, int), np.full(10, 1.0, np.float32), 0.1)
    np.testing.assert_array_equal(delta, 0.0)


# ----------------------------------------------------------------------------- step counts


@pytest.mark.parametrize("step_size", [0.01, 0.1, 0.03, 0.007, 0.2])
def test_whole_number_of_steps_is_not_rounded_down(step_size):
    # Two classes: the class gradient is always +-(1, -1) (see the hand-derived
    # test), so every step moves by exactly step_size along a fixed direction
    # and ||delta|| = K * step_size.
    logits = np.array([[0.3, -0.2]], np.float32)
    for steps in [1, 3, 10, 17, 50]:
        for bound, expected_steps in [
            (steps * step_size, steps),  # an exact multiple: K steps, not K - 1
            ((steps + 0.5) * step_size, steps),
            (steps * step_size * (1 - 1e-4), steps - 1),
        ]:
            assert ref.num_steps(bound, step_size) == expected_steps
            delta = solve(logits, [0], [1, 0], [bound, 0.0], step_size, normalize=True)
            norm = np.linalg.norm(delta[0])
            assert norm == pytest.approx(expected_steps * step_size, rel=1e-5, abs=1e-7), (
                steps,
                bound,
            )


def test_hand_derived_two_class_case():
    # Two classes. For a sample of class 0, softmax(u) - e_0 = (p0 - 1, p1) = (-p1, p1),
    # so the class-mean gradient is (-a, a) with a = mean p1 > 0, whatever the
    # current logits: the unit direction is (-1, 1)/sqrt(2) at every step. For
    # class 1 it is (1, -1)/sqrt(2). Hence delta_c = s_c * K_c * alpha * dir_c.
    # logits [[2, 0], [1, 1]] (class 0), [[0, 3]] (class 1); alpha = 0.1;
    # class 0: s = +1, eps = 0.3 -> K = 3 -> delta_0 = 0.3 * (-1, 1)/sqrt(2)
    #                                              = (-0.2121320, 0.2121320);
    # class 1: s = -1, eps = 0.25 -> K = 2 -> delta_1 = -0.2 * (1, -1)/sqrt(2)
    #                                               = (-0.1414214, 0.1414214).
    logits = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]], np.float32)
    delta = solve(logits, [0, 0, 1], [1, -1], [0.3, 0.25], 0.1, normalize=True)
    r = 1 / np.sqrt(2)
    expected = np.array([[-0.3 * r, 0.3 * r], [-0.3 * r, 0.3 * r], [-0.2 * r, 0.2 * r]])
    np.testing.assert_allclose(delta, expected, atol=1e-6)


def test_hand_derived_two_class_case_with_confident_samples():
    # The same derivation holds for any logits: the direction of class 0 is
    # exactly (-1, 1)/sqrt(2) because p1 > 0, even when p0 rounds to 1 in
    # float32 (logit gap 24: p1 = e^-24 ~ 3.8e-11). The float32 computation of
    # softmax(u) - onehot must not lose the true-class entry p0 - 1 = -p1.
    logits = np.array([[12.0, -12.0], [-11.0, 13.0]], np.float32)
    delta = solve(logits, [0, 1], [1, 1], [0.3, 0.3], 0.1, normalize=True)
    r = 0.3 / np.sqrt(2)
    np.testing.assert_allclose(delta, [[-r, r], [r, -r]], atol=1e-5)
    # The paper's step moves them by alpha * p_other per step: almost nothing.
    paper = solve(logits, [0, 1], [1, 1], [0.3, 0.3], 0.1)
    np.testing.assert_allclose(paper, 0.0, atol=1e-9)
    assert np.abs(paper).max() > 0


def test_hand_derived_two_class_case_paper_step():
    # The paper's step: class 0's mean gradient is (-a, a) with a the mean of p1 at the
    # current logits, so one step moves it by s alpha (-a, a); class 1's is (b, -b) with b
    # its mean p0. Class 0 (samples [2, 0], [1, 1]; s = +1, K = 1): a = (1 / (1 + e^2)
    # + 1/2) / 2. Class 1 (sample [0, 3]; s = -1, K = 2): b_0 = 1 / (1 + e^3), then the
    # gap 3 grows to g = 3 + 2 alpha b_0 and b_1 = 1 / (1 + e^g).
    logits = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]], np.float32)
    delta = solve(logits, [0, 0, 1], [1, -1], [0.1, 0.2], 0.1)
    a = (1 / (1 + math.exp(2)) + 0.5) / 2
    b0 = 1 / (1 + math.exp(3))
    b1 = 1 / (1 + math.exp(3 + 0.2 * b0))
    move_1 = -0.1 * (b0 + b1)
    expected = [[-0.1 * a, 0.1 * a], [-0.1 * a, 0.1 * a], [move_1, -move_1]]
    np.testing.assert_allclose(delta, expected, atol=1e-7)


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("normalize", [False, True])
def test_one_vector_per_class_within_bound(normalize):
    # The unit step: |delta_c| <= K_c alpha <= eps_c; the paper's: |g_c| <= sqrt(2) per step.
    logits, labels, signs, bounds = _problem(10, 32, seed=11, scale=6.0, max_bound=0.5)
    delta = solve(logits, labels, signs, bounds, 0.03, normalize=normalize)
    factor = 1.0 if normalize else math.sqrt(2)
    for c in range(10):
        rows = delta[labels == c]
        if rows.size:
            np.testing.assert_array_equal(rows, np.broadcast_to(rows[0], rows.shape))
            norm = np.linalg.norm(rows[0].astype(np.float64))
            steps = ref.num_steps(bounds[c], np.float32(0.03)) if signs[c] else 0
            assert norm <= factor * steps * 0.03 * (1 + 1e-5) + 1e-7
            assert norm <= factor * bounds[c] * (1 + 1e-5) + 1e-7


def test_bfloat16_logits():
    logits, labels, signs, bounds = _problem(10, 32, seed=12, scale=5.0)
    logits_bf16 = jnp.asarray(logits, jnp.bfloat16)
    delta = solve(logits_bf16, labels, signs, bounds, 0.05)
    assert delta.dtype == jnp.bfloat16
    delta = np.asarray(delta, np.float32)
    # The same numbers in float32: equal up to the bfloat16 rounding of the output.
    expected = ref.lpl_perturbation(
        np.asarray(logits_bf16, np.float32), labels, signs, bounds, np.float32(0.05)
    )
    np.testing.assert_allclose(delta, expected, atol=2e-3)
    # And close to the float32 logits' result.
    np.testing.assert_allclose(delta, solve(logits, labels, signs, bounds, 0.05), atol=2e-2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_huge_logits_stay_finite(dtype):
    logits, labels, signs, bounds = _problem(10, 32, seed=13, scale=1e4)
    signs = np.where(signs == 0, 1, signs)
    delta = solve(jnp.asarray(logits, dtype), labels, signs, bounds, 0.05)
    assert delta.dtype == dtype
    delta = np.asarray(delta, np.float32)
    assert np.all(np.isfinite(delta))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    bound = np.sqrt(2) * bounds[labels]  # the paper's step: |g_c| <= sqrt(2)
    assert np.all(np.linalg.norm(delta, axis=1) <= bound * (1 + tol) + 1e-7)


def test_one_trace_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(logits, labels, signs, bounds, step_size):
        return lpjax.lpl_perturbation(
            logits, labels, signs=signs, bounds=bounds, step_size=step_size
        )

    for seed in range(4):
        logits, labels, signs, bounds = _problem(10, 16, seed=100 + seed, scale=5.0)
        step_size = 0.01 * (seed + 1)
        delta = f(
            jnp.asarray(logits),
            jnp.asarray(labels, jnp.int32),
            jnp.asarray(signs, jnp.int32),
            jnp.asarray(bounds),
            jnp.asarray(step_size, jnp.float32),
        )
        expected = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(step_size))
        np.testing.assert_allclose(delta, expected, atol=1e-5)


# ----------------------------------------------------------------------------- gradients


def _grad_problem():
    logits, labels, signs, bounds = _problem(10, 32, seed=14, scale=3.0)
    return logits, labels, np.where(signs == 0, 1, signs), bounds


def test_gradient_is_softmax_minus_onehot():
    logits, labels, signs, bounds = _grad_problem()

    def loss(u):
        delta = jax.lax.stop_gradient(
            lpjax.lpl_perturbation(u, labels, signs=signs, bounds=bounds, step_size=0.05)
        )
        return optax.softmax_cross_entropy_with_integer_labels(u + delta, labels).sum()

    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(logits)))
    delta = ref.lpl_perturbation(logits, labels, signs, bounds, np.float32(0.05))
    assert np.abs(delta).max() > 0.01
    expected = ref.softmax(logits + delta) - np.eye(10)[labels]
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_no_gradient_flows_through_the_solver():
    logits, labels, signs, bounds = _grad_problem()

    def total(u):
        return lpjax.lpl_perturbation(u, labels, signs=signs, bounds=bounds, step_size=0.05).sum()

    np.testing.assert_array_equal(jax.jit(jax.grad(total))(jnp.asarray(logits)), 0.0)


def test_check_grads_with_fixed_delta():
    logits, labels, signs, bounds = _grad_problem()
    delta = solve(logits, labels, signs, bounds, 0.05)

    @jax.jit
    def loss(u):
        return optax.softmax_cross_entropy_with_integer_labels(u + delta, labels).sum()

    check_grads(loss, (jnp.asarray(logits),), order=1, modes=("fwd", "rev"), atol=5e-2, rtol=5e-2)

    # The full loss (delta solved inside, held fixed by stop_gradient) has the same gradient.
    @jax.jit
    def full(u):
        delta = lpjax.lpl_perturbation(u, labels, signs=signs, bounds=bounds, step_size=0.05)
        return optax.softmax_cross_entropy_with_integer_labels(u + delta, labels).sum()

    np.testing.assert_allclose(
        jax.grad(full)(jnp.asarray(logits)), jax.grad(loss)(jnp.asarray(logits)), atol=1e-6
    )


def test_zero_perturbation_equals_plain_cross_entropy():
    logits, labels, _, _ = _problem(10, 32, seed=15, scale=5.0)
    transform = lpjax.lpl_mean_rule_transform(epsilon=0.001, step_size=0.01)

    @jax.jit
    def lpl_loss(u):
        perturbed, _ = transform.apply(u, labels, transform.init())
        return lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels)

    @jax.jit
    def plain_loss(u):
        return optax.softmax_cross_entropy_with_integer_labels(u, labels)

    u = jnp.asarray(logits)
    np.testing.assert_allclose(lpl_loss(u), plain_loss(u), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(jax.grad(lambda u: lpl_loss(u).sum()))(u),
        jax.jit(jax.grad(lambda u: plain_loss(u).sum()))(u),
    )
    np.testing.assert_allclose(lpl_loss(u), ref.cross_entropy(logits, labels), rtol=1e-5)


# ----------------------------------------------------------------------------- scale


def test_inaturalist_scale():
    batch, num_classes = 256, 8142
    rng = np.random.default_rng(16)
    logits = jnp.asarray(rng.normal(size=(batch, num_classes)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, num_classes, batch), jnp.int32)
    signs = jnp.asarray(rng.choice([-1, 1], num_classes), jnp.int32)
    bounds = jnp.full(num_classes, 0.5, jnp.float32)  # 50 steps of 0.01
    step_size = jnp.asarray(0.01, jnp.float32)

    compiled = _solve.lower(
        logits, labels, signs, bounds, step_size, None, normalize=True
    ).compile()
    hlo = compiled.as_text()
    assert "f32[256,8142]" in hlo  # the check below looks at the right text
    assert f"[{num_classes},{num_classes}]" not in hlo  # no C x C matrix of any dtype
    assert f"[50,{batch},{num_classes}]" not in hlo  # no K x B x C stack

    delta = compiled(logits, labels, signs, bounds, step_size, None).block_until_ready()

    np.testing.assert_allclose(np.linalg.norm(np.asarray(delta), axis=1), 0.5, rtol=1e-4)
    # Spot-check a few classes against the reference.
    labels_np = np.asarray(labels)
    keep = np.isin(labels_np, labels_np[:4])
    expected = ref.lpl_perturbation(
        np.asarray(logits)[keep],
        labels_np[keep],
        np.asarray(signs),
        np.asarray(bounds),
        0.01,
        normalize=True,
    )
    np.testing.assert_allclose(np.asarray(delta)[keep], expected, atol=1e-5)

    memory = compiled.memory_analysis()
    if memory is None or not hasattr(memory, "temp_size_in_bytes"):
        pytest.skip("memory_analysis() is not available for this backend")
    assert memory.temp_size_in_bytes < 300 * 2**20
