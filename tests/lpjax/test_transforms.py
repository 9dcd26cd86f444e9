"""Tests for the logit transforms and the loss on their output (method.md 2, 3.4)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref

import lpjax

NUM_CLASSES = 10
COUNTS = np.array([40, 5000, 83, 1796, 645, 2997, 139, 50, 387, 232])  # not sorted
rng = np.random.default_rng(0)
LOGITS = rng.normal(0, 2, (32, NUM_CLASSES)).astype(np.float32)
LABELS = np.concatenate([np.arange(NUM_CLASSES - 1), rng.integers(0, NUM_CLASSES - 1, 23)])
WHERE = rng.random(32) < 0.75


def apply(transform, logits=LOGITS, labels=LABELS, where=None):
    """Runs ``transform.apply`` under jit with the state passed through as a pytree."""

    @jax.jit
    def run(logits, labels, state, where):
        return transform.apply(logits, labels, state, where=where)

    state = transform.init()
    out, new_state = run(
        jnp.asarray(logits),
        None if labels is None else jnp.asarray(labels, jnp.int32),
        state,
        None if where is None else jnp.asarray(where, bool),
    )
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    return out


def _ref_lpl_mean_rule(logits, labels, epsilon, step_size, delta_epsilon=0.0, where=None):
    signs, bounds = ref.mean_rule_signs_and_bounds(logits, labels, epsilon, delta_epsilon, where)
    # lpjax hands float32 bounds to the solver.
    bounds = bounds.astype(np.float32)
    return logits + ref.lpl_perturbation(logits, labels, signs, bounds, step_size, where)


def _ref_lpl_longtail(logits, labels, num_head, epsilon, step_size, delta_epsilon=0.0, where=None):
    signs, bounds = ref.longtail_signs_and_bounds(COUNTS, num_head, epsilon, delta_epsilon)
    bounds = bounds.astype(np.float32)
    return logits + ref.lpl_perturbation(logits, labels, signs, bounds, step_size, where)


# ----------------------------------------------------------------------------- each transform


def test_identity():
    np.testing.assert_array_equal(apply(lpjax.identity()), LOGITS)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjustment_transform(tau):
    out = apply(lpjax.logit_adjustment_transform(COUNTS, tau=tau))
    np.testing.assert_allclose(
        out, LOGITS + ref.logit_adjustment(COUNTS, tau), rtol=1e-6, atol=1e-5
    )


def test_posthoc_logit_adjustment_needs_no_labels():
    out = apply(lpjax.posthoc_logit_adjustment_transform(COUNTS, tau=1.5), labels=None)
    np.testing.assert_allclose(
        out, LOGITS - ref.logit_adjustment(COUNTS, 1.5), rtol=1e-6, atol=1e-5
    )


def test_mean_rule_softmax_is_logit_adjustment_with_tau_one():
    out = apply(lpjax.balanced_softmax_transform(COUNTS))
    np.testing.assert_allclose(out, LOGITS + np.log(COUNTS), rtol=1e-6, atol=1e-5)
    # Same softmax (and loss) as LA with tau = 1: the offsets differ by log(sum n).
    la = LOGITS + ref.logit_adjustment(COUNTS, 1.0)
    np.testing.assert_allclose(ref.softmax(out), ref.softmax(la), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [30.0, 1.0])
def test_ldam_transform(scale):
    out = apply(lpjax.ldam_transform(COUNTS, max_margin=0.5, scale=scale))
    expected = ref.ldam_logits(LOGITS, LABELS, COUNTS, 0.5, scale)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * scale)


def test_ldam_gradient_flows_through_the_scale():
    transform = lpjax.ldam_transform(COUNTS, max_margin=0.5, scale=30.0)
    grad = jax.jit(jax.grad(lambda u: _perturbed_loss(transform, u, LABELS)[0].sum()))(
        jnp.asarray(LOGITS)
    )
    z = ref.ldam_logits(LOGITS, LABELS, COUNTS, 0.5, 30.0)
    expected = 30.0 * (ref.softmax(z) - np.eye(NUM_CLASSES)[LABELS])
    np.testing.assert_allclose(grad, expected, atol=1e-4)


@pytest.mark.parametrize("delta_epsilon", [0.0, 2.0])
def test_lpl_mean_rule_transform(delta_epsilon):
    transform = lpjax.lpl_mean_rule_transform(
        epsilon=0.2, step_size=0.05, delta_epsilon=delta_epsilon
    )
    out = apply(transform, where=WHERE)
    expected = _ref_lpl_mean_rule(LOGITS, LABELS, 0.2, np.float32(0.05), delta_epsilon, WHERE)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - LOGITS).max() > 0.1


@pytest.mark.parametrize(
    "num_head, head_scale, normalize",
    [(0, 1.0, False), (3, 0.2, False), (3, 0.0, True), (10, 1.0, True)],
)
def test_lpl_longtail_transform(num_head, head_scale, normalize):
    transform = lpjax.lpl_longtail_transform(
        COUNTS,
        num_head_classes=num_head,
        epsilon=0.1,
        step_size=0.05,
        delta_epsilon=0.2,
        head_scale=head_scale,
        normalize=normalize,
    )
    out = apply(transform, where=WHERE)
    signs, bounds = ref.longtail_signs_and_bounds(COUNTS, num_head, 0.1, 0.2, head_scale)
    expected = LOGITS + ref.lpl_perturbation(
        LOGITS, LABELS, signs, bounds, np.float32(0.05), WHERE, normalize
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(out[~WHERE], LOGITS[~WHERE])
    if head_scale == 0:  # the head classes are left alone
        head = np.isin(LABELS, np.argsort(-COUNTS, kind="stable")[:num_head]) & WHERE
        np.testing.assert_array_equal(out[head], LOGITS[head])


def test_chain_la_then_lpl_runs_lpl_on_adjusted_logits():
    transform = lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS, tau=1.0),
        lpjax.lpl_longtail_transform(
            COUNTS, num_head_classes=4, epsilon=0.1, step_size=0.05, delta_epsilon=0.2
        ),
    )
    assert isinstance(transform.init(), tuple) and len(transform.init()) == 2
    out = apply(transform, where=WHERE)
    adjusted = (LOGITS + ref.logit_adjustment(COUNTS, 1.0)).astype(np.float32)
    expected = _ref_lpl_longtail(adjusted, LABELS, 4, 0.1, np.float32(0.05), 0.2, WHERE)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    # Not the same as LPL on the plain logits followed by LA (order matters).
    other = _ref_lpl_longtail(LOGITS, LABELS, 4, 0.1, np.float32(0.05), 0.2, WHERE)
    assert np.abs(other + ref.logit_adjustment(COUNTS, 1.0) - expected).max() > 1e-3


def test_chain_balanced_lpl_after_la_splits_on_adjusted_logits():
    transform = lpjax.chain(
        lpjax.logit_adjustment_transform(COUNTS, tau=1.0),
        lpjax.lpl_mean_rule_transform(epsilon=0.2, step_size=0.05),
    )
    out = apply(transform)
    adjusted = (LOGITS + ref.logit_adjustment(COUNTS, 1.0)).astype(np.float32)
    np.testing.assert_allclose(
        out, _ref_lpl_mean_rule(adjusted, LABELS, 0.2, np.float32(0.05)), atol=2e-5
    )


def test_chain_of_nothing_and_of_identity():
    np.testing.assert_array_equal(apply(lpjax.chain()), LOGITS)
    np.testing.assert_array_equal(apply(lpjax.chain(lpjax.identity(), lpjax.identity())), LOGITS)


# ----------------------------------------------------------------------------- the loss


_LA_LPL = lpjax.chain(
    lpjax.logit_adjustment_transform(COUNTS, tau=1.0),
    lpjax.lpl_longtail_transform(COUNTS, num_head_classes=4, epsilon=0.1, step_size=0.05),
)


def _perturbed_loss(transform, logits, labels, state=None, where=None):
    """The README's step: transform, then lpjax's masked cross-entropy."""
    state = transform.init() if state is None else state
    perturbed, state = transform.apply(logits, labels, state, where=where)
    loss = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels, where=where)
    return loss, perturbed, state


@jax.jit
def _la_lpl_loss(logits, labels, state, where):
    return _perturbed_loss(_LA_LPL, logits, labels, state, where)


def test_perturbed_cross_entropy_values_and_mask():
    labels = LABELS.copy()
    labels[[3, 7]] = [NUM_CLASSES, -1]  # out of range: masked too
    loss, perturbed, state = _la_lpl_loss(LOGITS, labels, _LA_LPL.init(), WHERE)
    assert loss.shape == (32,) and loss.dtype == jnp.float32
    assert jax.tree.structure(state) == jax.tree.structure(_LA_LPL.init())
    valid = WHERE & (labels >= 0) & (labels < NUM_CLASSES)
    np.testing.assert_array_equal(loss[~WHERE], 0.0)
    # The transform leaves out-of-range labels out; the loss is optax's (NaN at or above C).
    np.testing.assert_array_equal(
        loss, optax.softmax_cross_entropy_with_integer_labels(perturbed, labels, where=WHERE)
    )
    adjusted = (LOGITS + ref.logit_adjustment(COUNTS, 1.0)).astype(np.float32)
    expected_logits = _ref_lpl_longtail(adjusted, labels, 4, 0.1, np.float32(0.05), 0.0, valid)
    np.testing.assert_allclose(perturbed[valid], expected_logits[valid], atol=2e-5)
    expected = ref.cross_entropy(expected_logits[valid], labels[valid])
    np.testing.assert_allclose(loss[valid], expected, rtol=1e-5, atol=1e-5)


def test_perturbed_cross_entropy_with_identity_is_optax():
    loss, _, state = jax.jit(_perturbed_loss, static_argnums=0)(lpjax.identity(), LOGITS, LABELS)
    assert state == optax.EmptyState()
    np.testing.assert_allclose(loss, ref.cross_entropy(LOGITS, LABELS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loss, optax.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS), rtol=1e-6
    )


def test_lpl_loss_gradient_treats_delta_as_constant():
    grad = jax.jit(jax.grad(lambda u: _perturbed_loss(_LA_LPL, u, LABELS, where=WHERE)[0].sum()))(
        jnp.asarray(LOGITS)
    )
    adjusted = (LOGITS + ref.logit_adjustment(COUNTS, 1.0)).astype(np.float32)
    z = _ref_lpl_longtail(adjusted, LABELS, 4, 0.1, np.float32(0.05), 0.0, WHERE)
    expected = (ref.softmax(z) - np.eye(NUM_CLASSES)[LABELS]) * WHERE[:, None]
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def _ref_la_lpl(logits, labels):
    adjusted = (logits + ref.logit_adjustment(COUNTS, 1.0)).astype(np.float32)
    return _ref_lpl_longtail(adjusted, labels, 4, 0.1, np.float32(0.05))


@pytest.mark.parametrize(
    "make, reference",
    [
        (
            lambda: lpjax.logit_adjustment_transform(COUNTS),
            lambda u, y: u + ref.logit_adjustment(COUNTS),
        ),
        (
            lambda: lpjax.ldam_transform(COUNTS, scale=1.0),
            lambda u, y: ref.ldam_logits(u, y, COUNTS, 0.5, 1.0),
        ),
        (
            lambda: lpjax.lpl_mean_rule_transform(epsilon=0.2, step_size=0.05),
            lambda u, y: _ref_lpl_mean_rule(u, y, 0.2, np.float32(0.05)),
        ),
        (lambda: _LA_LPL, _ref_la_lpl),
    ],
    ids=["la", "ldam", "lpl_mean_rule", "la_lpl"],
)
def test_bfloat16(make, reference):
    transform = make()
    logits_bf16 = jnp.asarray(LOGITS, jnp.bfloat16)
    loss, perturbed, _ = jax.jit(_perturbed_loss, static_argnums=0)(transform, logits_bf16, LABELS)
    assert perturbed.dtype == jnp.bfloat16
    assert loss.dtype == jnp.bfloat16 and loss.shape == (32,)
    # The float32 result on the same (bfloat16) numbers, up to bfloat16 rounding.
    expected = reference(np.asarray(logits_bf16, np.float32), LABELS)
    np.testing.assert_allclose(np.asarray(perturbed, np.float32), expected, rtol=1e-2, atol=2e-2)
    np.testing.assert_allclose(
        np.asarray(loss, np.float32), ref.cross_entropy(expected, LABELS), rtol=2e-2, atol=2e-2
    )


class _State(NamedTuple):
    value: int


class _Other(NamedTuple):
    value: int


def test_get_and_set_transform_state_in_hand_built_tuples():
    empty = optax.EmptyState()
    # A bare state, a chain's tuple, and a chain nested in a chain.
    assert lpjax.get_transform_state(_State(1), _State) == _State(1)
    assert lpjax.set_transform_state(_State(1), _State, _State(2)) == _State(2)
    flat = (empty, _State(1), _Other(5))
    assert lpjax.get_transform_state(flat, _State) == _State(1)
    assert lpjax.get_transform_state(flat, _Other) == _Other(5)
    assert lpjax.set_transform_state(flat, _State, _State(2)) == (empty, _State(2), _Other(5))
    assert flat == (empty, _State(1), _Other(5))  # unchanged
    nested = (empty, (_Other(5), (empty, _State(3))))
    assert lpjax.get_transform_state(nested, _State) == _State(3)
    replaced = lpjax.set_transform_state(nested, _State, _State(4))
    assert replaced == (empty, (_Other(5), (empty, _State(4))))
    assert type(replaced[1]) is tuple and type(replaced[1][1]) is tuple


def test_get_transform_state_needs_exactly_one_match():
    with pytest.raises(ValueError, match="exactly one _State.*found none"):
        lpjax.get_transform_state((optax.EmptyState(), _Other(1)), _State)
    with pytest.raises(ValueError, match=r"found 2, at \[\(0,\), \(1, 0\)\]"):
        lpjax.set_transform_state((_State(1), (_State(2),)), _State, _State(3))


def test_chain_passes_theta_to_meta_lpl_and_state_is_reachable():
    counts = np.array([40, 20, 10])
    meta = lpjax.lpl_meta_transform(
        3, max_epsilon=1.0, step_size=0.1, meta_optimizer=optax.sgd(0.1)
    )
    la = lpjax.logit_adjustment_transform(counts)
    transform = lpjax.chain(la, meta)
    state = transform.init()
    logits = jax.random.normal(jax.random.key(0), (6, 3))
    labels = jnp.arange(6) % 3
    theta = jnp.array([0.5, -0.3, 0.2])
    perturbed, new_state = transform.apply(logits, labels, state, theta=theta)
    adjusted, _ = la.apply(logits, labels, la.init())
    expected = adjusted + meta.perturbation(adjusted, labels, theta)
    np.testing.assert_allclose(perturbed, expected, rtol=1e-6)
    assert lpjax.get_transform_state(new_state, lpjax.MetaLplState) is state[1]
    # Without theta= the state's bounds (phi = 0: none) apply.
    unperturbed, _ = transform.apply(logits, labels, state)
    np.testing.assert_allclose(unperturbed, adjusted, rtol=1e-6)

    # Differentiable in theta through the chain.
    def loss(theta):
        out, _ = transform.apply(logits, labels, state, theta=theta)
        return lpjax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

    assert np.all(np.isfinite(jax.grad(loss)(theta)))
    assert np.any(jax.grad(loss)(theta) != 0)
