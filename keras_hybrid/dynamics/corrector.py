"""Learned corrections of a dynamics model's systematic errors.

`ResidualCorrector` remembers the residuals (actual minus predicted outcome)
of past phases with the context they occurred in, and predicts the residual
of a new phase from the residuals of similar contexts. `AdaptiveInterval`
sets how often a micro-correction (a short FULL check) is made from how
erratic the residuals are.
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


class AdaptiveInterval:
    """Interval (in steps) between micro-corrections, adapted to residuals.

    Keeps exponentially weighted mean `m` and variance `v` of the residual
    norms. After `warmup` updates, when `v / m^2` (the squared coefficient
    of variation) exceeds `high`, the interval is multiplied by `shrink`;
    below `low`, by `grow`; the value is clipped to `[minimum, maximum]`.

    Args:
        initial: starting interval.
        minimum: smallest interval (>= 1).
        maximum: largest interval.
        decay: weight of the past in the running statistics, in (0, 1).
        high: relative variance above which the interval shortens.
        low: relative variance below which the interval lengthens.
        shrink: factor in (0, 1) applied when shortening.
        grow: factor > 1 applied when lengthening.
        warmup: updates before the interval starts to adapt.
    """

    def __init__(self, initial=10, minimum=2, maximum=50, decay=0.8,
                 high=0.5, low=0.05, shrink=0.5, grow=1.25, warmup=3):
        minimum = check_int("minimum", minimum, 1)
        maximum = check_int("maximum", maximum, 1)
        initial = check_int("initial", initial, 1)
        warmup = check_int("warmup", warmup, 1)
        if not minimum <= initial <= maximum:
            raise ValueError(
                "`initial` must lie in [minimum, maximum]. Received: "
                f"initial={initial}, minimum={minimum}, maximum={maximum}")
        if not 0.0 < decay < 1.0:
            raise ValueError(
                f"`decay` must be in (0, 1). Received: decay={decay!r}")
        if not 0.0 <= low < high:
            raise ValueError(
                "`low` and `high` must satisfy 0 <= low < high. "
                f"Received: low={low!r}, high={high!r}")
        if not 0.0 < shrink < 1.0 or not grow > 1.0:
            raise ValueError(
                "`shrink` must be in (0, 1) and `grow` > 1. "
                f"Received: shrink={shrink!r}, grow={grow!r}")
        self.config = {"initial": initial, "minimum": minimum,
                       "maximum": maximum, "decay": float(decay),
                       "high": float(high), "low": float(low),
                       "shrink": float(shrink), "grow": float(grow),
                       "warmup": int(warmup)}
        self.minimum, self.maximum = minimum, maximum
        self._interval = float(initial)
        self.mean = 0.0
        self.variance = 0.0
        self.count = 0

    @property
    def value(self):
        """The current interval, an int in `[minimum, maximum]`."""
        return int(min(max(round(self._interval), self.minimum), self.maximum))

    def relative_variance(self):
        """`variance / mean^2` of the residual norms (0 when both are 0)."""
        if self.mean <= 1e-12:
            return 0.0 if self.variance <= 1e-24 else math.inf
        return self.variance / self.mean ** 2

    def update(self, residual_norm):
        """Records a residual norm (>= 0) and returns the new interval."""
        if isinstance(residual_norm, bool) or not isinstance(
                residual_norm, (int, float, np.integer, np.floating)) \
                or not math.isfinite(residual_norm) or residual_norm < 0:
            raise ValueError(
                "`residual_norm` must be a finite number >= 0. "
                f"Received: residual_norm={residual_norm!r}")
        cfg = self.config
        x = float(residual_norm)
        if self.count == 0:
            self.mean, self.variance = x, 0.0
        else:
            d = cfg["decay"]
            diff = x - self.mean
            self.mean += (1.0 - d) * diff
            self.variance = d * (self.variance + (1.0 - d) * diff * diff)
        self.count += 1
        if self.count >= cfg["warmup"]:
            rel = self.relative_variance()
            if rel > cfg["high"]:
                self._interval *= cfg["shrink"]
            elif rel < cfg["low"]:
                self._interval *= cfg["grow"]
            self._interval = min(max(self._interval, float(self.minimum)),
                                 float(self.maximum))
        return self.value

    def get_state(self):
        return {"config": dict(self.config), "interval": self._interval,
                "mean": self.mean, "variance": self.variance,
                "count": self.count}

    def set_state(self, state):
        self.__init__(**state["config"])
        self._interval = float(state["interval"])
        self.mean = float(state["mean"])
        self.variance = float(state["variance"])
        self.count = int(state["count"])

    def memory_mb(self):
        return 0.0
