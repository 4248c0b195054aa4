"""`AdaptiveInterval`: how often a PREDICT phase makes a micro-correction
(a short FULL check), set from how erratic the predictor's residuals are."""

import math

import numpy as np

from keras_hybrid.validators import check_int


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
