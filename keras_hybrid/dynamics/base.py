"""The interface every dynamics model implements."""

class _LazyField:
    """A field that may be set to a callable with no argument: it is called
    (once) when the field is first read, and its result, as a list, kept."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = getattr(instance, self.slot)
        if callable(value):
            value = list(value())
            setattr(instance, self.slot, value)
        return value

    def __set__(self, instance, value):
        setattr(instance, self.slot, value)


class PhaseOutcome:
    """What a predictor expects of a PREDICT phase.

    Attributes:
        targets: callable `scale -> list of weight tensors`: the weights after
            `scale * phase_length` steps.
        per_step_delta: list of tensors: the weight change of one step.
        start: list of tensors: the (denoised) weights to start from.
        predicted_loss: expected training loss at the end of the phase.
        loss_bounds: `(low, high)` for `predicted_loss`.
        judge_from_start: the forward check compares a jump with the loss
            at `start` (a denoised point) as well as with the current
            weights, so that denoising alone never counts as progress.
        required_gain: the relative decrease of the checked loss (a
            fraction of the current weights' loss) a jump must deliver to
            be accepted; 0 accepts any decrease.
        apply: optional callable `scale -> device bool`: puts
            `targets(scale)` in the variables where they are now, if every
            entry is finite, and says whether it did, without copying the
            weights (an unchecked jump from the current weights); `None`:
            the jump check assigns `targets(scale)`.

    `per_step_delta` and `start` may be given as callables with no argument
    that return them: each is then called when first read (a shadow
    prediction, scored by its per-step change only, never computes its
    start; an unchecked jump reads neither).
    """

    per_step_delta = _LazyField()
    start = _LazyField()

    _FIELDS = ("targets", "per_step_delta", "start", "predicted_loss",
               "loss_bounds", "judge_from_start", "required_gain", "apply")

    def __init__(self, targets, per_step_delta, start, predicted_loss,
                 loss_bounds, judge_from_start=False, required_gain=0.0,
                 apply=None):
        self.targets = targets
        self.per_step_delta = per_step_delta
        self.start = start
        self.predicted_loss = predicted_loss
        self.loss_bounds = loss_bounds
        self.judge_from_start = judge_from_start
        self.required_gain = required_gain
        self.apply = apply

    def replace(self, **changes):
        """A copy with `changes` (field name -> value)."""
        unknown = sorted(set(changes) - set(self._FIELDS))
        if unknown:
            raise TypeError(
                f"Unknown PhaseOutcome fields: {unknown}. Received: "
                f"changes={sorted(changes)}"
            )
        values = {}
        for name in self._FIELDS:
            field = getattr(type(self), name, None)
            # A lazy field is copied as it is: still a callable if unread.
            values[name] = (getattr(self, field.slot)
                            if isinstance(field, _LazyField)
                            else getattr(self, name))
        values.update(changes)
        return PhaseOutcome(**values)


class Predictor:
    """Base class of the dynamics models.

    Attributes:
        uses_start_features: whether `update_from_observation` reads its
            `before` argument (the `TrainingState` features at the phase
            start, about 0.25 ms of host work per FULL phase on a small
            model); `False` (no built-in predictor does) passes `None`.
    """

    uses_start_features = False

    def ready(self):
        """Whether a prediction can be made at all."""
        raise NotImplementedError

    def predict_phase_outcome(self, state, phase_length):
        """Returns a `PhaseOutcome` for a PREDICT phase of `phase_length`."""
        raise NotImplementedError

    def update_from_observation(self, before, after, loss_trajectory):
        """Learns from a FULL phase: the features at its start (`None`
        unless `uses_start_features`), the state at its end and its
        losses."""
        raise NotImplementedError

    def prediction_confidence(self, state):
        """Probability-like confidence in [0, 1] that a prediction holds."""
        raise NotImplementedError

    def record_outcome(self, accepted, predicted_loss=None, actual_loss=None):
        """Learns from how a PREDICT phase went."""
        raise NotImplementedError

    def note_interruption(self):
        """The weights are about to change outside a FULL phase (a PREDICT
        phase or a rollback): the next FULL phase does not continue the last
        one."""

    def begin_shadow(self):
        """The runner is about to check the current prediction against the
        next FULL phase (see `record_shadow`)."""

    def record_shadow(self, confidence, success, residual=None):
        """Learns from a prediction checked against the FULL phase that
        followed it (no weights were changed by it).

        Args:
            confidence: the confidence the predictor gave.
            success: whether the predicted weight change moved the weights
                closer to where the FULL phase took them.
            residual: relative error of the predicted weight change.
        """

    def get_state(self):
        """The predictor's learned state as JSON-safe data."""
        raise NotImplementedError

    def set_state(self, state):
        """Restores `get_state()` output."""
        raise NotImplementedError

    def get_arrays(self):
        """Large NumPy arrays of the state (stored in HDF5, not JSON)."""
        return []

    def set_arrays(self, arrays):
        """Restores `get_arrays()` output (after `set_state`)."""
        del arrays

    def memory_mb(self):
        """Memory the predictor holds."""
        return 0.0
