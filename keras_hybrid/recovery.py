"""Carrying out the divergence monitor's recovery actions (a mixin of
`HybridRunner`): the last good point, rollback, learning-rate change, abort.
"""

import keras

from keras_hybrid import divergence
from keras_hybrid.phases import Phase
from keras_hybrid.trajectory import VariableSnapshots


class RecoveryMixin:
    """Monitor checks and recovery of a `HybridRunner`."""

    def _monitor(self, loss, grad_norm):
        """Checks one backward step's statistics (read from the device with
        the others of its read); queues a recovery action if needed."""
        predicted = self.predicted_loss if self._awaiting_correct_loss else None
        level, signals = self.monitor.check(loss, grad_norm, predicted)
        if level == divergence.DivergenceLevel.NORMAL:
            return
        if level >= divergence.DivergenceLevel.WARNING:
            self._phase_alarm = True
        if self._action is not None and self._action_level >= level:
            return  # one read: the most severe action of its steps
        action = self.monitor.decide(
            level, signals, self.controller.step, self._good_step
        )
        self._action = (signals, action)
        self._action_level = level

    def _save_good_point(self):
        """Snapshots model and optimizer variables: the rollback target."""
        guarded = list(self.model.variables) + list(
            self.model.optimizer.variables
        )
        if self._good_vars is None or [id(v) for v in guarded] != [
            id(v) for v in self._good_vars.variables
        ]:
            self._good_vars = VariableSnapshots(guarded)
        self._good_values = self._good_vars.take()
        self._good_step = self.controller.step

    def _apply_action(self):
        signals, action = self._action
        self._action = None
        c = self.controller
        names = "+".join(s.name for s in signals)
        outcome = type(action).__name__
        if isinstance(action, divergence.ReducePredictRatio):
            c.horizon_scale = max(0.1, c.horizon_scale * action.factor)
        elif isinstance(action, divergence.ForceFullPhase):
            self.force_full(action.steps)
        elif isinstance(action, (divergence.RollbackAndRetry,
                                 divergence.Abort)):
            if c.phase == Phase.PREDICT:
                self._end_predict(success=False, reason=names)
            self.flush_iterations()
            if self._good_values is not None:
                self._good_vars.restore(self._good_values)
                self.interrupt()
            if isinstance(action, divergence.Abort):
                self.stats.event(c.step, names, "Abort: weights and "
                                 f"optimizer restored to step {self._good_step}")
                self.model._detach_runner()
                raise divergence.DivergenceError(action.reason)
            outcome += f": to step {self._good_step}"
            outcome += self._scale_learning_rate(action.learning_rate_factor)
            c.force_full(self.monitor.recovery_full_steps)
            if c.phase == Phase.FULL:
                self._start_full()
        self.stats.event(c.step, names, outcome)
        if c.phase_done:
            self._end_phase()

    def _scale_learning_rate(self, factor):
        optimizer = self.model.optimizer
        if isinstance(
            optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule
        ) or callable(getattr(optimizer, "_learning_rate", None)):
            return ", learning-rate schedule left unchanged"
        new = float(keras.ops.convert_to_numpy(optimizer.learning_rate)) * factor
        optimizer.learning_rate = new
        return f", learning rate -> {new:.3g}"
