"""The weight trajectory of FULL phases: averages, drift and jump targets.

During a FULL phase the compiled step adds the weights after every step to
running sums (one sum per trainable variable, inside the compiled function).
Halfway through, the sums of the first half are turned into its average; at
the end, the second half's. Averaging removes most of the step-to-step noise
of stochastic training (DESIGN section 5: averaged trajectories pass the
forward check far more often than raw extrapolation). The drift is the
per-step displacement between the two averages.

Each phase-boundary operation is compiled into a single dispatch
(`backends.compile_function`), so its cost does not grow with the number of
variables (on TensorFlow once it has run often enough for its trace to pay:
`backends.LazilyCompiled`).
"""

import numpy as np
import keras
from keras import ops

from keras_hybrid.backends import compile_function
from keras_hybrid.backends import compile_update


class VariableSnapshots:
    """Exact copies of a fixed list of variables, taken and restored in one
    compiled call each.

    Args:
        variables: the variables to copy.
    """

    def __init__(self, variables):
        self.variables = list(variables)
        self._take = compile_update(_take_copies, self.variables)
        self._restore = compile_update(_assign_copies, self.variables)
        self._restore_if_finite = compile_update(_assign_if_finite,
                                                 self.variables)
        self._add_if_finite = compile_update(_add_if_finite, self.variables)

    def take(self):
        """Returns copies of the variables' current values."""
        return self._take()

    def restore(self, values):
        """Assigns `values` to the variables (exactly, bit for bit)."""
        self._restore(list(values))

    def restore_if_finite(self, values):
        """Assigns `values` (exactly) if every entry of every one is
        finite, else leaves the variables as they are; returns whether it
        assigned them, as a device scalar (one compiled call)."""
        return self._restore_if_finite(list(values))

    def add_if_finite(self, direction, coefficients):
        """Moves every variable `i` by `coefficients[i] * direction[i]` if
        every entry of the result is finite, else leaves them as they are;
        returns whether it moved them, as a device scalar (one compiled
        call, no copy of the weights).

        Args:
            direction: one tensor per variable.
            coefficients: one number per variable.
        """
        return self._add_if_finite(
            list(direction),
            ops.convert_to_tensor(np.asarray(coefficients, "float32")),
        )


def _take_copies(values):
    return None, [ops.copy(v) for v in values]


def _assign_copies(values, new_values):
    # Assign copies: on JAX a variable takes the array itself, and the next
    # step donates it, which would delete the snapshot.
    del values
    return [ops.copy(v) for v in new_values], None


def _assign_if_finite(values, new_values):
    finite = _finite(new_values)
    # `where` makes new arrays (JAX: nothing the next step donates is kept).
    selected = [ops.where(finite, n, v) for n, v in zip(new_values, values)]
    return selected, finite


def moved_along(base, direction, coefficients):
    """`base[i] + coefficients[i] * direction[i]` for every tensor
    (`coefficients`: a float32 vector)."""
    return [
        ops.add(b, ops.multiply(ops.cast(coefficients[i], d.dtype), d))
        for i, (b, d) in enumerate(zip(base, direction))
    ]


def _add_if_finite(values, direction, coefficients):
    return _assign_if_finite(
        values, moved_along(values, direction, coefficients))


def _cosine_parts(a, b):
    parts = [
        ops.stack([ops.sum(ops.multiply(x, y)), ops.sum(ops.square(x)),
                   ops.sum(ops.square(y))])
        for x, y in zip(a, b)
    ]
    return ops.sum(ops.stack(parts), axis=0)


def _agreement_parts(predicted, new_mean, old_mean, distance):
    actual = [ops.divide(ops.subtract(b, a), distance)
              for a, b in zip(old_mean, new_mean)]
    return _cosine_parts(predicted, actual)


def _finite(values):
    return ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in values]))


_finite_compiled = compile_function(_finite)
_agreement_compiled = compile_function(_agreement_parts)


def _agreement_from_parts(pa, pp, aa):
    if aa <= 0.0 or not np.isfinite(pp):
        return None, None
    cos = float(pa / np.sqrt(pp * aa)) if pp > 0.0 else 0.0
    return cos, float(np.sqrt(max(pp - 2.0 * pa + aa, 0.0) / aa))


def _cosine_from_parts(ab, na, nb):
    if na <= 0.0 or nb <= 0.0:
        return 0.0
    return float(ab / np.sqrt(na * nb))


def delta_agreement(predicted, new_mean, old_mean, distance):
    """How well a predicted per-step change matches the real one.

    The real per-step change is `(new_mean - old_mean) / distance`.

    Returns:
        `(cosine, relative_error)`: their cosine similarity and
        `|predicted - real| / |real|` (`None`, `None` if the real change is
        zero).
    """
    pa, pp, aa = ops.convert_to_numpy(_agreement_compiled(
        list(predicted), list(new_mean), list(old_mean),
        scalar_tensor(distance),
    ))
    return _agreement_from_parts(pa, pp, aa)


def finite_flag(values):
    """Whether every entry of every tensor is finite, as a device scalar
    (no transfer)."""
    return _finite_compiled(list(values))


