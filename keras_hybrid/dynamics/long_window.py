"""What the long-window estimators (`nesterov`, `holt`) share.

Both are updated once per FULL phase, at its end, from the phase's averaged
weights (the running sums the compiled FULL step already keeps), so they add
nothing to the compiled step functions. Both keep their velocity per unit of
learning rate and turn it into a jump with the learning rates of the steps
the jump replaces (`keras_hybrid.dynamics.schedule`), and both jump only
while

- the schedule allows it (not in warmup, not in a cooldown), and
- the last FULL phase's own drift agrees with the long-window velocity
  measured before it (cosine >= `predictor.min_agreement`): a drift-to-noise
  gate; for a random walk the two are independent and the cosine is near 0.

The optimizer's moments are never extrapolated: a jump moves the weights
only.
"""

import numpy as np
from keras import ops

from keras_hybrid.backends import compile_function
from keras_hybrid.dynamics import schedule as lr_schedule
from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.drift import DriftPredictor
from keras_hybrid.trajectory import moved_along
from keras_hybrid.trajectory import scalar_tensor


def _mix_impl(a, b, weight_a, weight_b):
    return [
        ops.add(ops.multiply(ops.cast(weight_a, x.dtype), x),
                ops.multiply(ops.cast(weight_b, y.dtype), y))
        for x, y in zip(a, b)
    ]


def _scale_impl(direction, coefficients):
    return [ops.multiply(ops.cast(coefficients[i], d.dtype), d)
            for i, d in enumerate(direction)]


def _dots_impl(a, b):
    return ops.stack([
        ops.stack([
            ops.sum(ops.multiply(x, y)), ops.sum(ops.square(x)),
            ops.sum(ops.square(y)),
        ])
        for x, y in zip(a, b)
    ])


_combine = compile_function(moved_along)
_scale = compile_function(_scale_impl)
_mix = compile_function(_mix_impl)
_dots = compile_function(_dots_impl)


def combine(base, direction, coefficients):
    """`base[i] + coefficients[i] * direction[i]` for every tensor."""
    return _combine(list(base), list(direction),
                    ops.convert_to_tensor(np.asarray(coefficients, "float32")))


def scaled(direction, coefficients):
    """`coefficients[i] * direction[i]` for every tensor (one dispatch)."""
    return _scale(list(direction),
                  ops.convert_to_tensor(np.asarray(coefficients, "float32")))


def mix(a, b, weight_a, weight_b):
    """`weight_a * a[i] + weight_b * b[i]` for every tensor."""
    return _mix(list(a), list(b), scalar_tensor(weight_a),
                scalar_tensor(weight_b))


def tensor_cosines(a, b):
    """Per-tensor cosines of two lists of tensors (0 where one is 0) and
    their global cosine.

    Returns:
        `(per_tensor, overall)`: a NumPy array and a float.
    """
    return cosines_from_parts(ops.convert_to_numpy(_dots(list(a), list(b))))


def cosines_from_parts(parts):
    """`tensor_cosines` from the per-tensor rows `(a.b, a.a, b.b)`."""
    parts = np.asarray(parts, "float64")
    norms = np.sqrt(parts[:, 1] * parts[:, 2])
    per_tensor = np.where(norms > 0, parts[:, 0] / np.maximum(norms, 1e-300),
                          0.0)
    total = np.sqrt(parts[:, 1].sum() * parts[:, 2].sum())
    overall = float(parts[:, 0].sum() / total) if total > 0 else 0.0
    return per_tensor, overall


def horizon_units(rates_ahead, scale):
    """Learning-rate time of the first `scale * len(rates_ahead)` steps
    ahead (linear between whole steps)."""
    rates_ahead = np.asarray(rates_ahead, "float64")
    cumulative = np.concatenate([[0.0], np.cumsum(rates_ahead)])
    return float(np.interp(scale * len(rates_ahead),
                           np.arange(len(cumulative)), cumulative))


