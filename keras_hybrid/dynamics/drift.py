"""`DriftPredictor`: the cheap dynamics model with nothing learned.

Weights: the phase's averaged trajectory is extended along its per-step drift
(`WeightTrajectory.target`). Loss: a log-linear fit of the recent FULL-phase
losses, extrapolated to the end of the phase and corrected by the learned
bias of past forecasts. Confidence: the recent acceptance rate of its jumps
times the agreement of the last two drift directions.
"""

import math

from keras_hybrid.serialization import object_state
from keras_hybrid.serialization import set_object_state

from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.base import Predictor


class DriftPredictor(Predictor):
    """Extends the averaged trajectory along its drift (`type='drift'`).

    Args:
        config: the `HybridConfig`.
        trajectory: the `WeightTrajectory` it reads.
    """

    def __init__(self, config, trajectory):
        self.config = config
        self.trajectory = trajectory
        self.acceptance = 1.0
        self.log_loss_bias = 0.0
        self.consistency = None

    def ready(self):
        return self.trajectory.drift is not None

    # -------------------------------------------------------------- loss
    def _forecast(self, state, steps_ahead):
        trend = state.log_loss_trend(self.config.loss_trend_steps)
        if trend is None:
            return None, (None, None)
        slope, intercept, resid, _ = trend
        centre = intercept + slope * steps_ahead + self.log_loss_bias
        return (
            float(math.exp(centre)),
            (float(math.exp(centre - 2 * resid)),
             float(math.exp(centre + 2 * resid))),
        )

    # -------------------------------------------------------------- API
    def predict_phase_outcome(self, state, phase_length):
        tr = self.trajectory
        loss, bounds = self._forecast(state, phase_length)
        return PhaseOutcome(
            targets=lambda scale: tr.target(scale * phase_length),
            per_step_delta=list(tr.drift),
            # Computed when read (a shadow prediction never reads it).
            start=tr.start_point(),
            predicted_loss=loss,
            loss_bounds=bounds,
        )

    def update_from_observation(self, before, after, loss_trajectory):
        """Called at the end of every FULL phase.

        Args:
            before: unused (`None`: see `Predictor.uses_start_features`).
            after: the `TrainingState` at the phase end.
            loss_trajectory: `(step, loss)` pairs of the phase.
        """
        del before, after, loss_trajectory
        self.consistency = self.trajectory.drift_consistency()
        # Without attempts, the acceptance estimate relaxes to its prior.
        self.acceptance += 0.1 * (1.0 - self.acceptance)

    def prediction_confidence(self, state):
        del state
        if not self.ready() or self.consistency is None:
            return 0.0
        agreement = 0.5 + 0.5 * max(self.consistency, 0.0)
        return float(self.acceptance * agreement)

    def record_outcome(self, accepted, predicted_loss=None, actual_loss=None):
        self.acceptance = 0.7 * self.acceptance + 0.3 * float(bool(accepted))
        if (
            predicted_loss is not None
            and actual_loss is not None
            and predicted_loss > 0
            and actual_loss > 0
            and math.isfinite(actual_loss)
        ):
            error = math.log(actual_loss) - math.log(predicted_loss)
            self.log_loss_bias += 0.3 * error

    _STATE = ("acceptance", "log_loss_bias", "consistency")

    def get_state(self):
        return object_state(self, self._STATE)

    def set_state(self, state):
        set_object_state(self, state, self._STATE)

    def memory_mb(self):
        return self.trajectory.memory_mb()
