"""lpjax's softmax cross-entropy keeps optax's name, so it keeps optax's signature and values
(out-of-range labels included), computed in float32 at least."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref

import lpjax

RNG = np.random.default_rng(0)
B, C = 12, 5
LOGITS = RNG.normal(size=(B, C)).astype(np.float32) * 3
LABELS = RNG.integers(0, C, size=B).astype(np.int32)
WHERE = RNG.random(B) > 0.3

loss_fn = jax.jit(lpjax.softmax_cross_entropy_with_integer_labels, static_argnames="axis")


def test_signature_is_optaxs():
    ours = inspect.signature(lpjax.softmax_cross_entropy_with_integer_labels)
    theirs = inspect.signature(optax.softmax_cross_entropy_with_integer_labels)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()
    ]
    # Positional, as optax allows.
    np.testing.assert_allclose(
        lpjax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS, -1, WHERE),
        optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS, -1, WHERE),
    )


def test_values_against_numpy_and_optax():
    loss = loss_fn(LOGITS, LABELS)
    assert loss.shape == (B,) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, ref.cross_entropy(LOGITS, LABELS), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        loss, optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS)
    )


def test_where_equals_slicing_and_masked_rows_are_zero_with_no_gradient():
    loss = loss_fn(LOGITS, LABELS, where=WHERE)
    np.testing.assert_array_equal(loss[~WHERE], 0.0)
    np.testing.assert_allclose(loss[WHERE], loss_fn(LOGITS[WHERE], LABELS[WHERE]), rtol=1e-6)
    grad = jax.grad(lambda u: loss_fn(u, LABELS, where=WHERE).sum())(LOGITS)
    np.testing.assert_array_equal(grad[~WHERE], 0.0)
    assert np.all(np.isfinite(grad))


def test_out_of_range_labels_give_what_optax_gives():
    labels = LABELS.copy()
    labels[[1, 4, 7]] = [C, C + 3, -1]
    loss = np.asarray(loss_fn(LOGITS, labels))
    want = np.asarray(optax.softmax_cross_entropy_with_integer_labels(LOGITS, labels))
    np.testing.assert_array_equal(loss, want)
    assert np.isnan(loss[1]) and np.isnan(loss[4])  # at or above num_classes: NaN
    np.testing.assert_allclose(loss[7], ref.cross_entropy(LOGITS[7:8], [C - 1])[0], rtol=1e-5)
    in_range = (labels >= 0) & (labels < C)
    np.testing.assert_allclose(
        loss[in_range], ref.cross_entropy(LOGITS[in_range], labels[in_range]), 1e-5
    )
    # Masked with where, as padding should be: 0.
    masked = np.asarray(loss_fn(LOGITS, labels, where=in_range))
    np.testing.assert_array_equal(masked[~in_range], 0.0)


def test_class_masks_and_axes_as_in_optax():
    class_mask = RNG.random((B, C)) > 0.2
    class_mask[np.arange(B), LABELS] = True
    np.testing.assert_allclose(
        loss_fn(LOGITS, LABELS, where=class_mask),
        optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS, where=class_mask),
        rtol=1e-6,
    )
    # Classes first, and [B, T, C] sequence logits.
    np.testing.assert_allclose(loss_fn(LOGITS.T, LABELS, axis=0), loss_fn(LOGITS, LABELS), 1e-6)
    seq = RNG.normal(size=(3, 4, C)).astype(np.float32)
    seq_labels = RNG.integers(0, C, size=(3, 4)).astype(np.int32)
    np.testing.assert_allclose(
        loss_fn(seq, seq_labels),
        loss_fn(seq.reshape(12, C), seq_labels.reshape(12)).reshape(3, 4),
        rtol=1e-6,
    )
    grid = RNG.normal(size=(2, 3, 4)).astype(np.float32)  # 12 classes in a 3 x 4 slice
    flat_labels = np.array([5, 11], np.int32)
    np.testing.assert_allclose(
        loss_fn(grid, flat_labels, axis=(1, 2)),
        optax.softmax_cross_entropy_with_integer_labels(grid, flat_labels, axis=(1, 2)),
        rtol=1e-6,
    )


def test_bfloat16_logits_are_computed_in_float32():
    logits = jnp.asarray(LOGITS * 10, jnp.bfloat16)
    loss = loss_fn(logits, LABELS)
    assert loss.dtype == jnp.bfloat16
    want = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), LABELS)
    np.testing.assert_array_equal(loss, want.astype(jnp.bfloat16))


def test_arguments_are_checked():
    fn = lpjax.softmax_cross_entropy_with_integer_labels
    with pytest.raises(TypeError, match="labels must be integer"):
        fn(LOGITS, LABELS.astype(np.float32))
    with pytest.raises(TypeError, match="logits must be a floating array"):
        fn(LOGITS.astype(np.int32), LABELS)
    with pytest.raises(ValueError, match=r"labels must have shape \[batch\] = \(12,\)"):
        fn(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
        fn(LOGITS, np.eye(C, dtype=np.int32)[LABELS])  # integer one-hot
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        fn(LOGITS, LABELS, axis=2)
    with pytest.raises(ValueError, match=r"where must have shape \[batch\]"):
        fn(LOGITS, LABELS, where=WHERE[:3])
    with pytest.raises(TypeError, match="where must be a boolean array"):
        fn(LOGITS, LABELS, where=WHERE.astype(np.int32))
