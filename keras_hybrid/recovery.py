"""`Recovery`: what the divergence monitor's actions need: the last good
point (model and optimizer variables, restored exactly by a rollback), the
action queued by a read of the statistics, the learning-rate change and the
outcome each action is reported with. The runner carries the actions out.
"""

import keras

from keras_hybrid import divergence
from keras_hybrid.serialization import to_numpy
from keras_hybrid.serialization import to_tensors
from keras_hybrid.trajectory import VariableSnapshots


class Recovery:
    """The rollback target and the queued recovery action.

    Args:
        model: the model being trained (compiled).
        monitor: the `DivergenceMonitor` that decides the actions.

    Attributes:
        good_step: the step of the last good point (`None`: none yet).
        action: `(signals, action)` queued by `check`, or `None`.
        alarm: whether a WARNING or worse was seen since the FULL phase
            began (its end then keeps the rollback point where it is).
    """

    def __init__(self, model, monitor):
        self.model = model
        self.monitor = monitor
        # `VariableSnapshots` of the guarded variables (kept with the
        # model's compiled functions between `fit()` calls) and their
        # values at `good_step`.
        self.snapshots = None
        self.good_values = None
        self.good_step = None
        self.action = None
        self.action_level = None
        self.alarm = False

    def check(self, loss, grad_norm, predicted, step):
        """Checks one backward step's statistics (read from the device with
        the others of its read); queues a recovery action if needed.

        Args:
            loss: the step's loss.
            grad_norm: its gradient norm (`None` if not measured).
            predicted: the loss a prediction forecast for it (or `None`).
            step: the training step now.
        """
        level, signals = self.monitor.check(loss, grad_norm, predicted)
        if level == divergence.DivergenceLevel.NORMAL:
            return
        if level >= divergence.DivergenceLevel.WARNING:
            self.alarm = True
        if self.action is not None and self.action_level >= level:
            return  # one read: the most severe action of its steps
        action = self.monitor.decide(level, signals, step, self.good_step)
        self.action = (signals, action)
        self.action_level = level

    @property
    def calls_for_rollback(self):
        """Whether the queued action rolls back or aborts (the steps after
        the one that called for it are undone)."""
        return self.action is not None and isinstance(
            self.action[1], (divergence.RollbackAndRetry, divergence.Abort)
        )

    def take_action(self):
        """Returns the queued `(signals, action)` and unqueues it."""
        action, self.action = self.action, None
        return action

    def save_good_point(self, step):
        """Snapshots model and optimizer variables: the rollback target."""
        self.good_values = self._guarded().take()
        self.good_step = step

    def _guarded(self):
        """The snapshots of the model's and optimizer's variables (built
        again if the variables changed)."""
        guarded = list(self.model.variables) + list(
            self.model.optimizer.variables
        )
        if self.snapshots is None or [id(v) for v in guarded] != [
            id(v) for v in self.snapshots.variables
        ]:
            self.snapshots = VariableSnapshots(guarded)
        return self.snapshots

    def roll_back(self):
        """Restores the model and optimizer variables of the last good
        point exactly; returns whether there was one."""
        if self.good_values is None:
            return False
        self.snapshots.restore(self.good_values)
        return True

    def abort_outcome(self):
        """How an abort is reported (after `roll_back`)."""
        return ("Abort: weights and "
                f"optimizer restored to step {self.good_step}")

    def rollback_outcome(self, action):
        """Changes the learning rate by `action.learning_rate_factor` and
        returns how the rollback is reported (after `roll_back`)."""
        outcome = type(action).__name__
        outcome += f": to step {self.good_step}"
        outcome += self._scale_learning_rate(action.learning_rate_factor)
        return outcome

    def _scale_learning_rate(self, factor):
        optimizer = self.model.optimizer
        if isinstance(
            optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule
        ) or callable(getattr(optimizer, "_learning_rate", None)):
            return ", learning-rate schedule left unchanged"
        new = float(keras.ops.convert_to_numpy(optimizer.learning_rate)) * factor
        optimizer.learning_rate = new
        return f", learning rate -> {new:.3g}"

    # ------------------------------------------------------------ state
    def get_state(self):
        """JSON-safe state (the good point's values are in `get_arrays`);
        no queued action: a checkpoint settles it first."""
        return {"good_step": self.good_step, "alarm": self.alarm}

    def get_arrays(self):
        return {"good_values": to_numpy(self.good_values)}

    def set_state(self, state):
        self.good_step = state["good_step"]
        self.alarm = bool(state["alarm"])

    def set_arrays(self, arrays):
        """Restores the good point's values (kept as they are if `arrays`
        has none)."""
        if arrays.get("good_values") is None:
            return
        self._guarded()  # for the model's variables now
        self.good_values = to_tensors(arrays["good_values"])
