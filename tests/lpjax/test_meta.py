"""Meta-LPL (docs/method.md, section 9): the perturbation, the look-ahead meta-gradient
against central differences of a NumPy reference, the meta step, and data parallelism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lpjax

NUM_CLASSES, FEATURES, BATCH, META_BATCH = 5, 6, 32, 16
STEP_SIZE, MAX_EPSILON, LEARNING_RATE = 0.1, 1.0, 0.5
# Signed bounds: two maximised classes, two minimised, one below one step (K = 0).
THETA = np.array([0.55, -0.32, 0.05, 0.81, -0.6], np.float32)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    labels = (np.arange(BATCH) % NUM_CLASSES).astype(np.int32)
    x_meta = rng.normal(size=(META_BATCH, FEATURES)).astype(np.float32)
    labels_meta = (np.arange(META_BATCH) % NUM_CLASSES).astype(np.int32)
    weights = (0.5 * rng.normal(size=(FEATURES, NUM_CLASSES))).astype(np.float32)
    return x, labels, x_meta, labels_meta, weights


def _meta(normalize=False, optimizer=None):
    return lpjax.lpl_meta_transform(
        NUM_CLASSES,
        max_epsilon=MAX_EPSILON,
        step_size=STEP_SIZE,
        meta_optimizer=optimizer or optax.sgd(1.0),
        normalize=normalize,
    )


def _losses(meta, x, labels, x_meta, labels_meta, *, axis_name=None, count=None, meta_count=None):
    """The training loss ``(w, theta)`` and the meta loss ``w`` of a linear classifier; with
    ``axis_name`` each returns this device's share of the global mean."""
    count = count or len(labels)
    meta_count = meta_count or len(labels_meta)

    def train_loss(w, theta):
        logits = x @ w
        perturbed = logits + meta.perturbation(logits, labels, theta, axis_name=axis_name)
        return lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels).sum() / count

    def meta_loss(w):
        loss = lpjax.softmax_cross_entropy_with_integer_labels(x_meta @ w, labels_meta)
        return loss.sum() / meta_count

    return train_loss, meta_loss


@pytest.mark.parametrize("normalize", [False, True], ids=["paper_step", "unit_step"])
def test_perturbation_is_the_solvers_delta_with_a_linear_gradient(normalize):
    x, labels, *_, weights = _problem()
    meta = _meta(normalize)
    logits = jnp.asarray(x @ weights)
    delta = np.asarray(jax.jit(meta.perturbation)(logits, labels, THETA))
    solver = ref.lpl_perturbation(
        logits, labels, np.sign(THETA), np.abs(THETA), STEP_SIZE, normalize=normalize
    )
    stepped = labels != 2  # |theta_2| < step_size: the solver takes no step for class 2
    np.testing.assert_allclose(delta[stepped], solver[stepped], atol=1e-6)
    np.testing.assert_array_equal(solver[~stepped], 0.0)
    # Below one step: theta_2 times the one-step direction, a fraction of a step.
    v = ref.meta_lpl_direction(logits, labels, THETA, STEP_SIZE, normalize)
    np.testing.assert_allclose(delta, THETA[labels][:, None] * v, atol=1e-6)
    assert np.abs(delta[~stepped]).max() > 1e-4
    # d delta_i / d theta_y = v_i.
    jacobian = jax.jit(jax.jacrev(lambda t: meta.perturbation(logits, labels, t)))(THETA)
    for i, y in enumerate(labels):
        np.testing.assert_allclose(jacobian[i, :, y], v[i], atol=1e-5)
        np.testing.assert_array_equal(np.delete(jacobian[i], y, axis=1), 0.0)
    # The logits get no gradient from the perturbation.
    grad = jax.grad(lambda u: meta.perturbation(u, labels, THETA).sum())(logits)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("normalize", [False, True], ids=["paper_step", "unit_step"])
def test_meta_gradient_equals_central_differences(normalize):
    x, labels, x_meta, labels_meta, weights = _problem(1)
    meta = _meta(normalize)
    train_loss, meta_loss = _losses(meta, x, labels, x_meta, labels_meta)
    loss, grad = jax.jit(
        functools.partial(lpjax.lookahead_meta_gradient, learning_rate=LEARNING_RATE),
        static_argnums=(0, 1),
    )(train_loss, meta_loss, jnp.asarray(weights), jnp.asarray(THETA))

    # Independent reference: NumPy float64, v frozen at THETA (section 9), central
    # differences of the look-ahead meta loss in every theta_c.
    v = ref.meta_lpl_direction(x @ weights, labels, THETA, STEP_SIZE, normalize)

    def f(theta):
        return ref.meta_lpl_lookahead_loss(
            weights, x, labels, x_meta, labels_meta, theta, v, LEARNING_RATE
        )

    h = 1e-4
    theta = THETA.astype(np.float64)
    expected = [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(NUM_CLASSES)]
    assert float(loss) == pytest.approx(f(theta), rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=2e-3, atol=1e-6)
    assert np.abs(expected).min() > 1e-5  # every class has a gradient, the K = 0 one too


