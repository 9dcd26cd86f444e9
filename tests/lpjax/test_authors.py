"""The authors' scripts' LPL (lpjax._authors) against a loop-by-loop NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpjax


def _softmax(u):
    e = np.exp(u - u.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference(logits, labels, signs, steps, alpha, where):
    """The scripts' loop, written out: per inner step the [C, C] class-mean gradient
    matrix, each entry divided by its column's norm, each class moved while k < K_c."""
    u = np.array(logits, np.float64)
    num_classes = u.shape[1]
    for k in range(max(steps)):
        g = _softmax(u) - np.eye(num_classes)[labels]
        class_mean = np.zeros((num_classes, num_classes))
        for c in range(num_classes):
            rows = [i for i in range(len(u)) if labels[i] == c and where[i]]
            if rows:
                class_mean[c] = g[rows].mean(0)
        norms = np.sqrt((class_mean**2).sum(0))
        direction = class_mean / np.maximum(norms, 1e-12)
        for i in range(len(u)):
            c = labels[i]
            if where[i] and k < steps[c]:
                u[i] = u[i] + signs[c] * alpha * direction[c]
    return u


def _loss(u, labels):
    p = _softmax(u)
    return -np.log(p[np.arange(len(u)), labels]).sum()


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 4))
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 0])
    where = np.array([True] * 11 + [False])
    return logits, labels, where


def test_step_counts_follow_the_scripts_rule_with_no_floor():
    counts = np.floor(5000 * 100.0 ** (-np.arange(10) / 9))  # CIFAR-10-LT, r = 100
    signs, steps = lpjax.authors_step_counts(
        counts[::-1], num_head_classes=4, num_steps=10, head_scale=0.6
    )  # classes given rarest first: ranked by count, not by index
    assert signs.tolist() == [1] * 6 + [-1] * 4
    # head: trunc(0.6 * 10 * n_c / 5000); tail: trunc(10 * 50 / n_c), 0 allowed.
    assert steps.tolist() == [10, 6, 3, 2, 1, 0, 1, 2, 3, 6]


def test_perturbation_matches_the_numpy_loop(batch):
    logits, labels, where = batch
    signs, steps = np.array([-1, 1, 1, 1]), np.array([2, 1, 3, 5])
    got = lpjax.authors_lpl_perturbation(
        jnp.asarray(logits, jnp.float32), labels, signs, steps, step_size=0.3, where=where
    )
    expected = _reference(logits, labels, signs, steps, 0.3, where)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[-1], np.float32(logits[-1]))  # padding never moves


def test_gradient_flows_through_the_unrolled_loop(batch):
    logits, labels, where = batch
    signs, steps = np.array([-1, 1, 1, 1]), np.array([2, 1, 3, 5])
    real = where.astype(np.float64)

    def loss(u):
        perturbed = lpjax.authors_lpl_perturbation(
            u, labels, signs, steps, step_size=0.3, where=where
        )
        return -jnp.sum(real * jax.nn.log_softmax(perturbed)[jnp.arange(12), labels])

    with jax.enable_x64():
        grad = np.asarray(jax.grad(loss)(jnp.asarray(logits, jnp.float64)))
    # Central differences of the NumPy reference: an independent gradient.
    numeric = np.zeros_like(logits)
    h = 1e-6
    for i in range(11):
        for j in range(4):
            up, down = logits.copy(), logits.copy()
            up[i, j] += h
            down[i, j] -= h
            f = lambda x: _loss(_reference(x, labels, signs, steps, 0.3, where)[:11], labels[:11])
            numeric[i, j] = (f(up) - f(down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    # It is not the paper's (Danskin) gradient, softmax(u^K) - e_y with delta held fixed.
    perturbed = _reference(logits, labels, signs, steps, 0.3, where)
    danskin = (_softmax(perturbed) - np.eye(4)[labels]) * real[:, None]
    assert np.abs(grad - danskin).max() > 1e-3


def test_transform_bounds_checks_and_no_axis_name():
    transform = lpjax.lpl_authors_longtail_transform(
        [500, 50, 5], num_head_classes=1, num_steps=4, step_size=0.1, head_scale=0.5
    )
    logits = jnp.zeros((3, 3))
    u, _ = transform.apply(logits, jnp.array([0, 1, 2]), transform.init())
    # Each step moves a class by at most alpha per entry (a column's norm bounds its entry).
    assert np.abs(np.asarray(u)).max() <= 4 * 0.1 + 1e-6
    with pytest.raises(ValueError, match="axis_name"):
        transform.apply(logits, jnp.array([0, 1, 2]), transform.init(), axis_name="data")
    with pytest.raises(ValueError, match="num_steps"):
        lpjax.authors_step_counts([5, 1], num_head_classes=1, num_steps=0, head_scale=1.0)
