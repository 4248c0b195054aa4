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
from keras import ops

from keras_hybrid.backends import compile_function
from keras_hybrid.dynamics import long_window
from keras_hybrid.dynamics import schedule as lr_schedule
from keras_hybrid.trajectory import scalar_tensor


def _observe_impl(drift, buffer, per_rate, mu):
    """The phase's displacement per unit of learning rate `s`, the new
    buffer `mu * buffer + s` and the per-tensor dot products of `s` and the
    old buffer (`long_window.tensor_cosines`' parts), in one dispatch. The
    expressions are `long_window.mix`'s, so the values are the same."""
    zero = ops.zeros((), dtype="float32")
    one = ops.ones((), dtype="float32")
    s = long_window._mix_impl(drift, drift, per_rate, zero)
    new = long_window._mix_impl(buffer, s, mu, one)
    return s, new, long_window._dots_impl(s, buffer)


_observe_compiled = compile_function(_observe_impl)


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
        per_rate = 1.0 / float(rates.mean())
        drift = self.trajectory.drift
        if self.momentum_buffer is None:
            # Per-step drift per unit of learning rate.
            self._restart(long_window.mix(drift, drift, per_rate, 0.0))
            return
        # The same figures as `mix` and `tensor_cosines`, in one dispatch
        # and one transfer.
        s, buffer, parts = _observe_compiled(
            list(drift), list(self.momentum_buffer), scalar_tensor(per_rate),
            scalar_tensor(mu),
        )
        per_tensor, self.agreement = long_window.cosines_from_parts(
            ops.convert_to_numpy(parts))
        self.shrinkage = np.clip(per_tensor, 0.0, 1.0)
        self.momentum_buffer = list(buffer)

    def _restart(self, buffer):
        """Starts the momentum over from `buffer` (`None`: no velocity),
        with no agreement measured yet."""
        self.momentum_buffer = buffer
        self.agreement = None
        self.shrinkage = None

    def _jump_parts(self):
        p = self.config.predictor
        size = len(self.trajectory.variables)
        coefficient = float(p.outer_learning_rate) * float(p.momentum)
        coefficients = np.full((size,), coefficient)
        if p.shrinkage == "tensor" and self.shrinkage is not None:
            coefficients = coefficients * self.shrinkage
        # From the current weights.
        return None, self.momentum_buffer, coefficients

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



