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
"""

import math

import numpy as np

from keras_hybrid.dynamics import long_window

SLOW_TIME_FACTOR = 4.0


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

    def _has_velocity(self):
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
        }

    def _set_extra_state(self, state):
        for name in ("lag_fast", "lag_slow", "centre_step", "centre_time"):
            if name in state:
                setattr(self, name, state[name])
        at = state.get("time_at_step")
        self.time_at_step = None if at is None else (int(at[0]), float(at[1]))
        shrinkage = state.get("shrinkage")
        self.shrinkage = None if shrinkage is None else np.asarray(shrinkage)

    def _array_groups(self):
        return [g for g in (self.fast, self.slow, self.velocity)
                if g is not None]

    def _set_array_groups(self, groups):
        groups = list(groups) + [None] * (3 - len(groups))
        self.fast, self.slow, self.velocity = groups[:3]
