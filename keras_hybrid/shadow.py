"""`ShadowScoring`: predictions scored against what training really did.

At the end of every fitting FULL phase the predictor predicts the next FULL
phase as if it were a PREDICT phase. The prediction is never applied: when
the next phase has run, its weight change and loss score the prediction
(weight-change cosine and error, loss error, calibration), and the scores
teach the predictor's calibrator and corrector and the correction interval.
A prediction is scored only against the FULL phase that directly continues
the one it was made at (`interrupt` breaks the chain).
"""

from keras_hybrid.dynamics.features import tail_mean
from keras_hybrid.serialization import to_numpy
from keras_hybrid.serialization import to_tensors
from keras_hybrid.trajectory import all_finite


class ShadowScoring:
    """The pending shadow prediction and whether it can be scored.

    Args:
        stats: the run's `RunStatistics` (receives the scores).
        control: the `PhaseControl` (receives the residuals).
    """

    def __init__(self, stats, control):
        self.stats = stats
        self.control = control
        # The prediction made at the last FULL phase's end: its per-step
        # weight change and the phase's averaged weights (tensors), the
        # averages' lag, the predicted loss and the confidence.
        self.pending = None
        # Whether the current FULL phase continues the one `pending` was
        # made at.
        self.contiguous = False

    def interrupt(self):
        """The weights changed outside a FULL phase: the next FULL phase
        does not continue the last one."""
        self.pending = None
        self.contiguous = False

    def to_score(self, trajectory, phase_steps):
        """The pending prediction as `WeightTrajectory.finish_phase` scores
        it: `(per_step, mean, distance)`, or `None` if there is none or the
        phase does not continue the one it was made at.

        Args:
            trajectory: the `WeightTrajectory` of the phase ending now.
            phase_steps: the phase's fitting steps.
        """
        pending = self.pending
        if pending is None or not self.contiguous:
            return None
        new_lag = (trajectory.count - 1) / 2.0
        distance = phase_steps + pending["lag"] - new_lag
        if distance <= 0:
            return None
        return pending["per_step"], pending["mean"], distance

    def score_and_predict(self, trajectory, predictor, state, phase_losses,
                          confidence, length):
        """`score`, then `predict` (see both)."""
        self.score(trajectory, predictor, phase_losses)
        self.predict(trajectory, predictor, state, confidence, length)

    def score(self, trajectory, predictor, phase_losses):
        """Scores the pending prediction against the FULL phase that just
        ended (scored inside `finish_phase`, see `to_score`); the next
        FULL phase continues this one unless `interrupt` says otherwise.

        Args:
            trajectory: the `WeightTrajectory` after `finish_phase`.
            predictor: the predictor (taught by the scores).
            phase_losses: `(step, loss)` of the phase's fitting steps.
        """
        pending, self.pending = self.pending, None
        cos, error = trajectory.shadow_agreement
        if pending is not None and cos is not None:
            actual = tail_mean([loss for _, loss in phase_losses])
            success = error < 1.0
            self.stats.shadow_check(
                cos, error, pending["loss"], actual, pending["confidence"],
                success,
            )
            predictor.record_shadow(pending["confidence"], success, error)
            self.control.residual(error)
        self.contiguous = True

    def predict(self, trajectory, predictor, state, confidence, length):
        """Makes the prediction the next FULL phase will score. Only worth
        making when that phase continues this one: the phase cycle skips it
        when a jump or a quiet stretch follows (`interrupt` would drop it at
        once), which changes nothing else (a prediction changes no weight
        and no predictor state that is read before it is scored).

        Args:
            trajectory: the `WeightTrajectory` after `finish_phase`.
            predictor: the predictor.
            state: the `TrainingState`.
            confidence: the predictor's confidence now.
            length: the steps the next prediction covers (a FULL phase).
        """
        if not self.contiguous or not predictor.ready():
            return
        predictor.begin_shadow()
        outcome = predictor.predict_phase_outcome(state, length)
        per_step = list(outcome.per_step_delta)
        if len(per_step) == len(trajectory.drift) and all(
            a is b for a, b in zip(per_step, trajectory.drift)
        ):
            finite = trajectory.drift_finite  # checked inside finish_phase
        else:
            finite = all_finite(per_step)
        if not finite:
            return
        self.pending = {
            "per_step": per_step,
            "mean": list(trajectory.second_mean),
            "lag": trajectory.lag,
            "loss": outcome.predicted_loss,
            "confidence": confidence,
        }

    # ------------------------------------------------------------ state
    def get_state(self):
        """JSON-safe state (the tensors are in `get_arrays`)."""
        pending = self.pending
        return {
            "contiguous": self.contiguous,
            "pending": None if pending is None else {
                k: v for k, v in pending.items()
                if k not in ("per_step", "mean")
            },
        }

    def get_arrays(self):
        pending = self.pending
        return {
            "shadow_per_step": to_numpy(pending and pending["per_step"]),
            "shadow_mean": to_numpy(pending and pending["mean"]),
        }

    def set_state(self, state, arrays):
        """Restores `get_state` and `get_arrays` output."""
        self.contiguous = bool(state["contiguous"])
        pending = state["pending"]
        self.pending = None if pending is None else dict(
            pending,
            per_step=to_tensors(arrays["shadow_per_step"]),
            mean=to_tensors(arrays["shadow_mean"]),
        )
