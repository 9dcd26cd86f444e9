"""Tests for the class-count priors (LA offsets, LDAM margins, class-balanced weights)."""

import jax
import numpy as np
import pytest
import reference as ref

import lpjax

_COUNTS = [
    [3, 1],
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],  # CIFAR-10-LT, r = 100
    [1, 1, 1, 1],
    [17, 250000, 3, 999, 42],  # not in frequency order
]


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("counts", _COUNTS)
def test_logit_adjustment(counts, tau):
    offsets = lpjax.logit_adjustment(counts, tau=tau)
    assert offsets.dtype == np.float32 and offsets.shape == (len(counts),)
    np.testing.assert_allclose(offsets, ref.logit_adjustment(counts, tau), rtol=1e-6, atol=1e-6)


def test_logit_adjustment_hand_values():
    # pi = (3/4, 1/4): log pi = (log 0.75, log 0.25) = (-0.2876821, -1.3862944).
    np.testing.assert_allclose(
        lpjax.logit_adjustment([3, 1], tau=1.0), [-0.2876821, -1.3862944], rtol=1e-6
    )


def test_logit_adjustment_traced_tau():
    counts = _COUNTS[1]
    offsets = jax.jit(lambda tau: lpjax.logit_adjustment(counts, tau=tau))(1.5)
    np.testing.assert_allclose(offsets, ref.logit_adjustment(counts, 1.5), rtol=1e-6)


@pytest.mark.parametrize("max_margin", [0.5, 1.0, 0.0])
@pytest.mark.parametrize("counts", _COUNTS)
def test_ldam_margins(counts, max_margin):
    margins = lpjax.ldam_margins(counts, max_margin=max_margin)
    assert margins.dtype == np.float32
    np.testing.assert_allclose(margins, ref.ldam_margins(counts, max_margin), rtol=1e-6, atol=1e-7)
    # The rarest class gets the largest margin M.
    assert float(margins[int(np.argmin(counts))]) == pytest.approx(max_margin, rel=1e-6)


def test_ldam_margins_hand_values():
    # n^(-1/4) = (16^(-1/4), 1) = (0.5, 1); M = 0.5 -> (0.25, 0.5).
    np.testing.assert_allclose(lpjax.ldam_margins([16, 1], max_margin=0.5), [0.25, 0.5])


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
@pytest.mark.parametrize("counts", _COUNTS)
def test_class_balanced_weights(counts, beta):
    weights = lpjax.class_balanced_weights(counts, beta=beta)
    assert weights.dtype == np.float32
    # float32 accuracy against the float64 formula (the result is rounded once to float32).
    np.testing.assert_allclose(weights, ref.class_balanced_weights(counts, beta), rtol=2e-7)
    assert float(weights.sum()) == pytest.approx(len(counts), rel=1e-5)


def test_class_balanced_weights_traced_beta():
    # Traced, beta is a float32: 0.9999 is off by 1.7e-8, 1 - beta by 1.7e-4 relative.
    counts = np.array(_COUNTS[3])
    traced = jax.jit(lambda b: lpjax.class_balanced_weights(counts, beta=b))(0.9999)
    np.testing.assert_allclose(traced, ref.class_balanced_weights(counts, 0.9999), rtol=5e-4)


def test_class_balanced_weights_favour_rare_classes():
    counts = np.array(_COUNTS[3])
    weights = np.asarray(lpjax.class_balanced_weights(counts, beta=0.999))
    assert np.all(np.diff(weights[np.argsort(counts)]) < 0)
    np.testing.assert_allclose(lpjax.class_balanced_weights([100, 100], beta=0.9), [1.0, 1.0])
