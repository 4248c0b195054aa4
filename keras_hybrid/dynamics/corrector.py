"""Learned corrections of a dynamics model's systematic errors.

`ResidualCorrector` remembers the residuals (actual minus predicted outcome)
of past phases with the context they occurred in, and predicts the residual
of a new phase from the residuals of similar contexts.
"""

import collections
import math

import numpy as np

from keras_hybrid.validators import check_int
from keras_hybrid.validators import check_number


class ResidualCorrector:
    """Kernel regression of past residuals on their context.

    `correction(x) = sum_i w_i r_i / (prior_weight + sum_i w_i)` with
    `w_i = exp(-||(x - x_i) / s||^2 / (2 * bandwidth^2))`, where `s` is the
    per-feature standard deviation of the stored contexts (1 where it is 0).
    `prior_weight` is a pseudo-count of zero residual: with little similar
    evidence the correction shrinks towards zero, and contexts far from all
    stored ones get no correction.

    Args:
        capacity: most recent pairs kept.
        bandwidth: kernel width in normalized context units.
        prior_weight: shrinkage pseudo-count (>= 0).
    """

    def __init__(self, capacity=64, bandwidth=1.0, prior_weight=1.0):
        self.capacity = check_int("capacity", capacity, 1)
        self.bandwidth = float(
            check_number("bandwidth", bandwidth, 0.0, low_open=True)
        )
        if not math.isfinite(prior_weight) or prior_weight < 0:
            raise ValueError(
                "`prior_weight` must be a finite number >= 0. "
                f"Received: prior_weight={prior_weight!r}")
        self.prior_weight = float(prior_weight)
        self._contexts = collections.deque(maxlen=capacity)
        self._residuals = collections.deque(maxlen=capacity)
        self.context_dim = None
        self.residual_dim = None

    def __len__(self):
        return len(self._residuals)

    def _vector(self, value, name, dim):
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if dim is not None and v.shape[0] != dim:
            raise ValueError(
                f"`{name}` must have {dim} entries. "
                f"Received: {name} with {v.shape[0]} entries")
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(
                f"`{name}` must be a non-empty finite vector. "
                f"Received: {name}={value!r}")
        return v

    def add(self, context, residual):
        """Stores one `(context, residual)` pair (oldest dropped first)."""
        x = self._vector(context, "context", self.context_dim)
        r = self._vector(residual, "residual", self.residual_dim)
        self.context_dim, self.residual_dim = x.size, r.size
        self._contexts.append(x)
        self._residuals.append(r)

    def weights(self, context):
        """Kernel weights of the stored pairs for `context`."""
        x = self._vector(context, "context", self.context_dim)
        if not self._contexts:
            return np.zeros(0)
        contexts = np.stack(self._contexts)
        scale = contexts.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        dist2 = np.sum(((contexts - x) / scale) ** 2, axis=1)
        return np.exp(-0.5 * dist2 / self.bandwidth ** 2)

    def correction(self, context):
        """Expected residual for `context`: add it to the prediction.

        Returns:
            A vector of `residual_dim` entries (`(1,)` zeros when empty).
        """
        w = self.weights(context)
        if w.size == 0:
            return np.zeros(self.residual_dim or 1)
        residuals = np.stack(self._residuals)
        total = self.prior_weight + w.sum()
        if total <= 0.0:
            return np.zeros(self.residual_dim)
        return w @ residuals / total

    def residual_variance(self):
        """Total variance (mean squared distance to their mean) of residuals.

        Returns 0.0 with fewer than 2 residuals.
        """
        if len(self._residuals) < 2:
            return 0.0
        r = np.stack(self._residuals)
        return float(np.mean(np.sum((r - r.mean(axis=0)) ** 2, axis=1)))

    def get_state(self):
        return {
            "config": {"capacity": self.capacity, "bandwidth": self.bandwidth,
                       "prior_weight": self.prior_weight},
            "contexts": [c.tolist() for c in self._contexts],
            "residuals": [r.tolist() for r in self._residuals],
        }

    def set_state(self, state):
        self.__init__(**state["config"])
        for context, residual in zip(state["contexts"], state["residuals"]):
            self.add(context, residual)

    def memory_mb(self):
        return sum(a.nbytes for a in list(self._contexts) +
                   list(self._residuals)) / 2**20
