"""The weight trajectory of FULL phases: averages, drift and jump targets.

During a FULL phase the compiled step adds the weights after every step to
running sums (one sum per trainable variable, inside the compiled function).
Halfway through, the sums of the first half are turned into its average; at
the end, the second half's. Averaging removes most of the step-to-step noise
of stochastic training (DESIGN section 5: averaged trajectories pass the
forward check far more often than raw extrapolation). The drift is the
per-step displacement between the two averages.
"""

import numpy as np
import keras
from keras import ops


def snapshot(variables):
    """Returns copies of the variables' current values."""
    return [ops.copy(ops.convert_to_tensor(v)) for v in variables]


def restore(variables, values):
    """Assigns `values` to `variables` (exactly, bit for bit)."""
    for variable, value in zip(variables, values):
        variable.assign(value)


def flat_dot(a, b):
    """Sum over all tensors of `a * b`, as a Python float (one transfer)."""
    parts = [ops.sum(ops.multiply(x, y)) for x, y in zip(a, b)]
    return float(ops.convert_to_numpy(ops.sum(ops.stack(parts))))


def cosine(a, b):
    """Cosine similarity between two lists of tensors (0 if either is 0)."""
    sums = [
        ops.stack([ops.sum(x * y), ops.sum(x * x), ops.sum(y * y)])
        for x, y in zip(a, b)
    ]
    ab, na, nb = ops.convert_to_numpy(ops.sum(ops.stack(sums), axis=0))
    if na <= 0.0 or nb <= 0.0:
        return 0.0
    return float(ab / np.sqrt(na * nb))


def all_finite(values):
    """Whether every entry of every tensor is finite."""
    flags = [ops.all(ops.isfinite(v)) for v in values]
    return bool(ops.convert_to_numpy(ops.all(ops.stack(flags))))


class WeightTrajectory:
    """Running averages of the weights over the halves of a FULL phase.

    Args:
        variables: the model's trainable variables.
    """

    def __init__(self, variables):
        self.variables = list(variables)
        self.accumulators = [
            keras.Variable(
                ops.zeros(v.shape, dtype=v.dtype),
                trainable=False,
                name=f"hybrid_acc_{i}",
            )
            for i, v in enumerate(self.variables)
        ]
        self.count = 0
        self.first_mean = None
        self.first_count = 0
        self.second_mean = None
        self.second_count = 0
        self.drift = None
        self.previous_drift = None

    @property
    def num_parameters(self):
        return int(sum(np.prod(v.shape) for v in self.variables))

    def memory_mb(self):
        """Memory held: sums, two averages, drift and previous drift."""
        itemsize = np.dtype(self.variables[0].dtype).itemsize
        return 5 * self.num_parameters * itemsize / 2**20

    def start_phase(self):
        """Resets the sums at the start of a FULL phase."""
        for acc in self.accumulators:
            acc.assign(ops.zeros_like(acc))
        self.count = 0
        self.first_mean = None
        self.first_count = 0

    def added(self, steps):
        """Counts `steps` weight vectors added by the compiled step."""
        self.count += steps

    def close_half(self):
        """Turns the sums so far into the first half's average."""
        self.first_mean = [ops.divide(acc, self.count) for acc in
                           self.accumulators]
        self.first_count = self.count
        for acc in self.accumulators:
            acc.assign(ops.zeros_like(acc))
        self.count = 0

    def finish_phase(self):
        """Closes the phase: second-half average and per-step drift.

        Returns:
            `True` if a drift is available (both halves had steps).
        """
        if self.first_mean is None or self.count == 0:
            return False
        self.second_mean = [ops.divide(acc, self.count) for acc in
                            self.accumulators]
        self.second_count = self.count
        distance = (self.first_count + self.second_count) / 2.0
        self.previous_drift = self.drift
        self.drift = [
            ops.divide(ops.subtract(b, a), distance)
            for a, b in zip(self.first_mean, self.second_mean)
        ]
        return True

    @property
    def lag(self):
        """Steps between the second-half average and the current weights."""
        return (self.second_count - 1) / 2.0

    def target(self, steps_ahead):
        """Weights `steps_ahead` steps past the current position, along the
        drift, starting from the (denoised) second-half average."""
        offset = self.lag + steps_ahead
        return [
            ops.add(m, ops.multiply(d, offset))
            for m, d in zip(self.second_mean, self.drift)
        ]

    def drift_consistency(self):
        """Cosine between the last two phases' drifts (`None` before two)."""
        if self.previous_drift is None or self.drift is None:
            return None
        return cosine(self.drift, self.previous_drift)
