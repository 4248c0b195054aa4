"""`NesterovPredictor`: outer Nesterov momentum over FULL-phase
displacements (`type='nesterov'`).

Each FULL phase's displacement `s` (its averaged drift per step, per unit of
learning rate) feeds an outer momentum buffer `b = mu * b + s`. A jump starts
from the current weights and adds `eta * mu * b` times the learning-rate time
of the steps it replaces: for `mu = 0.5`, `eta = 1` and a constant rate, a
jump over `H` steps moves `H` steps along the momentum-averaged velocity;
a larger `mu` moves further (the outer acceleration of Lookahead-style
methods). The forward check only guards.

Phases measured while the learning rate still rises (a warmup) feed no
momentum: the buffer starts with the first phase after it. With
`predictor.shrinkage='tensor'` (the default) each tensor's jump is scaled
by the cosine, clipped to [0, 1], between the last phase's drift and the
buffer before it: a tensor whose drift is mostly noise barely moves.
"""

import numpy as np

from keras_hybrid.dynamics import long_window
from keras_hybrid.dynamics import schedule as lr_schedule


class NesterovPredictor(long_window.LongWindowPredictor):
    """Outer Nesterov momentum over whole-phase displacements.

    Args:
        config: the `HybridConfig` (`predictor.momentum` is `mu`,
            `predictor.outer_learning_rate` is `eta`).
        trajectory: the `WeightTrajectory` it reads.
        optimizer: the model's optimizer (read only).
    """

    def __init__(self, config, trajectory, optimizer=None):
        super().__init__(config, trajectory, optimizer)
        self.momentum_buffer = None
        self.shrinkage = None

    def _has_velocity(self):
        return self.momentum_buffer is not None

    def _observe(self, n, end, rates):
        del n, end
        if lr_schedule.rising(rates):
            # Drifts measured while the rate still warms up do not predict
            # the ones after it: start the buffer afresh once it stops.
            self._restart(None)
            return
        mu = float(self.config.predictor.momentum)
        # Per-step drift per unit of learning rate.
        s = long_window.mix(self.trajectory.drift, self.trajectory.drift,
                            1.0 / float(rates.mean()), 0.0)
        if self.momentum_buffer is None:
            self._restart(s)
            return
        per_tensor, self.agreement = long_window.tensor_cosines(
            s, self.momentum_buffer
        )
        self.shrinkage = np.clip(per_tensor, 0.0, 1.0)
        self.momentum_buffer = long_window.mix(self.momentum_buffer, s,
                                               mu, 1.0)

    def _restart(self, buffer):
        """Starts the momentum over from `buffer` (`None`: no velocity),
        with no agreement measured yet."""
        self.momentum_buffer = buffer
        self.agreement = None
        self.shrinkage = None

    def _jump_parts(self):
        p = self.config.predictor
        base = self.trajectory.snapshots.take()
        size = len(base)
        coefficient = float(p.outer_learning_rate) * float(p.momentum)
        coefficients = np.full((size,), coefficient)
        if p.shrinkage == "tensor" and self.shrinkage is not None:
            coefficients = coefficients * self.shrinkage
        return base, self.momentum_buffer, coefficients

    def note_interruption(self):
        pass

    def _extra_state(self):
        return {"shrinkage": None if self.shrinkage is None
                else [float(c) for c in self.shrinkage]}

    def _set_extra_state(self, state):
        shrinkage = state.get("shrinkage")
        self.shrinkage = None if shrinkage is None else np.asarray(
            shrinkage, "float64")

    def _array_groups(self):
        return [] if self.momentum_buffer is None else [self.momentum_buffer]

    def _set_array_groups(self, groups):
        self.momentum_buffer = groups[0] if groups else None



