"""State encoding of the learned predictors: one small vector per FULL phase.

The vector has a basis-independent part (`phase_features`: loss curve,
gradient statistics, per-layer update shares) and the coefficients of the
phase's weight change in the low-rank trajectory basis (added by the
predictor, since they change whenever the basis is refitted).
"""

import math

import numpy as np

# Number of values `phase_features` returns besides the per-group shares.
NUM_SCALAR_FEATURES = 9


def variable_groups(variables, max_groups):
    """Splits the variable indices into at most `max_groups` contiguous
    groups of roughly equal parameter count (layer order is kept)."""
    sizes = [int(np.prod(v.shape)) for v in variables]
    count = min(len(sizes), int(max_groups))
    total = float(sum(sizes)) or 1.0
    groups, current, filled = [], [], 0
    for index, size in enumerate(sizes):
        current.append(index)
        filled += size
        left = len(sizes) - index - 1
        wanted = count - len(groups) - 1
        if wanted > 0 and (
            filled >= total * (len(groups) + 1) / count or left == wanted
        ):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def group_slices(variables, groups):
    """`(start, stop)` of every group in the flattened weight vector."""
    offsets = np.cumsum([0] + [int(np.prod(v.shape)) for v in variables])
    return [(int(offsets[g[0]]), int(offsets[g[-1] + 1])) for g in groups]


def group_norms(vector, slices):
    """Euclidean norm of each group's part of a flat vector."""
    return np.asarray(
        [np.linalg.norm(vector[a:b]) for a, b in slices], dtype=np.float64
    )


def _log(x):
    return math.log(max(float(x), 1e-12))


def loss_keypoints(losses, num_keypoints):
    """Log-loss at `num_keypoints` evenly spaced points of a phase, relative
    to the phase's first quarter, plus the relative log-loss of its last
    quarter (the "final" value). Returns `num_keypoints + 1` values."""
    values = np.log(np.maximum(np.asarray(losses, np.float64), 1e-12))
    n = len(values)
    quarter = max(n // 4, 1)
    base = values[:quarter].mean()
    points = []
    for k in range(1, num_keypoints + 1):
        centre = int(round(k * (n - 1) / (num_keypoints + 1)))
        lo, hi = max(centre - quarter // 2, 0), min(centre + quarter // 2 + 1, n)
        points.append(values[lo:hi].mean() - base)
    points.append(values[-quarter:].mean() - base)
    return np.asarray(points, np.float64)


def tail_mean(losses):
    """Mean of the last quarter (at least one) of a phase's losses."""
    quarter = max(len(losses) // 4, 1)
    return float(np.mean(losses[-quarter:]))


def phase_features(losses, grad_norms, step, consistency, delta_norm,
                   group_share):
    """The basis-independent features of a FULL phase.

    Args:
        losses: the phase's batch losses, in order.
        grad_norms: the phase's gradient norms (may be empty).
        step: the global step at the end of the phase.
        consistency: cosine between this and the previous phase's weight
            change (0 when unknown).
        delta_norm: norm of the phase's per-step weight change.
        group_share: per-group share of that change's squared norm.

    Returns:
        float64 vector of `NUM_SCALAR_FEATURES + len(group_share)` values.
    """
    logs = np.log(np.maximum(np.asarray(losses, np.float64), 1e-12))
    n = len(logs)
    t = np.arange(n, dtype=np.float64) - (n - 1)
    slope = float(np.polyfit(t, logs, 1)[0]) if n >= 2 else 0.0
    noise = float(np.std(logs - (logs.mean() + slope * (t - t.mean()))))
    grads = np.asarray(
        [g for g in grad_norms if g is not None and math.isfinite(g)],
        np.float64,
    )
    grad_mean = float(grads.mean()) if len(grads) else 0.0
    grad_cv = float(grads.std() / grad_mean) if grad_mean > 0 else 0.0
    grad_slope = 0.0
    if len(grads) >= 2:
        grad_slope = float(np.polyfit(
            np.arange(len(grads), dtype=np.float64),
            np.log(np.maximum(grads, 1e-12)), 1)[0])
    scalars = [
        float(logs[-1]) if n else 0.0,
        100.0 * slope,
        noise,
        _log(grad_mean) if grad_mean > 0 else 0.0,
        grad_cv,
        100.0 * grad_slope,
        math.log1p(max(step, 0)),
        float(consistency or 0.0),
        _log(delta_norm) if delta_norm > 0 else 0.0,
    ]
    return np.concatenate([scalars, np.asarray(group_share, np.float64)])
