"""`HoltPredictor`: two exponential moving averages of the weights
(`type='holt'`), Holt's linear smoothing on the weight trajectory.

At the end of every FULL phase, the phase's averaged weights `m` (centred
on the phase, at learning-rate time `u`) update a fast and a slow EMA with
time constants `Ta = L` and `Tb = 4 L` steps (`L`: the FULL phase length):
`e += alpha * (m - e)`, `alpha = 1 - exp(-dt / T)` for the `dt` steps since
the previous update. On a trajectory linear in learning-rate time
`w(u) = w0 + v u`, each EMA lags by a known amount `lam` (tracked exactly:
`lam <- (1 - alpha) * (du + lam)`), so

    v = (ea - eb) / (lam_b - lam_a),   p = ea + (lam_a + u_now - u) * v

are the velocity (per unit of learning rate) and the denoised current
position. A jump over learning-rate time `U` goes to `p + U * c * v`, with a
per-tensor shrinkage `c_l = clip(cos(d_l, v_l), 0, 1)` between the last FULL
phase's own drift `d` and the velocity measured before that phase (their
data do not overlap, so for a random walk `c` is near 0). The forward check
compares the jump with the loss at `p` (and at the current weights): a
denoised point alone never counts as progress.

With `predictor.shrinkage='coordinate'` the per-tensor factor is replaced by
a per-coordinate shrinkage factor: the phase drifts (per unit of learning rate)
feed an exponential mean `mu` and variance `s2` with the slow EMA's rate
`beta`, and each coordinate of `v` is scaled by the positive-part
James-Stein factor

    max(0, 1 - (s2_i / n) / mu_i^2),   n = (2 - beta) / beta

(`n`: the number of phases the mean effectively averages; `s2 / n` is the
variance of `mu` itself), the estimated signal share of that coordinate's
drift: coordinates whose drift keeps its sign phase after phase move with
the velocity, those that wander (noise across a valley) stay near the
denoised position.
"""

import math

import numpy as np
from keras import ops

from keras_hybrid.backends import compile_function
from keras_hybrid.dynamics import long_window
from keras_hybrid.trajectory import scalar_tensor

SLOW_TIME_FACTOR = 4.0


def _moments_impl(mean, variance, drift, scale, beta):
    """One exponential step of the per-coordinate mean and variance of the
    phase drifts (`drift * scale`: per unit of learning rate)."""
    new_mean, new_variance = [], []
    for m, s2, d in zip(mean, variance, drift):
        x = ops.multiply(ops.cast(scale, d.dtype), d)
        b = ops.cast(beta, d.dtype)
        delta = ops.subtract(x, m)
        m2 = ops.add(m, ops.multiply(b, delta))
        # West's update: the variance about the new mean.
        s2 = ops.multiply(ops.subtract(1.0, b),
                          ops.add(s2, ops.multiply(b, ops.square(delta))))
        new_mean.append(m2)
        new_variance.append(s2)
    return new_mean, new_variance


def _shrink_impl(velocity, mean, variance, count):
    """`velocity * max(0, 1 - (variance / count) / mean^2)` per coordinate
    (0 where the mean is 0)."""
    out = []
    for v, m, s2 in zip(velocity, mean, variance):
        signal = ops.square(m)
        noise = ops.divide(s2, ops.cast(count, s2.dtype))
        gain = ops.where(
            signal > 0,
            ops.maximum(ops.subtract(1.0, ops.divide(
                noise, ops.maximum(signal, ops.cast(1e-30, signal.dtype)))),
                0.0),
            ops.zeros_like(signal),
        )
        out.append(ops.multiply(v, gain))
    return out


_moments = compile_function(_moments_impl)
_shrink = compile_function(_shrink_impl)


