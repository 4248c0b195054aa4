"""`NesterovPredictor`: outer Nesterov momentum over FULL-phase
displacements (`type='nesterov'`).

Each FULL phase's displacement `s` (its averaged drift per step, per unit of
learning rate) feeds an outer momentum buffer `b = mu * b + s`. A jump starts
from the current weights and adds `eta * mu * b` times the learning-rate time
of the steps it replaces: for `mu = 0.5`, `eta = 1` and a constant rate, a
jump over `H` steps moves `H` steps along the momentum-averaged velocity;
a larger `mu` moves further (the outer acceleration of Lookahead-style
methods). The forward check only guards.
"""

import numpy as np

from keras_hybrid.dynamics import long_window


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

    def _has_velocity(self):
        return self.momentum_buffer is not None

    def _observe(self, n, end, rates):
        del n, end
        mu = float(self.config.predictor.momentum)
        # Per-step drift per unit of learning rate.
        s = long_window.mix(self.trajectory.drift, self.trajectory.drift,
                            1.0 / float(rates.mean()), 0.0)
        if self.momentum_buffer is None:
            self.momentum_buffer = s
            self.agreement = None
            return
        _, self.agreement = long_window.tensor_cosines(
            s, self.momentum_buffer
        )
        self.momentum_buffer = long_window.mix(self.momentum_buffer, s,
                                               mu, 1.0)

    def _jump_parts(self):
        p = self.config.predictor
        base = self.trajectory.snapshots.take()
        size = len(base)
        coefficient = float(p.outer_learning_rate) * float(p.momentum)
        return base, self.momentum_buffer, np.full((size,), coefficient)

    def note_interruption(self):
        pass

    def _array_groups(self):
        return [] if self.momentum_buffer is None else [self.momentum_buffer]

    def _set_array_groups(self, groups):
        self.momentum_buffer = groups[0] if groups else None



