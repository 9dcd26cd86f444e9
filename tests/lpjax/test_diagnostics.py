"""Tests for lpjax.relative_loss_variation (method.md section 2) against tests/reference.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

import lpjax


@jax.jit
def _variation(logits, perturbed_logits, labels, where):
    return lpjax.relative_loss_variation(logits, perturbed_logits, labels, where=where)


def variation(logits, perturbed_logits, labels, where=None):
    return np.asarray(
        _variation(
            jnp.asarray(logits, jnp.float32),
            jnp.asarray(perturbed_logits, jnp.float32),
            jnp.asarray(labels, jnp.int32),
            None if where is None else jnp.asarray(where, bool),
        )
    )


def _batch(num_classes, batch=64, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, (batch, num_classes)).astype(np.float32)
    perturbed = (logits + rng.normal(0, 0.5, logits.shape)).astype(np.float32)
    labels = rng.integers(0, num_classes - 2, batch)  # the last two classes absent
    return logits, perturbed, labels


@pytest.mark.parametrize("num_classes", [10, 100])
def test_matches_reference(num_classes):
    logits, perturbed, labels = _batch(num_classes, seed=num_classes)
    v = variation(logits, perturbed, labels)
    expected = ref.relative_loss_variation(logits, perturbed, labels)
    assert v.shape == (num_classes,) and v.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(v), np.isnan(expected))
    assert np.isnan(v[-2:]).all()
    np.testing.assert_allclose(v, expected, rtol=1e-4, atol=1e-6)


def test_hand_values():
    # One sample of class 0 with u = (0, 0): l = log 2. Perturbed u' = (0, log 3):
    # l' = log(1 + 3) = log 4 = 2 log 2, so (l' - l) / l = 1. Class 1 is absent.
    v = variation([[0.0, 0.0]], [[0.0, np.log(3.0)]], [0])
    assert v[0] == pytest.approx(1.0, rel=1e-6)
    assert np.isnan(v[1])


def test_where_mask_equals_slicing():
    logits, perturbed, labels = _batch(10, seed=1)
    where = np.random.default_rng(1).random(64) < 0.5
    v = variation(logits, perturbed, labels, where)
    expected = ref.relative_loss_variation(logits[where], perturbed[where], labels[where])
    np.testing.assert_array_equal(np.isnan(v), np.isnan(expected))
    np.testing.assert_allclose(v, expected, rtol=1e-4, atol=1e-6)
    # A class whose only samples are masked is absent.
    labels = labels.copy()
    labels[~where] = 9
    assert np.isnan(variation(logits, perturbed, labels, where)[9])


def test_out_of_range_labels_are_masked():
    logits, perturbed, labels = _batch(10, seed=2)
    labels = labels.copy()
    labels[:4] = [-1, 10, 11, -3]
    v = variation(logits, perturbed, labels)
    expected = ref.relative_loss_variation(logits[4:], perturbed[4:], labels[4:])
    np.testing.assert_allclose(v, expected, rtol=1e-4, atol=1e-6)


def test_logit_adjustment_lowers_head_and_raises_tail_losses():
    counts = np.floor(5000 * 100.0 ** (-np.arange(10) / 9)).astype(int)
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 0.5, (512, 10)).astype(np.float32)
    labels = np.arange(512) % 10
    adjusted = logits + np.asarray(lpjax.logit_adjustment(counts, tau=1.0))
    v = variation(logits, adjusted, labels)
    expected = ref.relative_loss_variation(logits, logits + ref.logit_adjustment(counts), labels)
    np.testing.assert_allclose(v, expected, rtol=1e-4, atol=1e-6)
    prior = counts / counts.sum()
    head, tail = prior > 2 / 10, prior < 0.5 / 10
    assert head.sum() >= 2 and tail.sum() >= 3
    assert np.all(v[head] < 0)
    assert np.all(v[tail] > 0)
    # The most frequent class always loses loss, the rarest always gains.
    assert v[0] < 0 < v[-1]


def test_ldam_margins_raise_every_class_loss():
    # The margin part of LDAM (scale 1: the scale is a temperature the network
    # absorbs) subtracts m_y > 0 from the true logit: every loss goes up.
    counts = np.floor(5000 * 100.0 ** (-np.arange(10) / 9)).astype(int)
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (256, 10)).astype(np.float32)
    labels = np.arange(256) % 10
    transform = lpjax.ldam_transform(counts, max_margin=0.5, scale=1.0)
    perturbed, _ = transform.apply(jnp.asarray(logits), jnp.asarray(labels), transform.init())
    v = variation(logits, perturbed, labels)
    expected = ref.relative_loss_variation(
        logits, ref.ldam_logits(logits, labels, counts, 0.5, 1.0), labels
    )
    np.testing.assert_allclose(v, expected, rtol=1e-4, atol=1e-6)
    assert np.all(v > 0)
    # Tail classes get the largest margins, hence (on average) the largest increase.
    assert v[-1] > v[0]