class HoltPredictor(long_window.LongWindowPredictor):
    """Two-timescale EMA velocity with per-tensor shrinkage.

    Args:
        config: the `HybridConfig` (`full_steps` is `L`).
        trajectory: the `WeightTrajectory` it reads.
        optimizer: the model's optimizer (read only).
    """

    judge_from_start = True

    def __init__(self, config, trajectory, optimizer=None):
        super().__init__(config, trajectory, optimizer)
        self.fast = None
        self.slow = None
        self.velocity = None
        self.shrinkage = None
        self.lag_fast = 0.0
        self.lag_slow = 0.0
        self.centre_step = None  # step of the last phase average
        self.centre_time = 0.0  # its learning-rate time
        self.time_at_step = None  # (step, learning-rate time) at the end
        # Per-coordinate moments of the phase drifts (`shrinkage:
        # 'coordinate'`) and the rate of their last update.
        self.drift_mean = None
        self.drift_variance = None
        self.moment_rate = None

    @property
    def per_coordinate(self):
        return self.config.predictor.shrinkage == "coordinate"

    def _has_velocity(self):
        if self.per_coordinate and self.moment_rate is None:
            return False  # fewer than two drifts: no variance yet
        return self.velocity is not None and self.shrinkage is not None

    def _phase_mean(self):
        tr = self.trajectory
        n = tr.first_count + tr.second_count
        return long_window.mix(tr.first_mean, tr.second_mean,
                               tr.first_count / n, tr.second_count / n)

    def _observe(self, n, end, rates):
        start = end - n
        if self.time_at_step is None:
            self.time_at_step = (start, 0.0)
        last_step, last_time = self.time_at_step
        between = self._rates(last_step, start - last_step)
        phase_start_time = last_time + float(between.sum())
        # Learning-rate time after each step of the phase; the average
        # weights sit at the mean of those.
        times = phase_start_time + np.cumsum(rates)
        centre_time = float(times.mean())
        centre_step = end - (n - 1) / 2.0
        self.time_at_step = (end, float(times[-1]))
        mean = self._phase_mean()
        if self.fast is None:
            self.fast, self.slow = mean, mean
            self.lag_fast = self.lag_slow = 0.0
        else:
            if self.velocity is not None:
                self.shrinkage, self.agreement = self._agreement()
            steps = max(centre_step - self.centre_step, 1.0)
            du = centre_time - self.centre_time
            length = float(self.config.full_steps)
            if self.per_coordinate:
                self._update_moments(rates, 1.0 - math.exp(
                    -steps / (SLOW_TIME_FACTOR * length)))
            for which, constant in (("fast", length),
                                    ("slow", SLOW_TIME_FACTOR * length)):
                alpha = 1.0 - math.exp(-steps / constant)
                ema = getattr(self, which)
                setattr(self, which, long_window.mix(ema, mean, 1.0 - alpha,
                                                     alpha))
                lag = getattr(self, f"lag_{which}")
                setattr(self, f"lag_{which}", (1.0 - alpha) * (du + lag))
            gap = self.lag_slow - self.lag_fast
            if gap > 0:
                self.velocity = long_window.mix(self.fast, self.slow,
                                                1.0 / gap, -1.0 / gap)
        self.centre_step = centre_step
        self.centre_time = centre_time

    def _update_moments(self, rates, beta):
        """Feeds the last phase's drift (per unit of learning rate) to the
        per-coordinate mean and variance."""
        scale = 1.0 / float(np.mean(rates))
        drift = self.trajectory.drift
        if self.drift_mean is None:
            self.drift_mean = long_window.mix(drift, drift, scale, 0.0)
            self.drift_variance = [ops.zeros_like(d) for d in drift]
            self.moment_rate = None  # one drift: no variance yet
            return
        self.drift_mean, self.drift_variance = _moments(
            list(self.drift_mean), list(self.drift_variance), list(drift),
            scalar_tensor(scale), scalar_tensor(beta),
        )
        self.moment_rate = float(beta)

    def _agreement(self):
        """Per-tensor shrinkage and overall cosine between this phase's
        drift and the velocity measured before it."""
        per_tensor, overall = long_window.tensor_cosines(
            self.trajectory.drift, self.velocity
        )
        return np.clip(per_tensor, 0.0, 1.0), overall

    def _jump_parts(self):
        now_time = self.time_at_step[1] + float(
            self._rates(self.time_at_step[0],
                        self._step() - self.time_at_step[0]).sum()
        )
        offset = self.lag_fast + now_time - self.centre_time
        position = long_window.mix(self.fast, self.velocity, 1.0, offset)
        if self.per_coordinate:
            beta = self.moment_rate or 1.0
            count = (2.0 - beta) / beta
            direction = _shrink(list(self.velocity), list(self.drift_mean),
                                list(self.drift_variance),
                                scalar_tensor(count))
            return position, direction, np.ones(len(direction))
        if self.config.predictor.shrinkage == "none":
            return position, self.velocity, np.ones(len(self.velocity))
        return position, self.velocity, self.shrinkage

    def _extra_state(self):
        return {
            "lag_fast": self.lag_fast, "lag_slow": self.lag_slow,
            "centre_step": self.centre_step,
            "centre_time": self.centre_time,
            "time_at_step": None if self.time_at_step is None
            else list(self.time_at_step),
            "shrinkage": None if self.shrinkage is None
            else [float(c) for c in self.shrinkage],
            "moment_rate": self.moment_rate,
        }

    def _set_extra_state(self, state):
        for name in ("lag_fast", "lag_slow", "centre_step", "centre_time"):
            if name in state:
                setattr(self, name, state[name])
        at = state.get("time_at_step")
        self.time_at_step = None if at is None else (int(at[0]), float(at[1]))
        shrinkage = state.get("shrinkage")
        self.shrinkage = None if shrinkage is None else np.asarray(shrinkage)
        self.moment_rate = state.get("moment_rate")

    def _array_groups(self):
        return [g for g in (self.fast, self.slow, self.velocity,
                            self.drift_mean, self.drift_variance)
                if g is not None]

    def _set_array_groups(self, groups):
        # Groups are saved in order and only once set: fast and slow come
        # together, the velocity after them, the moments after the velocity
        # (in 'coordinate' mode the moments start one phase after the EMAs).
        groups = list(groups) + [None] * (5 - len(groups))
        (self.fast, self.slow, self.velocity, self.drift_mean,
         self.drift_variance) = groups[:5]
