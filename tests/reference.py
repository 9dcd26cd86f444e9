"""Plain NumPy (float64) reference implementation of docs/method.md, sections 1-3.

Written straight from the specification, deliberately simple (per-class Python
loops), independent of lpjax: the tests compare lpjax against these functions.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(u):
    u = np.asarray(u, np.float64)
    z = u - u.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(u):
    u = np.asarray(u, np.float64)
    m = u.max(axis=-1, keepdims=True)
    return u - m - np.log(np.exp(u - m).sum(axis=-1, keepdims=True))


def cross_entropy(u, labels):
    """Per-sample ``-log softmax(u)[y]``, float64."""
    labels = np.asarray(labels)
    return -log_softmax(u)[np.arange(len(labels)), labels]


def valid_mask(labels, num_classes, where=None):
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < num_classes)
    if where is not None:
        valid &= np.asarray(where, bool)
    return valid


def num_steps(bound, step_size):
    """Section 3.3: ``K_c = floor(eps_c / alpha + 1e-6)``."""
    return int(math.floor(float(bound) / float(step_size) + 1e-6))


def lpl_perturbation(logits, labels, signs, bounds, step_size, where=None, normalize=False):
    """Section 3.3, the PGD-like inner solver, one class at a time.

    ``normalize=False``: the paper's step (Eq. 11/12), along the class-mean gradient
    ``g_c`` itself; ``normalize=True``: the unit step, along ``g_c / |g_c|``.

    A class's gradient depends only on its own samples and its own
    perturbation, so solving the classes one after the other is the same as
    the simultaneous update of the spec.
    """
    u = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    batch, num_classes = u.shape
    valid = valid_mask(labels, num_classes, where)
    delta = np.zeros((batch, num_classes))
    for c in range(num_classes):
        members = np.flatnonzero(valid & (labels == c))
        if members.size == 0 or signs[c] == 0:
            continue
        steps = num_steps(bounds[c], step_size)
        onehot = np.zeros(num_classes)
        onehot[c] = 1.0
        delta_c = np.zeros(num_classes)
        for _ in range(steps):
            g = np.mean(softmax(u[members] + delta_c) - onehot, axis=0)
            d = g / max(np.linalg.norm(g), 1e-12) if normalize else g
            delta_c = delta_c + float(signs[c]) * float(step_size) * d
        delta[members] = delta_c
    return delta


def mean_rule_signs_and_bounds(logits, labels, epsilon, delta_epsilon=0.0, where=None):
    """Section 3.2, balanced data ("mean" rule); tau over the present classes only."""
    u = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    num_classes = u.shape[1]
    valid = valid_mask(labels, num_classes, where)
    p = softmax(u)
    q = {}
    for c in range(num_classes):
        members = np.flatnonzero(valid & (labels == c))
        if members.size:
            q[c] = float(np.mean(p[members, c]))
    signs = np.zeros(num_classes, np.int64)
    bounds = np.zeros(num_classes)
    if not q:
        return signs, bounds
    tau = sum(q.values()) / len(q)
    for c, qc in q.items():
        signs[c] = int(np.sign(tau - qc))
        bounds[c] = epsilon + delta_epsilon * abs(tau - qc)
    return signs, bounds


def longtail_signs_and_bounds(class_counts, num_head, epsilon, delta_epsilon=0.0, head_scale=1.0):
    """Section 3.2, long-tailed data: rank by count (ties: lower index first); every head
    bound times ``head_scale``."""
    n = [float(x) for x in class_counts]
    num_classes = len(n)
    order = sorted(range(num_classes), key=lambda c: (-n[c], c))
    head = set(order[:num_head])
    n_max, n_min = max(n), min(n)
    signs = np.zeros(num_classes, np.int64)
    bounds = np.zeros(num_classes)
    for c in range(num_classes):
        if c in head:
            signs[c] = -1
            bounds[c] = head_scale * (epsilon + delta_epsilon * n[c] / n_max)
        else:
            signs[c] = 1
            bounds[c] = epsilon + delta_epsilon * n_min / n[c]
    return signs, bounds


def logit_adjustment(class_counts, tau=1.0):
    """Section 2: ``tau * log(pi)``."""
    n = np.asarray(class_counts, np.float64)
    return tau * np.log(n / n.sum())


def ldam_margins(class_counts, max_margin=0.5):
    """Section 2: ``m_c = M * n_c^(-1/4) / max_k n_k^(-1/4)``."""
    n = np.asarray(class_counts, np.float64)
    r = n**-0.25
    return max_margin * r / r.max()


def class_balanced_weights(class_counts, beta):
    """Cui et al.: ``(1 - beta) / (1 - beta^n)``, normalised to sum to C."""
    n = np.asarray(class_counts, np.float64)
    w = np.array([(1.0 - beta) / (1.0 - beta**k) for k in n])
    return w * len(n) / w.sum()


def ldam_logits(logits, labels, class_counts, max_margin=0.5, scale=30.0):
    """LDAM: subtract ``m_y`` from the true-class logit only, then scale."""
    u = np.array(logits, np.float64)
    m = ldam_margins(class_counts, max_margin)
    for i, y in enumerate(np.asarray(labels)):
        if 0 <= y < u.shape[1]:
            u[i, y] -= m[y]
    return scale * u


def relative_loss_variation(logits, perturbed_logits, labels, where=None):
    """Section 2: class mean of ``(l' - l) / l``; NaN for classes without samples."""
    u = np.asarray(logits, np.float64)
    up = np.asarray(perturbed_logits, np.float64)
    labels = np.asarray(labels)
    num_classes = u.shape[1]
    valid = valid_mask(labels, num_classes, where)
    out = np.full(num_classes, np.nan)
    safe = np.where(valid, labels, 0)
    loss = cross_entropy(u, safe)
    loss_p = cross_entropy(up, safe)
    for c in range(num_classes):
        members = np.flatnonzero(valid & (labels == c))
        if members.size:
            out[c] = np.mean((loss_p[members] - loss[members]) / loss[members])
    return out


def adaptive_bounds_update(bounds, signs, targets, loss_sums, perturbed_sums, rate, lo, hi):
    """Section 8: ``eps_c <- clip(eps_c exp(rate clip(k_c - s_c log(L'_c / L_c), -1, 1)))``,
    only for signed classes with positive, finite loss sums."""
    new = np.array(bounds, np.float64)
    for c in range(len(new)):
        L, Lp = float(loss_sums[c]), float(perturbed_sums[c])
        if signs[c] == 0 or not (np.isfinite(L) and np.isfinite(Lp) and L > 0 and Lp > 0):
            continue
        error = min(max(targets[c] - signs[c] * math.log(Lp / L), -1.0), 1.0)
        new[c] = min(max(new[c] * math.exp(rate * error), lo), hi)
    return new


def adaptive_lpl_step(
    logits, labels, bounds, signs, targets, step_size, rate, lo, hi, where=None, normalize=False
):
    """Section 8, one batch: LPL with the current bounds, then the bound update."""
    u = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    num_classes = u.shape[1]
    delta = lpl_perturbation(u, labels, signs, bounds, step_size, where, normalize)
    valid = valid_mask(labels, num_classes, where)
    safe = np.where(valid, labels, 0)
    loss, loss_p = cross_entropy(u, safe), cross_entropy(u + delta, safe)
    sums = np.array([loss[valid & (labels == c)].sum() for c in range(num_classes)])
    sums_p = np.array([loss_p[valid & (labels == c)].sum() for c in range(num_classes)])
    new = adaptive_bounds_update(bounds, signs, targets, sums, sums_p, rate, lo, hi)
    return u + delta, new


# ---------------------------------------------------------------------------
# Multi-label LPL (docs/method.md, section 4) and the multi-label losses.


def sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(
        x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    )


def multilabel_members(labels, where, c, polarity):
    labels = np.asarray(labels)
    batch = labels.shape[0]
    valid = np.ones(batch, bool) if where is None else np.asarray(where, bool)
    return [i for i in range(batch) if valid[i] and labels[i, c] == polarity]


def lpl_multilabel_perturbation(
    logits, labels, pos_signs, neg_signs, pos_bounds, neg_bounds, step_size, where=None
):
    u = np.asarray(logits, np.float64)
    batch, num_classes = u.shape
    delta = np.zeros((batch, num_classes))
    for c in range(num_classes):
        for polarity, sign, bound in (
            (1, pos_signs[c], pos_bounds[c]),
            (0, neg_signs[c], neg_bounds[c]),
        ):
            members = multilabel_members(labels, where, c, polarity)
            if not members or sign == 0:
                continue
            d = 0.0
            for _ in range(num_steps(bound, step_size)):
                g = np.mean([sigmoid(u[i, c] + d) - polarity for i in members])
                d += float(sign) * float(step_size) * g
            for i in members:
                delta[i, c] = d
    return delta


def multilabel_longtail_signs_and_bounds(
    counts, num_head, epsilon, delta_epsilon, negative_sign, negative_epsilon
):
    n = [float(x) for x in counts]
    num_classes = len(n)
    order = sorted(range(num_classes), key=lambda c: (-n[c], c))
    head = set(order[:num_head])
    pos_signs, pos_bounds = np.zeros(num_classes, int), np.zeros(num_classes)
    for c in range(num_classes):
        if c in head:
            pos_signs[c], pos_bounds[c] = -1, epsilon + delta_epsilon * n[c] / max(n)
        else:
            pos_signs[c], pos_bounds[c] = 1, epsilon + delta_epsilon * min(n) / n[c]
    neg_signs = np.broadcast_to(negative_sign, (num_classes,))
    neg_bounds = np.broadcast_to(negative_epsilon, (num_classes,))
    return pos_signs, neg_signs, pos_bounds, neg_bounds


def multilabel_mean_rule_signs_and_bounds(logits, labels, epsilon, delta_epsilon=0.0, where=None):
    u = np.asarray(logits, np.float64)
    num_classes = u.shape[1]
    q = {}
    for c in range(num_classes):
        for polarity in (1, 0):
            members = multilabel_members(labels, where, c, polarity)
            if members:
                probs = [sigmoid(u[i, c] if polarity else -u[i, c]) for i in members]
                q[(c, polarity)] = float(np.mean(probs))
    signs = {1: np.zeros(num_classes, int), 0: np.zeros(num_classes, int)}
    bounds = {1: np.zeros(num_classes), 0: np.zeros(num_classes)}
    if q:
        tau = sum(q.values()) / len(q)
        for (c, polarity), qc in q.items():
            signs[polarity][c] = int(np.sign(tau - qc))
            bounds[polarity][c] = epsilon + delta_epsilon * abs(tau - qc)
    return signs[1], signs[0], bounds[1], bounds[0]


def sigmoid_binary_cross_entropy(u, y):
    u = np.asarray(u, np.float64)
    return np.logaddexp(0, -u) * y + np.logaddexp(0, u) * (1 - y)


def asymmetric_loss(u, y, gamma_negative, gamma_positive, clip):
    p = sigmoid(u)
    p_m = np.maximum(p - clip, 0)
    positive = (1 - p) ** gamma_positive * np.log(p)
    negative = p_m**gamma_negative * np.log(1 - p_m)
    return -(y * positive + (1 - y) * negative)


# ----------------------------------------------------------------------------- input pipeline


def train_batch(images, labels, mean, std, step, *, batch_size, seed, augment, process, processes):
    """The in-memory pipeline's training batch, written from its specification.

    Epoch ``e = step // (N // G)``, order ``default_rng([seed, e]).permutation(N)``, the
    ``step % (N // G)``-th run of ``G`` entries of it, this process's ``G / P`` of them; for
    images of at least 16x16 with ``augment``, per row: reflect-pad 4, crop at offsets
    ``(y, x)`` and flip drawn for the whole global batch from ``default_rng([seed, step,
    1])`` (``integers(0, 9, (2, G))`` then ``random(G) < 0.5``); ``(x / 255 - mean) / std``
    (uint8) or ``(x - mean) / std`` (float). One image at a time, float64 arithmetic.
    """
    n = len(images)
    steps = n // batch_size
    epoch, within = divmod(step, steps)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    chosen = order[within * batch_size : (within + 1) * batch_size]
    rng = np.random.default_rng([seed, step, 1])
    offsets = rng.integers(0, 9, size=(2, batch_size))
    flips = rng.random(batch_size) < 0.5
    local = batch_size // processes
    out_images, out_labels = [], []
    for row in range(process * local, (process + 1) * local):
        image = np.asarray(images[chosen[row]])
        height, width, _ = image.shape
        if augment and min(height, width) >= 16:
            padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")
            y, x = offsets[0][row], offsets[1][row]
            image = padded[y : y + height, x : x + width]
            if flips[row]:
                image = image[:, ::-1]
        pixels = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
        out_images.append((pixels - np.asarray(mean, np.float64)) / np.asarray(std, np.float64))
        out_labels.append(labels[chosen[row]])
    return np.stack(out_images), np.stack(out_labels)


# ---------------------------------------------------------------------------
# ISDA (Wang et al.), written from the paper and the authors' EstimatorCV.


def isda_update_class_statistics(counts, means, covariances, features, labels, valid=None):
    """The authors' EstimatorCV.update_CV, one class at a time."""
    counts, means, covariances = counts.copy(), means.copy(), covariances.copy()
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    valid = np.ones(len(labels), bool) if valid is None else np.asarray(valid, bool)
    for c in range(len(counts)):
        x = features[valid & (labels == c)]
        if len(x) == 0:
            continue
        batch_mean = x.mean(0)
        batch_cov = (x - batch_mean).T @ (x - batch_mean) / len(x)
        w = len(x) / (counts[c] + len(x))
        shift = means[c] - batch_mean
        covariances[c] = (
            (1 - w) * covariances[c] + w * batch_cov + w * (1 - w) * np.outer(shift, shift)
        )
        means[c] = (1 - w) * means[c] + w * batch_mean
        counts[c] += len(x)
    return counts, means, covariances


def isda_augmentation(labels, covariances, kernel, ratio):
    """Direct per-sample, per-class (ratio/2)(w_c - w_y)^T Sigma_y (w_c - w_y)."""
    kernel = np.asarray(kernel, np.float64)
    covariances = np.asarray(covariances, np.float64)
    labels = np.asarray(labels)
    out = np.zeros((len(labels), kernel.shape[1]))
    for i, y in enumerate(labels):
        for c in range(kernel.shape[1]):
            v = kernel[:, c] - kernel[:, y]
            out[i, c] = 0.5 * ratio * v @ covariances[y] @ v
    return out


def isda_diagonal_from_samples(samples_by_class, feature_dim):
    """``(counts, means, variances)`` of the samples of each class (zeros for none)."""
    num_classes = len(samples_by_class)
    counts, means = np.zeros(num_classes), np.zeros((num_classes, feature_dim))
    variances = np.zeros((num_classes, feature_dim))
    for c, rows in enumerate(samples_by_class):
        if rows:
            x = np.asarray(rows, np.float64)
            counts[c], means[c], variances[c] = len(x), x.mean(0), x.var(0)
    return counts, means, variances


def isda_diagonal_augmentation(labels, variances, kernel, ratio):
    """Direct per-sample, per-class (ratio/2) sum_d var_yd (w_dc - w_dy)^2."""
    kernel = np.asarray(kernel, np.float64)
    variances = np.asarray(variances, np.float64)
    out = np.zeros((len(labels), kernel.shape[1]))
    for i, y in enumerate(np.asarray(labels)):
        for c in range(kernel.shape[1]):
            out[i, c] = 0.5 * ratio * np.sum(variances[y] * (kernel[:, c] - kernel[:, y]) ** 2)
    return out


# ---------------------------------------------------------------------------
# Meta-LPL (docs/method.md, section 9) for a linear softmax classifier.


def meta_lpl_direction(logits, labels, theta, step_size, normalize=False):
    """``v`` of section 9: ``delta_c / theta_c`` from the solver with ``s = sign(theta)``,
    ``eps = |theta|``; the one-step direction at ``u`` where the solver takes no step."""
    u = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    theta = np.asarray(theta, np.float64)
    num_classes = u.shape[1]
    delta = lpl_perturbation(u, labels, np.sign(theta), np.abs(theta), step_size, None, normalize)
    one_step = lpl_perturbation(
        u, labels, np.ones(num_classes), np.ones(num_classes), 1.0, None, normalize
    )
    v = np.zeros_like(u)
    for i, y in enumerate(labels):
        if num_steps(abs(theta[y]), step_size) > 0:
            v[i] = delta[i] / theta[y]
        else:
            v[i] = one_step[i]
    return v


def meta_lpl_lookahead_loss(weights, x, labels, x_meta, labels_meta, theta, v, learning_rate):
    """Section 9's meta objective for logits ``x @ W``: one SGD step on the mean
    cross-entropy of ``x @ W + theta_y v`` (its gradient ``x^T (softmax - onehot) / B``
    written out), then the mean cross-entropy of ``x_meta @ W'``."""
    w = np.asarray(weights, np.float64)
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels)
    theta = np.asarray(theta, np.float64)
    num_classes = w.shape[1]
    perturbed = x @ w + theta[labels][:, None] * v
    residual = softmax(perturbed) - np.eye(num_classes)[labels]
    lookahead = w - learning_rate * x.T @ residual / len(labels)
    return float(np.mean(cross_entropy(np.asarray(x_meta, np.float64) @ lookahead, labels_meta)))