def all_finite(values):
    """Whether every entry of every tensor is finite (one transfer)."""
    return bool(ops.convert_to_numpy(finite_flag(values)))


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
        self.snapshots = VariableSnapshots(self.variables)
        self._reset = compile_update(_zeros, self.accumulators)
        self._close = compile_update(_means_and_zeros, self.accumulators)
        self._finish = compile_update(_second_mean_and_drift,
                                      self.accumulators)
        self._target = compile_function(_target)
        self.reset()

    def reset(self):
        """Forgets every phase (a new `fit()`); the running sums are reset
        at the next phase start."""
        self.count = 0
        self.first_mean = None
        self.first_count = 0
        self.second_mean = None
        self.second_count = 0
        self.forget_drift()
        self.shadow_agreement = (None, None)
        self._zeroed = False

    # ------------------------------------------------------- API
    @property
    def num_parameters(self):
        return int(sum(np.prod(v.shape) for v in self.variables))

    def memory_mb(self):
        """Memory held: sums, two averages, drift and previous drift."""
        itemsize = np.dtype(self.variables[0].dtype).itemsize
        return 5 * self.num_parameters * itemsize / 2**20

    def start_phase(self):
        """Resets the sums at the start of a FULL phase."""
        if not self._zeroed:
            self._reset()
        self._zeroed = False
        self.count = 0
        self.first_mean = None
        self.first_count = 0

    def forget_drift(self):
        """Forgets the last phase's drift: the next phase is not contiguous
        with it (quiet phases come in between)."""
        self.drift = None
        self.previous_drift = None
        self._consistency = None
        self.drift_finite = False

    def added(self, steps):
        """Counts `steps` weight vectors added by the compiled step."""
        self.count += steps

    def close_half(self):
        """Turns the sums so far into the first half's average."""
        self.first_mean = self._close(scalar_tensor(self.count))
        self.first_count = self.count
        self.count = 0

    def finish_phase(self, shadow=None):
        """Closes the phase: second-half average and per-step drift, in one
        compiled call that also resets the sums and computes the figures
        read at a phase end (drift agreement with the previous phase,
        finiteness, and the score of a shadow prediction), brought to the
        host in one transfer.

        Args:
            shadow: optional `(per_step, old_mean, distance)`: a per-step
                change predicted from `old_mean`, scored against the real
                per-step change `(second_mean - old_mean) / distance`
                (`shadow_agreement`).

        Returns:
            `True` if a drift is available (both halves had steps).
        """
        self.shadow_agreement = (None, None)
        if self.first_mean is None or self.count == 0:
            return False
        distance = (self.first_count + self.count) / 2.0
        self.previous_drift = self.drift
        # One argument structure for every call (one trace): where there is
        # no previous drift or no shadow prediction, the first half's
        # average stands in and the figures computed from it are ignored.
        previous = self.previous_drift
        if previous is None:
            previous = self.first_mean
        if shadow is None:
            shadow_values = (self.first_mean, self.first_mean,
                             scalar_tensor(1.0))
        else:
            per_step, old_mean, shadow_distance = shadow
            shadow_values = (list(per_step), list(old_mean),
                             scalar_tensor(shadow_distance))
        (self.second_mean, self.drift), figures = self._finish(
            scalar_tensor(self.count), self.first_mean,
            scalar_tensor(distance), list(previous), shadow_values,
        )
        self._zeroed = True
        figures = ops.convert_to_numpy(figures)
        self.second_count = self.count
        self.drift_finite = bool(figures[0])
        self._consistency = None
        if self.previous_drift is not None:
            self._consistency = _cosine_from_parts(*figures[1:4])
        if shadow is not None:
            self.shadow_agreement = _agreement_from_parts(*figures[4:7])
        return True

    @property
    def lag(self):
        """Steps between the second-half average and the current weights."""
        return (self.second_count - 1) / 2.0

    def target(self, steps_ahead):
        """Weights `steps_ahead` steps past the current position, along the
        drift, starting from the (denoised) second-half average."""
        return self._target(self.second_mean, self.drift,
                            scalar_tensor(self.lag + steps_ahead))

    def start_point(self):
        """A callable with no argument returning `target(0.0)` as it is
        now (the second-half average and drift of this phase, even if
        the trajectory moves on before it is called)."""
        means, drift = self.second_mean, self.drift
        offset = self.lag

        def start():
            return self._target(means, drift, scalar_tensor(offset))

        return start

    def target_along(self, per_step, offset):
        """`second_mean + offset * per_step`, for any per-step change."""
        return self._target(self.second_mean, list(per_step),
                            scalar_tensor(offset))

    def drift_consistency(self):
        """Cosine between the last two phases' drifts (`None` before two)."""
        return self._consistency


def _zeros(sums):
    return [ops.zeros_like(s) for s in sums], None


def _means_and_zeros(sums, count):
    means = [ops.divide(s, count) for s in sums]
    return [ops.zeros_like(s) for s in sums], means


def _second_mean_and_drift(sums, count, first, distance, previous, shadow):
    second = [ops.divide(s, count) for s in sums]
    drift = [ops.divide(ops.subtract(b, a), distance)
             for a, b in zip(first, second)]
    figures = [ops.reshape(_finite(drift), (1,))]
    figures.append(_cosine_parts(drift, previous))
    per_step, old_mean, shadow_distance = shadow
    figures.append(_agreement_parts(per_step, second, old_mean,
                                    shadow_distance))
    figures = ops.concatenate([ops.cast(f, "float32") for f in figures])
    zeros = [ops.zeros_like(s) for s in sums]
    return zeros, ((second, drift), figures)


def _target(means, drift, offset):
    return [ops.add(m, ops.multiply(d, offset)) for m, d in zip(means, drift)]


def scalar_tensor(value):
    """`value` as a float32 scalar tensor (an argument of the compiled
    phase-boundary functions)."""
    return ops.convert_to_tensor(float(value), dtype="float32")
