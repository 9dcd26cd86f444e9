"""Tests of lpjax._isda: ISDA's running class statistics, logit term and transform."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import lpjax

NUM_CLASSES, FEATURE_DIM = 5, 4


def random_batch(seed, batch_size, num_classes=NUM_CLASSES, feature_dim=FEATURE_DIM, offset=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
    # Class-dependent means far from zero: the covariance must not come from E[xx^T] - mm^T.
    class_means = offset + rng.normal(size=(num_classes, feature_dim))
    features = class_means[labels] + rng.normal(size=(batch_size, feature_dim)) * 0.5
    return features.astype(np.float32), labels


def random_covariances(seed, num_classes=NUM_CLASSES, feature_dim=FEATURE_DIM):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(num_classes, feature_dim, feature_dim))
    return np.einsum("cij,ckj->cik", a, a).astype(np.float32) / feature_dim


def zero_state():
    return lpjax.init_isda_state(NUM_CLASSES, FEATURE_DIM)


# Jitted once per shape: eager op-by-op dispatch is slow on CPU.
update = jax.jit(lpjax.update_class_statistics)


# ----------------------------------------------------------------------------
# update_class_statistics
# ----------------------------------------------------------------------------


def test_update_matches_reference_recursion_and_pooled_statistics():
    state = zero_state()
    counts = np.zeros(NUM_CLASSES)
    means = np.zeros((NUM_CLASSES, FEATURE_DIM))
    covariances = np.zeros((NUM_CLASSES, FEATURE_DIM, FEATURE_DIM))
    all_features, all_labels = [], []
    for step in range(5):
        features, labels = random_batch(step, 12)
        if step == 2:  # a batch without class 4
            labels = np.where(labels == 4, 0, labels).astype(np.int32)
        state = update(state, features, labels)
        counts, means, covariances = ref.isda_update_class_statistics(
            counts, means, covariances, features, labels
        )
        all_features.append(features)
        all_labels.append(labels)
        np.testing.assert_array_equal(state.counts, counts)
        np.testing.assert_allclose(state.means, means, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.covariances, covariances, rtol=1e-4, atol=1e-5)

    assert int(state.step) == 5
    # The recursion is the pooled-variance identity: exactly the statistics of all samples.
    all_features = np.concatenate(all_features).astype(np.float64)
    all_labels = np.concatenate(all_labels)
    for c in range(NUM_CLASSES):
        x = all_features[all_labels == c]
        assert len(x) >= 2
        np.testing.assert_allclose(means[c], x.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(covariances[c], np.cov(x.T, bias=True), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(state.means[c], x.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            state.covariances[c], np.cov(x.T, bias=True), rtol=1e-4, atol=1e-5
        )
        assert state.counts[c] == len(x)


def test_absent_classes_unchanged():
    features, labels = random_batch(0, 20)
    state = update(zero_state(), features, labels)
    features2, _ = random_batch(1, 6)
    labels2 = np.array([0, 1, 1, 0, 1, 0], np.int32)
    new = update(state, features2, labels2)
    for c in range(2, NUM_CLASSES):
        assert new.counts[c] == state.counts[c]
        np.testing.assert_array_equal(new.means[c], state.means[c])
        np.testing.assert_array_equal(new.covariances[c], state.covariances[c])
    assert not np.allclose(new.covariances[0], state.covariances[0])


def test_where_mask_and_out_of_range_labels_match_slicing():
    features, labels = random_batch(3, 16)
    where = np.arange(16) % 3 != 0
    bad_labels = labels.copy()
    bad_labels[1] = NUM_CLASSES  # out of range: masked
    bad_labels[2] = -1
    keep = where & (np.arange(16) != 1) & (np.arange(16) != 2)
    state = update(zero_state(), features[:5], labels[:5])
    masked = update(state, features, bad_labels, where=jnp.asarray(where))
    sliced = update(state, features[keep], labels[keep])
    chex.assert_trees_all_close(masked, sliced, rtol=1e-6, atol=1e-6)


def test_update_from_bfloat16_features_is_float32():
    features, labels = random_batch(4, 8)
    state = update(zero_state(), jnp.asarray(features, jnp.bfloat16), labels)
    assert state.covariances.dtype == jnp.float32 and state.means.dtype == jnp.float32


# ----------------------------------------------------------------------------
# isda_augmentation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [3, 11])  # rows per sample (B < C) and per class
def test_augmentation_matches_direct_evaluation(batch_size):
    rng = np.random.default_rng(batch_size)
    kernel = rng.normal(size=(FEATURE_DIM, NUM_CLASSES)).astype(np.float32)
    covariances = random_covariances(1)
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    logits = jnp.zeros((batch_size, NUM_CLASSES))
    delta = jax.jit(lpjax.isda_augmentation)(
        logits, labels, covariances=covariances, classifier_kernel=kernel, ratio=0.7
    )
    expected = ref.isda_augmentation(labels, covariances, kernel, 0.7)
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(delta)[np.arange(batch_size), labels], 0.0)
    assert np.all(np.asarray(delta) >= 0)
    assert np.all(expected.sum(1) > 0)


def test_augmentation_where_dtype_and_zero_ratio():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(FEATURE_DIM, NUM_CLASSES)).astype(np.float32)
    covariances = random_covariances(2)
    labels = np.array([0, 3, 1, NUM_CLASSES], np.int32)  # last label out of range
    where = jnp.array([True, False, True, True])
    delta = jax.jit(lpjax.isda_augmentation)(
        jnp.zeros((4, NUM_CLASSES), jnp.bfloat16),
        labels,
        covariances=covariances,
        classifier_kernel=kernel,
        ratio=0.5,
        where=where,
    )
    assert delta.dtype == jnp.bfloat16
    expected = ref.isda_augmentation(labels[:3], covariances, kernel, 0.5)
    np.testing.assert_allclose(np.asarray(delta, np.float32)[[0, 2]], expected[[0, 2]], rtol=1e-2)
    np.testing.assert_array_equal(np.asarray(delta, np.float32)[[1, 3]], 0.0)
    zero = lpjax.isda_augmentation(
        jnp.zeros((4, NUM_CLASSES)),
        labels,
        covariances=covariances,
        classifier_kernel=kernel,
        ratio=0,
    )
    np.testing.assert_array_equal(zero, 0.0)


def test_gradient_flows_into_kernel_not_covariances():
    rng = np.random.default_rng(5)
    labels = np.array([0, 1, 2, 3, 4, 0], np.int32)
    with jax.enable_x64(True):
        features = jnp.asarray(rng.normal(size=(6, FEATURE_DIM)), jnp.float64)
        kernel = jnp.asarray(rng.normal(size=(FEATURE_DIM, NUM_CLASSES)), jnp.float64)
        covariances = jnp.asarray(random_covariances(3), jnp.float64)

        def loss(kernel, covariances):
            logits = features @ kernel
            delta = lpjax.isda_augmentation(
                logits, labels, covariances=covariances, classifier_kernel=kernel, ratio=0.5
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits + delta, labels).sum()

        # Autodiff through the kernel agrees with finite differences: nothing is detached.
        check_grads(jax.jit(lambda k: loss(k, covariances)), (kernel,), order=1, modes=("rev",))
        grad_kernel, grad_cov = jax.jit(jax.grad(loss, argnums=(0, 1)))(kernel, covariances)
        plain = jax.jit(
            jax.grad(
                lambda k: optax.softmax_cross_entropy_with_integer_labels(
                    features @ k, labels
                ).sum()
            )
        )(kernel)
    np.testing.assert_array_equal(grad_cov, 0.0)
    assert not np.allclose(grad_kernel, plain)  # the term itself contributes to the gradient


# ----------------------------------------------------------------------------
# isda_transform
# ----------------------------------------------------------------------------


def make_inputs(seed, batch_size=8):
    features, labels = random_batch(seed, batch_size)
    rng = np.random.default_rng(100 + seed)
    classifier = {
        "kernel": rng.normal(size=(FEATURE_DIM, NUM_CLASSES)).astype(np.float32),
        "bias": rng.normal(size=NUM_CLASSES).astype(np.float32),
    }
    logits = features @ classifier["kernel"] + classifier["bias"]
    return jnp.asarray(logits), labels, jnp.asarray(features), classifier


@pytest.mark.parametrize("step, expected_ratio", [(0, 0.0), (25, 0.15), (100, 0.6), (250, 0.6)])
def test_transform_updates_then_augments_with_ramp(step, expected_ratio):
    transform = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, lambda_0=0.6, total_steps=100)
    logits, labels, features, classifier = make_inputs(1)
    _, warm_labels, warm_features, _ = make_inputs(2)
    warm = update(transform.init(), warm_features, warm_labels)
    state = warm._replace(step=jnp.asarray(step, jnp.int32))
    out, new_state = jax.jit(transform.apply)(
        logits, labels, state, features=features, classifier=classifier, unused=1
    )
    expected_state = update(state, features, labels)
    chex.assert_trees_all_close(new_state, expected_state)
    assert int(new_state.step) == step + 1
    expected = np.asarray(logits) + ref.isda_augmentation(
        labels, expected_state.covariances, classifier["kernel"], expected_ratio
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if step == 0:
        np.testing.assert_array_equal(out, logits)


def test_transform_under_jit_state_pytree_no_retrace():
    transform = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, lambda_0=0.5, total_steps=4)
    apply = jax.jit(chex.assert_max_traces(transform.apply, n=1))
    state = transform.init()
    counts = np.zeros(NUM_CLASSES)
    means = np.zeros((NUM_CLASSES, FEATURE_DIM))
    covariances = np.zeros((NUM_CLASSES, FEATURE_DIM, FEATURE_DIM))
    for step in range(6):  # past total_steps: the ramp stays at lambda_0
        logits, labels, features, classifier = make_inputs(step)
        out, state = apply(logits, labels, state, features=features, classifier=classifier)
        counts, means, covariances = ref.isda_update_class_statistics(
            counts, means, covariances, features, labels
        )
        expected = np.asarray(logits) + ref.isda_augmentation(
            labels, covariances, classifier["kernel"], 0.5 * min(step, 4) / 4
        )
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert isinstance(state, lpjax.IsdaState) and int(state.step) == 6
    np.testing.assert_allclose(state.covariances, covariances, rtol=1e-4, atol=1e-5)


def test_transform_chains_and_trains_the_kernel():
    counts = [50, 30, 20, 10, 5]
    isda = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, lambda_0=0.5, total_steps=2)
    transform = lpjax.chain(lpjax.logit_adjustment_transform(counts), isda)
    _, labels, features, classifier = make_inputs(3)
    state = transform.init()
    state = (state[0], state[1]._replace(step=jnp.asarray(1, jnp.int32)))

    def objective(kernel):
        logits = features @ kernel + classifier["bias"]
        perturbed, new_state = transform.apply(
            logits, labels, state, features=features, classifier={**classifier, "kernel": kernel}
        )
        loss = lpjax.softmax_cross_entropy_with_integer_labels(perturbed, labels)
        return loss.mean(), new_state

    (value, new_state), grad = jax.jit(jax.value_and_grad(objective, has_aux=True))(
        jnp.asarray(classifier["kernel"])
    )
    assert int(new_state[1].step) == 2 and np.isfinite(value)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_sharded_equals_single_device():
    num_devices = 8
    assert jax.device_count() >= num_devices
    mesh = jax.make_mesh((num_devices,), ("data",))
    transform = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, lambda_0=0.5, total_steps=10)
    batch_size = 4 * num_devices
    logits, labels, features, classifier = make_inputs(7, batch_size)
    where = jnp.asarray(np.arange(batch_size) % 5 != 2)
    _, warm_labels, warm_features, _ = make_inputs(8, 16)
    state = update(transform.init(), warm_features, warm_labels)
    state = state._replace(step=jnp.asarray(6, jnp.int32))

    def local(logits, labels, where, features, state, classifier):
        return transform.apply(
            logits,
            labels,
            state,
            where=where,
            axis_name="data",
            features=features,
            classifier=classifier,
        )

    sharded = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("data"), P("data"), P("data"), P("data"), P(), P()),
            out_specs=(P("data"), P()),
            check_vma=False,
        )
    )
    split, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    args = jax.device_put(
        (logits, labels, where, features, state, classifier),
        (split, split, split, split, replicated, replicated),
    )
    out, new_state = sharded(*args)
    single_out, single_state = jax.jit(
        lambda logits, labels, where, features, state, classifier: transform.apply(
            logits, labels, state, where=where, features=features, classifier=classifier
        )
    )(logits, labels, where, features, state, classifier)
    chex.assert_trees_all_close(new_state, single_state, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, single_out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, logits)


def test_errors():
    transform = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, total_steps=10)
    state = transform.init()
    logits, labels, features, classifier = make_inputs(0)
    with pytest.raises(ValueError, match="features and classifier"):
        transform.apply(logits, labels, state)
    with pytest.raises(ValueError, match="classifier"):
        transform.apply(logits, labels, state, features=features)
    with pytest.raises(ValueError, match="'kernel'"):
        transform.apply(logits, labels, state, features=features, classifier={"w": 1})
    with pytest.raises(ValueError, match="feature_dim"):
        transform.apply(logits, labels, state, features=features[:, :3], classifier=classifier)
    with pytest.raises(ValueError, match=r"classifier\['kernel'\]"):
        bad = {"kernel": classifier["kernel"].T}
        transform.apply(logits, labels, state, features=features, classifier=bad)
    with pytest.raises(ValueError, match="labels"):
        transform.apply(logits, None, state, features=features, classifier=classifier)
    with pytest.raises(ValueError, match="num_classes = 5"):
        transform.apply(logits[:, :4], labels, state, features=features, classifier=classifier)
    with pytest.raises(TypeError, match="IsdaState"):
        transform.apply(logits, labels, (), features=features, classifier=classifier)
    with pytest.raises(ValueError, match="total_steps"):
        lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, total_steps=0)
    with pytest.raises(ValueError, match="lambda_0"):
        lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, lambda_0=-1.0, total_steps=10)
    with pytest.raises(ValueError, match="covariances"):
        lpjax.isda_augmentation(
            logits,
            labels,
            covariances=jnp.zeros((NUM_CLASSES, 3, 3)),
            classifier_kernel=classifier["kernel"],
            ratio=0.5,
        )
    with pytest.raises(ValueError, match="ratio"):
        lpjax.isda_augmentation(
            logits,
            labels,
            covariances=state.covariances,
            classifier_kernel=classifier["kernel"],
            ratio=-0.5,
        )
    with pytest.raises(TypeError, match="floating"):
        update(state, jnp.ones((8, FEATURE_DIM), jnp.int32), labels)


# ----------------------------------------------------------------------------
# Diagonal ISDA (covariance="diagonal"): [C, D] per-feature variances
# ----------------------------------------------------------------------------


def diagonal_state():
    return lpjax.init_isda_state(NUM_CLASSES, FEATURE_DIM, covariance="diagonal")


def test_diagonal_update_is_the_variance_of_every_sample_seen():
    """Against the definition (NumPy, float64, over the samples kept so far), after each
    batch: a batch without a class, a masked sample and an out-of-range label included."""
    state = diagonal_state()
    assert state.covariances.shape == (NUM_CLASSES, FEATURE_DIM)
    seen = [[] for _ in range(NUM_CLASSES)]
    for step in range(5):
        features, labels = random_batch(10 + step, 12)
        if step == 2:  # a batch without class 4
            labels = np.where(labels == 4, 0, labels).astype(np.int32)
        where = np.ones(12, bool)
        where[step] = False
        labels[(step + 3) % 12] = NUM_CLASSES  # out of range: left out
        state = update(state, features, labels, where=jnp.asarray(where))
        for x, y, w in zip(features, labels, where, strict=True):
            if w and 0 <= y < NUM_CLASSES:
                seen[y].append(x)
        counts, means, variances = ref.isda_diagonal_from_samples(seen, FEATURE_DIM)
        np.testing.assert_array_equal(state.counts, counts)
        np.testing.assert_allclose(state.means, means, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.covariances, variances, rtol=1e-4, atol=1e-5)
    assert int(state.step) == 5 and state.covariances.dtype == jnp.float32


def test_diagonal_update_is_the_diagonal_of_the_full_one():
    full, diagonal = zero_state(), diagonal_state()
    for step in range(3):
        features, labels = random_batch(20 + step, 9)
        full, diagonal = update(full, features, labels), update(diagonal, features, labels)
    np.testing.assert_allclose(
        diagonal.covariances, np.diagonal(full.covariances, axis1=1, axis2=2), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(diagonal.means, full.means)


@pytest.mark.parametrize("batch_size", [3, 11])
def test_diagonal_augmentation_matches_direct_evaluation(batch_size):
    rng = np.random.default_rng(30 + batch_size)
    kernel = rng.normal(size=(FEATURE_DIM, NUM_CLASSES)).astype(np.float32)
    variances = rng.random((NUM_CLASSES, FEATURE_DIM)).astype(np.float32) * 2
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
    logits = np.zeros((batch_size, NUM_CLASSES), np.float32)
    got = jax.jit(
        lambda u, y, v, w: lpjax.isda_augmentation(
            u, y, covariances=v, classifier_kernel=w, ratio=0.7
        )
    )(logits, labels, variances, kernel)
    want = ref.isda_diagonal_augmentation(labels, variances, kernel, 0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[np.arange(batch_size), labels], 0.0)
    assert np.all(np.asarray(got) >= 0)
    # The full form with diag(variances) gives the same term.
    full = jax.vmap(jnp.diag)(jnp.asarray(variances))
    np.testing.assert_allclose(
        lpjax.isda_augmentation(
            logits, labels, covariances=full, classifier_kernel=kernel, ratio=0.7
        ),
        got,
        rtol=1e-5,
        atol=1e-5,
    )


def test_diagonal_gradient_flows_into_kernel_not_variances():
    rng = np.random.default_rng(40)
    kernel = rng.normal(size=(FEATURE_DIM, NUM_CLASSES))
    variances = rng.random((NUM_CLASSES, FEATURE_DIM))
    labels = rng.integers(0, NUM_CLASSES, 6).astype(np.int32)
    logits = np.zeros((6, NUM_CLASSES))

    def term(k, v):
        return lpjax.isda_augmentation(
            logits, labels, covariances=v, classifier_kernel=k, ratio=0.5
        ).sum()

    with jax.enable_x64():
        grad_kernel, grad_variances = jax.grad(term, argnums=(0, 1))(kernel, variances)
        want = jax.grad(lambda k: ref_term_diagonal(k, variances, labels))(kernel)
    np.testing.assert_allclose(grad_kernel, want, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(grad_variances, 0.0)


def ref_term_diagonal(kernel, variances, labels):
    diff = kernel[:, None, :] - kernel.T[labels].T[:, :, None]  # [D, B, C]
    return 0.25 * jnp.sum(variances[labels].T[:, :, None] * diff**2)


def test_diagonal_transform_trains_and_is_sharded_like_one_device():
    transform = lpjax.isda_transform(
        NUM_CLASSES, FEATURE_DIM, lambda_0=0.5, total_steps=10, covariance="diagonal"
    )
    logits, labels, features, classifier = make_inputs(7, 32)
    _, warm_labels, warm_features, _ = make_inputs(8, 16)
    state = update(transform.init(), warm_features, warm_labels)
    state = state._replace(step=jnp.asarray(6, jnp.int32))
    where = jnp.asarray(np.arange(32) % 5 != 2)
    apply = jax.jit(
        lambda u, y, w, x, s, c: transform.apply(u, y, s, where=w, features=x, classifier=c)
    )
    out, new_state = apply(logits, labels, where, features, state, classifier)
    assert new_state.covariances.shape == (NUM_CLASSES, FEATURE_DIM)
    want_state = update(state, features, labels, where=where)
    chex.assert_trees_all_close(new_state, want_state, rtol=1e-6, atol=1e-6)
    delta = ref.isda_diagonal_augmentation(
        labels, want_state.covariances, classifier["kernel"], 0.5 * 6 / 10
    )
    valid = np.asarray(where)
    np.testing.assert_allclose(out[valid], (logits + delta)[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[~valid], logits[~valid])
    # The global view over 8 devices equals one device.
    mesh = jax.make_mesh((8,), ("data",))
    with jax.set_mesh(mesh):
        split = jax.device_put((logits, labels, where, features), P("data"))
        sharded_out, sharded_state = apply(*split, state, classifier)
    np.testing.assert_allclose(sharded_out, out, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(sharded_state, new_state, rtol=1e-5, atol=1e-5)


def test_diagonal_errors_and_memory():
    full = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, total_steps=10)
    diagonal = lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, total_steps=10, covariance="diagonal")
    logits, labels, features, classifier = make_inputs(0)
    with pytest.raises(ValueError, match="covariance='full'; got a state with diagonal"):
        full.apply(logits, labels, diagonal.init(), features=features, classifier=classifier)
    with pytest.raises(ValueError, match="covariance='diagonal'; got a state with full"):
        diagonal.apply(logits, labels, full.init(), features=features, classifier=classifier)
    with pytest.raises(ValueError, match="covariance must be 'full' or 'diagonal'"):
        lpjax.isda_transform(NUM_CLASSES, FEATURE_DIM, total_steps=10, covariance="diag")
    with pytest.raises(ValueError, match="covariance must be"):
        lpjax.init_isda_state(NUM_CLASSES, FEATURE_DIM, covariance=None)
    # At ImageNet size (C = 1000, D = 2048), shapes only: 8 MiB against 16 GiB.
    nbytes = {
        form: sum(
            x.size * x.dtype.itemsize
            for x in jax.tree.leaves(
                jax.eval_shape(lambda f=form: lpjax.init_isda_state(1000, 2048, covariance=f))
            )
        )
        for form in ("full", "diagonal")
    }
    assert nbytes["full"] == 4 + 4 * 1000 * (1 + 2048 + 2048 * 2048)
    assert nbytes["diagonal"] == 4 + 4 * 1000 * (1 + 2 * 2048)
