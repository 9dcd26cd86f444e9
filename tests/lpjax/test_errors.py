"""Bad arguments raise ValueError / TypeError with a message saying what was expected."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import lpjax

B, C = 4, 3
LOGITS = np.zeros((B, C), np.float32)
LABELS = np.array([0, 1, 2, 0])
SIGNS = np.array([1, -1, 0])
BOUNDS = np.array([0.1, 0.2, 0.3], np.float32)
COUNTS = [30, 20, 10]


def solve(**overrides):
    kwargs = dict(
        logits=LOGITS, labels=LABELS, signs=SIGNS, bounds=BOUNDS, step_size=0.1, where=None
    )
    kwargs.update(overrides)
    logits, labels = kwargs.pop("logits"), kwargs.pop("labels")
    return lpjax.lpl_perturbation(logits, labels, **kwargs)


# ----------------------------------------------------------------------------- labels and logits


@pytest.mark.parametrize(
    "fn",
    [
        lambda u, y: solve(logits=u, labels=y),
        lambda u, y: lpjax.mean_rule_signs_and_bounds(u, y, epsilon=0.1),
        lambda u, y: lpjax.relative_loss_variation(u, u, y),
    ],
    ids=["solver", "mean_rule_signs_and_bounds", "variation"],  # the loss: test_losses.py
)
def test_labels_and_logits_are_checked(fn):
    with pytest.raises(TypeError, match="labels must be integer"):
        fn(LOGITS, LABELS.astype(np.float32))
    with pytest.raises(TypeError, match="labels must be integer"):
        fn(LOGITS, np.eye(C, dtype=np.float32)[LABELS])  # one-hot
    with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
        fn(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
        fn(LOGITS, np.eye(C, dtype=np.int32)[LABELS])  # integer one-hot
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, num_classes\]"):
        fn(np.zeros(C, np.float32), LABELS)
    # [B, C, 1] logits are a batch of [B, C] positions with 1 class: labels must follow.
    with pytest.raises(ValueError, match=r"labels must have the logits' leading shape"):
        fn(np.zeros((B, C, 1), np.float32), LABELS)
    with pytest.raises(TypeError, match="logits must be a floating array"):
        fn(np.zeros((B, C), np.int32), LABELS)


def test_shape_errors_are_raised_at_trace_time():
    with pytest.raises(ValueError, match=r"labels must have shape \[batch\]"):
        jax.jit(lambda u, y: solve(logits=u, labels=y))(LOGITS, LABELS[:2])


def test_where_is_checked():
    with pytest.raises(ValueError, match=r"where must have shape \[batch\]"):
        solve(where=np.ones(B + 1, bool))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        solve(where=np.ones(B, np.int32))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        lpjax.mean_rule_signs_and_bounds(LOGITS, LABELS, epsilon=0.1, where=np.ones(B))
    with pytest.raises(ValueError, match=r"where must have shape \[batch\]"):
        lpjax.relative_loss_variation(LOGITS, LOGITS, LABELS, where=np.ones((B, 1), bool))


# ----------------------------------------------------------------------------- solver arguments


def test_signs_and_bounds_shapes():
    with pytest.raises(ValueError, match=r"signs must have shape \[num_classes\]"):
        solve(signs=np.ones(C + 1, np.int32))
    with pytest.raises(ValueError, match=r"bounds must have shape \[num_classes\]"):
        solve(bounds=np.ones((C, 1), np.float32))
    with pytest.raises(ValueError, match=r"bounds must have shape \[num_classes\]"):
        solve(bounds=0.1)


@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf")])
def test_step_size_must_be_positive(step_size):
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        solve(step_size=step_size)


def test_step_size_must_be_scalar():
    with pytest.raises(ValueError, match="step_size must be a scalar"):
        solve(step_size=np.array([0.1, 0.1]))


def test_bounds_must_be_nonnegative():
    with pytest.raises(ValueError, match="bounds must be finite and >= 0"):
        solve(bounds=np.array([0.1, -0.2, 0.3], np.float32))
    with pytest.raises(ValueError, match="bounds must be finite and >= 0"):
        solve(bounds=np.array([0.1, np.nan, 0.3], np.float32))


@pytest.mark.parametrize("signs", [[1, 2, 0], [1, -1, 0.5], [-2, 0, 0]])
def test_signs_must_be_in_minus_one_zero_one(signs):
    with pytest.raises(ValueError, match=r"signs must take values in \{-1, 0, \+1\}"):
        solve(signs=np.array(signs))


def test_split_hyperparameters_must_be_nonnegative():
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        lpjax.mean_rule_signs_and_bounds(LOGITS, LABELS, epsilon=-0.1)
    with pytest.raises(ValueError, match="delta_epsilon must be finite and >= 0"):
        lpjax.mean_rule_signs_and_bounds(LOGITS, LABELS, epsilon=0.1, delta_epsilon=-1.0)
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=1, epsilon=-0.1)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        lpjax.lpl_mean_rule_transform(epsilon=0.1, step_size=0.0)
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        lpjax.lpl_mean_rule_transform(epsilon=-0.1, step_size=0.1)


# ----------------------------------------------------------------------------- class counts


@pytest.mark.parametrize("counts", [[10, 0, 5], [10, -3, 5], [10, float("nan"), 5]])
@pytest.mark.parametrize(
    "fn",
    [
        lambda n: lpjax.logit_adjustment(n),
        lambda n: lpjax.ldam_margins(n),
        lambda n: lpjax.class_balanced_weights(n),
        lambda n: lpjax.longtail_signs_and_bounds(n, num_head_classes=1, epsilon=0.1),
        lambda n: lpjax.logit_adjustment_transform(n),
        lambda n: lpjax.balanced_softmax_transform(n),
        lambda n: lpjax.ldam_transform(n),
        lambda n: lpjax.lpl_longtail_transform(n, num_head_classes=1, epsilon=0.1, step_size=0.1),
    ],
    ids=["la", "ldam", "cb", "longtail", "la_t", "bs_t", "ldam_t", "lpl_longtail_t"],
)
def test_class_counts_must_be_positive(fn, counts):
    with pytest.raises(ValueError, match="class_counts must be > 0 for every class"):
        fn(counts)


def test_class_counts_must_be_a_vector():
    with pytest.raises(ValueError, match=r"class_counts must be a non-empty vector"):
        lpjax.logit_adjustment([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"class_counts must be a non-empty vector"):
        lpjax.ldam_margins([])


def test_class_counts_must_match_the_logits():
    transform = lpjax.logit_adjustment_transform([10, 5])
    with pytest.raises(ValueError, match=r"must have shape \[num_classes\]"):
        transform.apply(LOGITS, LABELS, transform.init())
    transform = lpjax.ldam_transform([10, 5])
    with pytest.raises(ValueError, match=r"must have shape \[num_classes\]"):
        transform.apply(LOGITS, LABELS, transform.init())


@pytest.mark.parametrize("num_head", [-1, 4])
def test_num_head_classes_in_range(num_head):
    with pytest.raises(ValueError, match=r"num_head_classes must lie in \[0, num_classes\]"):
        lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=num_head, epsilon=0.1)


@pytest.mark.parametrize("num_head", [1.0, True, "1", None])
def test_num_head_classes_is_an_int(num_head):
    with pytest.raises(TypeError, match="num_head_classes must be an int"):
        lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=num_head, epsilon=0.1)
    with pytest.raises(TypeError, match="num_head_classes must be an int"):
        lpjax.lpl_longtail_transform(COUNTS, num_head_classes=num_head, epsilon=0.1, step_size=0.1)


def test_num_head_classes_accepts_numpy_ints():
    signs, _ = lpjax.longtail_signs_and_bounds(COUNTS, num_head_classes=np.int64(2), epsilon=0.1)
    np.testing.assert_array_equal(signs, [-1, -1, 1])


def test_class_balanced_beta_range():
    for beta in [-0.1, 1.0, 1.5]:
        with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
            lpjax.class_balanced_weights(COUNTS, beta=beta)


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    "transform",
    [
        lpjax.lpl_mean_rule_transform(epsilon=0.1, step_size=0.1),
        lpjax.lpl_longtail_transform(COUNTS, num_head_classes=1, epsilon=0.1, step_size=0.1),
        lpjax.ldam_transform(COUNTS),
    ],
    ids=["lpl_mean_rule", "lpl_longtail", "ldam"],
)
def test_transforms_that_need_labels(transform):
    with pytest.raises(ValueError, match="needs the labels of the batch; got labels=None"):
        transform.apply(LOGITS, None, transform.init())


def test_chain_state_length_is_checked():
    transform = lpjax.chain(lpjax.identity(), lpjax.identity())
    with pytest.raises(ValueError, match="chain of 2 transforms got a state of 1 entries"):
        transform.apply(LOGITS, LABELS, (optax.EmptyState(),))


def test_perturbed_logits_shape_must_match():
    with pytest.raises(ValueError, match="perturbed_logits must have the shape of logits"):
        lpjax.relative_loss_variation(LOGITS, LOGITS[:2], LABELS)


# ----------------------------------------------------------------------------- validate_labels


def test_validate_labels_concrete():
    lpjax.validate_labels(LABELS, C)  # in range: no error
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[3\]"):
        lpjax.validate_labels(np.array([0, 3, 1]), C)
    with pytest.raises(ValueError, match=r"out-of-range values \[-1\]"):
        lpjax.validate_labels(np.array([0, -1, 1]), C)
    with pytest.raises(TypeError, match="labels must be integers"):
        lpjax.validate_labels(np.array([0.0, 1.0]), C)


def test_validate_labels_traced_reports_through_checkify():
    def step(logits, labels):
        lpjax.validate_labels(labels, C)
        return lpjax.lpl_perturbation(
            logits, labels, signs=SIGNS, bounds=BOUNDS, step_size=0.1
        ).sum()

    checked = checkify.checkify(jax.jit(step))
    err, out = checked(jnp.asarray(LOGITS), jnp.asarray(LABELS))
    err.throw()  # in range: nothing to report
    assert np.isfinite(out)
    err, _ = checked(jnp.asarray(LOGITS), jnp.array([0, 1, 3, 0]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, 3\)"):
        err.throw()
    err, _ = checked(jnp.asarray(LOGITS), jnp.array([0, -1, 2, 0]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, 3\)"):
        err.throw()


def test_a_custom_split_rule_is_checked_once_by_the_transform():
    def wrong_shape(logits, labels, where, axis_name):
        return jnp.ones(C + 1, jnp.int32), jnp.full(C + 1, 0.1)

    def negative_bounds(logits, labels, where, axis_name):
        return jnp.ones(C, jnp.int32), jnp.full(C, -0.1)

    with pytest.raises(ValueError, match=r"signs must have shape \[num_classes\]"):
        lpjax.lpl_transform(wrong_shape, step_size=0.05).apply(LOGITS, LABELS, ())
    with pytest.raises(ValueError, match="bounds must be finite and >= 0"):
        lpjax.lpl_transform(negative_bounds, step_size=0.05).apply(LOGITS, LABELS, ())
