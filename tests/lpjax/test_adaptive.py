"""Adaptive LPL (docs/method.md, section 8) against the NumPy reference, on one and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

C = 6
COUNTS = np.array([40, 900, 120, 7, 300, 15])


def _batch(seed, batch=48):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (batch, C)).astype(np.float32)
    labels = rng.integers(0, C - 1, batch)  # class 5 never appears: its bound must not move
    where = rng.random(batch) < 0.85
    return logits, labels, where


def test_bounds_update_matches_reference_on_hand_cases():
    bounds = np.array([1.0, 1.0, 1.0, 1.0, 0.06, 9.9])
    signs = np.array([1, -1, 0, 1, -1, 1])
    targets = np.full(C, 0.3)
    loss = np.array([1.0, 1.0, 1.0, 0.0, 2.0, 1.0])
    # class 0: loss up by e^0.1 (< e^0.3, grow); class 1: down by e^-1 (overshoot, shrink);
    # class 2: unsigned; class 3: L = 0 (unmeasurable); class 4 / 5 hit the range limits.
    perturbed = np.array([np.exp(0.1), np.exp(-1.0), 5.0, 1.0, 2.0 * np.exp(-2.5), 1.0])
    got = lpjax.adaptive_bounds_update(
        bounds, signs, targets, loss, perturbed, rate=0.5, min_bound=0.05, max_bound=10.0
    )
    want = ref.adaptive_bounds_update(bounds, signs, targets, loss, perturbed, 0.5, 0.05, 10.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(want[:2], [np.exp(0.5 * 0.2), np.exp(0.5 * -0.7)], rtol=1e-12)
    assert want[2] == 1.0 and want[3] == 1.0  # untouched
    assert want[4] == 0.05  # error clipped to -1: 0.06 e^-0.5 = 0.036, then to the bottom
    assert want[5] == 10.0  # 9.9 e^0.15, clipped at the top


def test_bounds_update_ignores_non_finite_sums():
    got = lpjax.adaptive_bounds_update(
        jnp.ones(3),
        jnp.ones(3, jnp.int32),
        jnp.full(3, 0.3),
        jnp.array([jnp.nan, 1.0, jnp.inf]),
        jnp.array([1.0, jnp.nan, 1.0]),
        rate=0.1,
        min_bound=0.01,
        max_bound=5.0,
    )
    np.testing.assert_array_equal(got, np.ones(3))


@pytest.mark.parametrize(
    "chained_la, normalize, head_scale", [(False, False, 1.0), (True, True, 0.5)]
)
def test_transform_matches_reference_over_steps(chained_la, normalize, head_scale):
    signs, targets = ref.longtail_signs_and_bounds(COUNTS, 2, 0.4, 0.2, head_scale)
    transform = lpjax.lpl_adaptive_longtail_transform(
        COUNTS,
        num_head_classes=2,
        target=0.4,
        delta_target=0.2,
        head_scale=head_scale,
        step_size=0.05,
        initial_epsilon=0.3,
        rate=0.2,
        max_epsilon=2.0,
        normalize=normalize,
    )
    offsets = ref.logit_adjustment(COUNTS) if chained_la else np.zeros(C)
    if chained_la:
        transform = lpjax.chain(lpjax.logit_adjustment_transform(COUNTS), transform)
    state = transform.init()
    apply = jax.jit(transform.apply)
    bounds = np.full(C, 0.3)
    for step in range(6):
        logits, labels, where = _batch(step)
        perturbed, state = apply(logits, labels, state, where=where)
        want, bounds = ref.adaptive_lpl_step(
            logits + offsets, labels, bounds, signs, targets, 0.05, 0.2, 0.05, 2.0, where, normalize
        )
        got_bounds = (state[1] if chained_la else state).bounds
        np.testing.assert_allclose(got_bounds, bounds, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(perturbed)[where], want[where], rtol=1e-4, atol=1e-4)
    assert bounds[5] == 0.3  # never seen: never moved
    assert not np.allclose(bounds[:5], 0.3)


def test_bounds_stay_in_range_and_loss_ratio_reaches_target():
    transform = lpjax.lpl_adaptive_longtail_transform(
        COUNTS,
        num_head_classes=2,
        target=0.3,
        step_size=0.02,
        initial_epsilon=0.02,
        rate=0.1,
        max_epsilon=3.0,
    )
    logits, labels, where = _batch(0, batch=96)
    state = transform.init()
    apply = jax.jit(transform.apply)
    for _ in range(300):
        perturbed, state = apply(logits, labels, state, where=where)
        assert np.all((state.bounds >= 0.02 - 1e-7) & (state.bounds <= 3.0 + 1e-6))
    safe = np.where(where, labels, 0)
    loss, loss_p = ref.cross_entropy(logits, safe), ref.cross_entropy(perturbed, safe)
    signs, _ = ref.longtail_signs_and_bounds(COUNTS, 2, 0.3)
    for c in range(5):
        members = where & (labels == c)
        log_ratio = np.log(loss_p[members].sum() / loss[members].sum())
        # within one inner step's worth of the target
        assert abs(signs[c] * log_ratio - 0.3) < 0.1, (c, log_ratio)


def test_nan_logit_changes_no_other_sample():
    transform = lpjax.lpl_adaptive_longtail_transform(
        COUNTS, num_head_classes=2, target=0.3, step_size=0.05, initial_epsilon=0.5
    )
    logits, labels, where = _batch(3)
    where[:] = True
    bad = logits.copy()
    bad[0, 2] = np.nan
    clean_where = where.copy()
    clean_where[0] = False
    state = transform.init()
    got, got_state = transform.apply(bad, labels, state, where=clean_where)
    want, want_state = transform.apply(logits, labels, state, where=clean_where)
    np.testing.assert_array_equal(np.asarray(got)[1:], np.asarray(want)[1:])
    np.testing.assert_array_equal(got_state.bounds, want_state.bounds)


def test_argument_errors():
    with pytest.raises(ValueError, match="initial_epsilon"):
        lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=2, target=0.3, step_size=0.1, initial_epsilon=20.0
        )
    with pytest.raises(ValueError, match="rate"):
        lpjax.lpl_adaptive_longtail_transform(
            COUNTS, num_head_classes=2, target=0.3, step_size=0.1, initial_epsilon=1.0, rate=0.0
        )
    transform = lpjax.lpl_adaptive_longtail_transform(
        COUNTS, num_head_classes=2, target=0.3, step_size=0.1, initial_epsilon=1.0
    )
    with pytest.raises(TypeError, match="AdaptiveLplState"):
        transform.apply(jnp.zeros((2, C)), jnp.zeros(2, jnp.int32), None)
    with pytest.raises(ValueError, match="built for 6"):
        transform.apply(jnp.zeros((2, 4)), jnp.zeros(2, jnp.int32), transform.init())


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices, tests/conftest.py")
def test_eight_devices_equal_one():
    transform = lpjax.lpl_adaptive_longtail_transform(
        COUNTS, num_head_classes=2, target=0.3, step_size=0.05, initial_epsilon=0.4, rate=0.2
    )
    mesh = jax.make_mesh((8,), ("data",))
    split, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

    def local(u, y, w, state):
        return transform.apply(u, y, state, where=w, axis_name="data")

    sharded = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("data"), P("data"), P("data"), P()),
            out_specs=(P("data"), P()),
        )
    )
    single = jax.jit(lambda u, y, w, s: transform.apply(u, y, s, where=w))
    state_1 = state_8 = transform.init()
    for step in range(4):
        logits, labels, where = _batch(10 + step, batch=64)
        out_1, state_1 = single(logits, labels, where, state_1)
        args = [jax.device_put(a, split) for a in (logits, labels, where)]
        out_8, state_8 = sharded(*args, jax.device_put(state_8, replicated))
        np.testing.assert_allclose(out_8, out_1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state_8.bounds, state_1.bounds, rtol=1e-6)
