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


def lpl_perturbation(logits, labels, signs, bounds, step_size, where=None):
    """Section 3.3, the PGD-like inner solver, one class at a time.

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
            d = g / max(np.linalg.norm(g), 1e-12)
            delta_c = delta_c + float(signs[c]) * float(step_size) * d
        delta[members] = delta_c
    return delta


def balanced_signs_and_bounds(logits, labels, epsilon, delta_epsilon=0.0, where=None):
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


def longtail_signs_and_bounds(class_counts, num_head, epsilon, delta_epsilon=0.0):
    """Section 3.2, long-tailed data: rank by count (ties: lower index first)."""
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
            bounds[c] = epsilon + delta_epsilon * n[c] / n_max
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


def adaptive_lpl_step(logits, labels, bounds, signs, targets, step_size, rate, lo, hi, where=None):
    """Section 8, one batch: LPL with the current bounds, then the bound update."""
    u = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    num_classes = u.shape[1]
    delta = lpl_perturbation(u, labels, signs, bounds, step_size, where)
    valid = valid_mask(labels, num_classes, where)
    safe = np.where(valid, labels, 0)
    loss, loss_p = cross_entropy(u, safe), cross_entropy(u + delta, safe)
    sums = np.array([loss[valid & (labels == c)].sum() for c in range(num_classes)])
    sums_p = np.array([loss_p[valid & (labels == c)].sum() for c in range(num_classes)])
    new = adaptive_bounds_update(bounds, signs, targets, sums, sums_p, rate, lo, hi)
    return u + delta, new