def test_update_steps_phi_through_tanh_and_starts_informative():
    x, labels, x_meta, labels_meta, weights = _problem(2)
    meta = _meta(optimizer=optax.sgd(0.5))
    train_loss, meta_loss = _losses(meta, x, labels, x_meta, labels_meta)
    state = meta.init()
    np.testing.assert_array_equal(state.phi, 0.0)
    np.testing.assert_array_equal(meta.theta(state), 0.0)
    new_state, loss = jax.jit(meta.update, static_argnums=(1, 2))(
        state, train_loss, meta_loss, jnp.asarray(weights), learning_rate=LEARNING_RATE
    )
    # At phi = 0 every class has the gradient of theta_y * (one-step direction); the chain
    # rule through theta = eps_max tanh(phi) multiplies it by eps_max.
    _, theta_grad = lpjax.lookahead_meta_gradient(
        train_loss, meta_loss, jnp.asarray(weights), jnp.zeros(NUM_CLASSES), learning_rate=0.5
    )
    assert np.abs(theta_grad).min() > 1e-6
    np.testing.assert_allclose(new_state.phi, -0.5 * MAX_EPSILON * theta_grad, rtol=1e-5)
    assert float(loss) == pytest.approx(
        ref.meta_lpl_lookahead_loss(
            weights, x, labels, x_meta, labels_meta, np.zeros(NUM_CLASSES), 0.0, 0.5
        ),
        rel=1e-5,
    )
    # phi stays in [-3, 3], however large the step.
    big = _meta(optimizer=optax.sgd(1e6))
    state, _ = big.update(state, train_loss, meta_loss, jnp.asarray(weights), learning_rate=0.5)
    assert np.abs(state.phi).max() == pytest.approx(lpjax._meta.MAX_ABS_PHI)
    assert np.abs(big.theta(state)).max() < MAX_EPSILON


def test_chained_after_la_it_starts_as_exactly_la():
    x, labels, *_, weights = _problem(3)
    counts = np.array([500, 200, 80, 30, 10])
    la = lpjax.logit_adjustment_transform(counts)
    chained = lpjax.chain(la, _meta())
    logits = jnp.asarray(x @ weights)
    out, state = chained.apply(logits, labels, chained.init())
    np.testing.assert_array_equal(out, la.apply(logits, labels, la.init())[0])
    assert isinstance(state[1], lpjax.MetaLplState)
    # With learned bounds the transform adds the solver's delta for them.
    phi = jnp.arctanh(THETA / MAX_EPSILON)
    meta = _meta()
    out, _ = meta.apply(logits, labels, lpjax.MetaLplState(phi, optax.EmptyState()))
    v = ref.meta_lpl_direction(logits, labels, THETA, STEP_SIZE)
    np.testing.assert_allclose(out - logits, THETA[labels][:, None] * v, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="max_inner_steps"):
        lpjax.lpl_meta_transform(
            3, max_epsilon=100.0, step_size=0.01, meta_optimizer=optax.sgd(1.0), max_inner_steps=50
        )
    with pytest.raises(ValueError, match="max_epsilon"):
        lpjax.lpl_meta_transform(3, max_epsilon=0.0, step_size=0.1, meta_optimizer=optax.sgd(1))
    meta = _meta()
    logits = jnp.zeros((4, NUM_CLASSES))
    with pytest.raises(TypeError, match="MetaLplState"):
        meta.apply(logits, jnp.zeros(4, jnp.int32), optax.EmptyState())
    with pytest.raises(ValueError, match="theta"):
        meta.perturbation(logits, jnp.zeros(4, jnp.int32), jnp.zeros(3))
    with pytest.raises(ValueError, match="built for 5"):
        meta.perturbation(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), jnp.zeros(3))


# ----------------------------------------------------------------------------- 1 vs 8 devices


def _update(meta, state, weights, *batch, **loss_options):
    train_loss, meta_loss = _losses(meta, *batch, **loss_options)
    return meta.update(state, train_loss, meta_loss, weights, learning_rate=LEARNING_RATE)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_global_view_meta_step_equals_one_device(axis_type):
    x, labels, x_meta, labels_meta, weights = _problem(4)
    meta = _meta(optimizer=optax.adam(0.1))
    state = meta.init()
    expected = jax.jit(functools.partial(_update, meta))(
        state, weights, x, labels, x_meta, labels_meta
    )
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    with jax.set_mesh(mesh):
        split = NamedSharding(mesh, P("data"))
        batch = [jax.device_put(a, split) for a in (x, labels, x_meta, labels_meta)]
        got = jax.jit(functools.partial(_update, meta))(state, weights, *batch)
        assert got[0].phi.sharding.is_fully_replicated
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7), got, expected)
    assert np.abs(got[0].phi).min() > 0


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_shard_map_meta_step_equals_one_device():
    # Each device's losses are its share of the global means; shard_map (check_vma on)
    # sums the gradients of the replicated weights and phi itself.
    x, labels, x_meta, labels_meta, weights = _problem(5)
    meta = _meta(optimizer=optax.adam(0.1))
    state = meta.init()
    expected_state, expected_loss = jax.jit(functools.partial(_update, meta))(
        state, weights, x, labels, x_meta, labels_meta
    )
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))

    def local(state, weights, x, labels, x_meta, labels_meta):
        state, loss = _update(
            meta,
            state,
            weights,
            x,
            labels,
            x_meta,
            labels_meta,
            axis_name="data",
            count=BATCH,
            meta_count=META_BATCH,
        )
        return state, jax.lax.psum(loss, "data")

    step = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(), P("data"), P("data"), P("data"), P("data")),
            out_specs=(P(), P()),
        )
    )
    split = NamedSharding(mesh, P("data"))
    batch = [jax.device_put(a, split) for a in (x, labels, x_meta, labels_meta)]
    got_state, got_loss = step(state, weights, *batch)
    assert float(got_loss) == pytest.approx(float(expected_loss), rel=1e-5)
    jax.tree.map(
        lambda g, e: np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7),
        got_state,
        expected_state,
    )