class LongWindowPredictor(DriftPredictor):
    """Base class of `NesterovPredictor` and `HoltPredictor`.

    Subclasses implement `_observe(n, end_step, rates)` (update the
    long-window state from the FULL phase that just ended: `n` steps ending
    at optimizer step `end_step`, with learning rates `rates`) and
    `_jump_parts()`, which returns `(base, direction, coefficients)`: the
    jump over learning-rate time `U` is `base + U * coefficients * direction`
    (`base=None`: from the current weights, which an unchecked jump then
    moves in place, `PhaseOutcome.apply`).

    Args:
        config: the `HybridConfig`.
        trajectory: the `WeightTrajectory` it reads.
        optimizer: the model's optimizer (its step counter and learning-rate
            schedule are read, never changed); `None` assumes a constant
            rate and counts steps itself.
    """

    # Whether the forward check compares the jump with the loss at its
    # starting point (`PhaseOutcome.start`) rather than the current weights.
    judge_from_start = False

    def __init__(self, config, trajectory, optimizer=None):
        super().__init__(config, trajectory)
        self.optimizer = optimizer
        self.agreement = None
        self.peak_rate = 0.0
        self.phases = 0
        self._last_drift = None
        self._steps = 0
        self._window_rates = np.zeros((0,))

    # ------------------------------------------------------------ steps
    def _step(self):
        if self.optimizer is None:
            return self._steps
        return int(ops.convert_to_numpy(self.optimizer.iterations))

    def _rates(self, start, count):
        return lr_schedule.learning_rates(self.optimizer, start, count)

    # -------------------------------------------------------------- API
    def update_from_observation(self, before, after, loss_trajectory):
        del before, after
        tr = self.trajectory
        # Relax the acceptance estimate towards its prior, as `drift` does.
        self.acceptance += 0.1 * (1.0 - self.acceptance)
        if tr.drift is None or tr.drift is self._last_drift:
            return  # No new phase average (a phase too short to halve).
        self._last_drift = tr.drift
        n = tr.first_count + tr.second_count
        if self.optimizer is None:
            self._steps += len(loss_trajectory or ()) or n
        end = self._step()
        rates = self._rates(end - n, n)
        if rates.size == 0 or not rates.mean() > 0:
            return
        self.peak_rate = max(self.peak_rate, float(rates.max()))
        self._window_rates = rates
        self._observe(n, end, rates)
        self.phases += 1
        self.consistency = self.agreement

    def _gate(self, length):
        """Whether a jump over `length` steps is allowed now."""
        if self.agreement is None or (
            self.agreement < self.config.predictor.min_agreement
        ):
            return False
        ahead = self._rates(self._step(), max(int(length), 1))
        return lr_schedule.jump_allowed(
            self._window_rates, ahead, self.peak_rate,
            self.config.predictor.min_lr_fraction,
        )

    def ready(self):
        return self._has_velocity() and self._gate(
            self.config.max_predict_steps
        )

    def predict_phase_outcome(self, state, phase_length):
        loss, bounds = self._forecast(state, phase_length)
        length = max(int(phase_length), 1)
        # The rates as far as the largest candidate scale reaches.
        reach = max([1.0] + list(self.config.predictor.jump_scales))
        ahead = self._rates(self._step(), int(np.ceil(reach * length)))
        base, direction, coefficients = self._jump_parts()
        coefficients = np.asarray(coefficients, "float64")
        apply = None
        if base is None:
            # From the current weights: copied (the outcome's lazy start)
            # only where the start or a target is read; a checked jump
            # reads its start at once.
            base = self.trajectory.snapshots.take
            snapshots = self.trajectory.snapshots

            def apply(scale):
                return snapshots.add_if_finite(direction,
                                               coefficients * units(scale))
        else:
            base = list(base)

        def units(scale):
            return horizon_units(ahead, scale * length / len(ahead))

        def targets(scale):
            return combine(outcome.start, direction,
                           coefficients * units(scale))

        def per_step():
            return scaled(direction, coefficients * float(ahead[0]))

        outcome = PhaseOutcome(
            targets=targets,
            per_step_delta=per_step,
            start=base,
            predicted_loss=loss,
            loss_bounds=bounds,
            judge_from_start=self.judge_from_start,
            required_gain=self._required_gain(state, ahead[:length]),
            apply=apply,
        )
        return outcome

    def _required_gain(self, state, rates_ahead):
        """`min_progress` times the relative loss decrease that training
        the skipped steps would bring, from the log-linear trend of the
        recent FULL losses (its slope per step, scaled by the skipped
        steps' learning rates against the last phase's): a jump must be
        worth that share of the steps it replaces. 0 while the loss does
        not fall or without a trend."""
        fraction = float(self.config.predictor.min_progress)
        if fraction <= 0:
            return 0.0
        trend = state.log_loss_trend(self.config.loss_trend_steps)
        window = float(np.mean(self._window_rates)) if len(
            self._window_rates) else 0.0
        if trend is None or not window > 0:
            return 0.0
        slope = float(trend[0])  # log-loss change per step
        if not np.isfinite(slope) or slope >= 0:
            return 0.0
        steps = float(np.sum(rates_ahead)) / window  # in last-phase steps
        return fraction * float(-np.expm1(slope * steps))

    # ----------------------------------------------------------- state
    _STATE = ("acceptance", "log_loss_bias", "consistency", "agreement",
              "peak_rate", "phases", "_steps")

    def get_state(self):
        state = {name: getattr(self, name) for name in self._STATE}
        state["window_rates"] = [
            float(r) for r in getattr(self, "_window_rates", ())
        ]
        state.update(self._extra_state())
        return state

    def set_state(self, state):
        for name in self._STATE:
            if name in state:
                setattr(self, name, state[name])
        self._window_rates = np.asarray(state.get("window_rates", ()),
                                        "float64")
        self._set_extra_state(state)

    def _extra_state(self):
        return {}

    def _set_extra_state(self, state):
        del state

    def get_arrays(self):
        return [np.asarray(ops.convert_to_numpy(t))
                for group in self._array_groups() for t in group]

    def set_arrays(self, arrays):
        arrays = list(arrays)
        size = len(self.trajectory.variables)
        groups = [
            [ops.convert_to_tensor(a) for a in arrays[i:i + size]]
            for i in range(0, len(arrays), size)
        ]
        self._set_array_groups(groups)

    def memory_mb(self):
        tensors = sum(len(g) for g in self._array_groups())
        size = len(self.trajectory.variables) or 1
        per_group = self.trajectory.num_parameters * np.dtype(
            self.trajectory.variables[0].dtype
        ).itemsize / 2**20
        return self.trajectory.memory_mb() + tensors / size * per_group

    # ------------------------------------------------------- subclasses
    def _has_velocity(self):
        raise NotImplementedError

    def _observe(self, n, end, rates):
        raise NotImplementedError

    def _jump_parts(self):
        raise NotImplementedError

    def _array_groups(self):
        return []

    def _set_array_groups(self, groups):
        del groups
