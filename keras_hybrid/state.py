"""`TrainingState`: what the callback knows about training, as small numbers."""

import collections
import math

import numpy as np


class RunningMoments:
    """Exponential moving mean and variance of a scalar stream.

    Args:
        decay: weight of the past, in [0, 1).
    """

    def __init__(self, decay=0.9):
        self.decay = decay
        self.mean = None
        self.var = 0.0
        self.count = 0

    def update(self, value):
        value = float(value)
        if not math.isfinite(value):
            return
        self.count += 1
        if self.mean is None:
            self.mean = value
            return
        diff = value - self.mean
        self.mean += (1.0 - self.decay) * diff
        self.var = self.decay * (self.var + (1.0 - self.decay) * diff * diff)

    @property
    def std(self):
        return math.sqrt(max(self.var, 0.0))


class TrainingState:
    """Loss curve and gradient statistics of recent steps.

    Args:
        capacity: steps kept in the ring buffers.
    """

    def __init__(self, capacity=512):
        self.losses = collections.deque(maxlen=capacity)
        self.grad_norms = collections.deque(maxlen=capacity)
        self.full_loss = RunningMoments(decay=0.95)
        self.grad_norm = RunningMoments(decay=0.95)
        self.step = 0

    def record(self, step, loss, grad_norm=None, backward=True):
        """Records one step's batch loss (and gradient norm on FULL steps)."""
        self.step = step
        self.losses.append((step, float(loss), bool(backward)))
        if backward:
            self.full_loss.update(loss)
            if grad_norm is not None:
                self.grad_norms.append((step, float(grad_norm)))
                self.grad_norm.update(grad_norm)

    def recent_full_losses(self, count):
        """The last `count` losses of steps that ran a backward pass."""
        full = [(s, l) for s, l, b in self.losses if b and math.isfinite(l)]
        return full[-count:]

    def log_loss_trend(self, count, minimum=4):
        """Least-squares line through the log of the last `count` FULL
        losses, against the step relative to the newest one.

        Returns:
            `(slope, intercept, residual_std, losses)`, or `None` with fewer
            than `minimum` points.
        """
        recent = self.recent_full_losses(count)
        if len(recent) < minimum:
            return None
        steps, losses = map(np.asarray, zip(*recent))
        t = steps - steps[-1]
        logs = np.log(np.maximum(losses, 1e-12))
        slope, intercept = np.polyfit(t, logs, 1)
        resid = np.std(logs - (intercept + slope * t))
        return slope, intercept, resid, losses

    def features(self):
        """A small feature vector: loss level, trend, noise, grad norm."""
        trend = self.log_loss_trend(64, minimum=2)
        if trend is None:
            return np.zeros(4, dtype="float32")
        slope, _, _, losses = trend
        return np.asarray(
            [
                np.log(max(losses[-1], 1e-12)),
                slope,
                np.std(losses) / max(np.mean(losses), 1e-12),
                np.log(max(self.grad_norm.mean or 1e-12, 1e-12)),
            ],
            dtype="float32",
        )
