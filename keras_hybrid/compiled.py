"""`CompiledPhases`: a model's compiled phase functions and the variables
they work on, kept with the model between `fit()` calls (traced once, not
per call) while its plain train function and variables stay the same.
"""

import keras

from keras_hybrid.trajectory import VariableSnapshots
from keras_hybrid.trajectory import WeightTrajectory


class CompiledPhases:
    """What the hybrid steps of one model need on the device.

    A plain object on purpose: Keras does not track what it holds as the
    model's own variables.

    Args:
        model: the compiled, built model.
        backend: the `keras_hybrid.backends` module of the backend.

    Attributes:
        variables: the trainable variables (when built).
        trajectory: their `WeightTrajectory` (the FULL phases' sums).
        deltas: one variable per trainable variable: the per-step change
            a per-step PREDICT applies.
        predict_start: `VariableSnapshots` of what a rejected prediction
            restores (the weights and the non-trainable state, e.g. moving
            statistics).
        functions: the compiled functions of each set of frozen weights,
            keyed by `model._hybrid_live` (`None`: nothing frozen).
        good_vars: the rollback snapshot (`Recovery.snapshots`), reused by
            the next `fit()`.
    """

    def __init__(self, model, backend, key):
        self.key = key
        self.variables = list(model.trainable_variables)
        with backend.variable_scope(model):
            self.trajectory = WeightTrajectory(self.variables)
            self.predict_start = VariableSnapshots(
                self.variables + list(model.non_trainable_variables)
            )
            self.deltas = [
                keras.Variable(
                    keras.ops.zeros(v.shape, dtype=v.dtype),
                    trainable=False,
                    name=f"hybrid_delta_{i}",
                )
                for i, v in enumerate(self.variables)
            ]
        self.functions = {None: backend.make_phase_functions(
            model, self.trajectory.accumulators, self.deltas
        )}
        self.good_vars = None

    @classmethod
    def of(cls, model, backend):
        """The model's compiled phases: those kept on the model
        (`model._hybrid_compiled`, their trajectory reset) if its plain
        train function, optimizer and variables are the same, else new
        ones, kept there."""
        key = (
            id(getattr(model, "_hybrid_plain_train", None)),
            id(model.optimizer),
            tuple(id(v) for v in model.trainable_variables),
            tuple(id(v) for v in model.non_trainable_variables),
        )
        cached = getattr(model, "_hybrid_compiled", None)
        if cached is not None and cached.key == key:
            cached.variables = list(model.trainable_variables)
            cached.trajectory.reset()
            return cached
        model._hybrid_compiled = cls(model, backend, key)
        return model._hybrid_compiled

    def live_functions(self, model, backend):
        """The compiled functions of the weights trainable now
        (`model._hybrid_live`, set by a freeze): each set of frozen weights
        has its own, traced once and kept."""
        live = getattr(model, "_hybrid_live", None)
        if live not in self.functions:
            self.functions[live] = backend.make_phase_functions(
                model, self.trajectory.accumulators, self.deltas
            )
        return self.functions[live]
