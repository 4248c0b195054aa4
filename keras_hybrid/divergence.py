"""Divergence monitor: signals, levels and recovery actions.

The monitor looks at the scalars every step already produces (batch loss,
gradient norm, the predictor's loss forecast) and returns a level with the
signals that raised it. `decide` maps a level to a recovery action; the
runner carries the action out and records the event in the report.
"""

import collections
import dataclasses
import enum
import math
import typing

# FULL phases forced after a divergence warning or a rollback: the first
# gives the predictor a fresh drift, the second checks a shadow prediction
# against it before any PREDICT phase starts again.
RECOVERY_FULL_PHASES = 2


class HybridTrainingError(RuntimeError):
    """Base class of the errors hybrid training raises on purpose."""


class DivergenceError(HybridTrainingError):
    """Training diverged and recovery gave up (an `Abort` action)."""


class DivergenceLevel(enum.IntEnum):
    NORMAL = 0
    CAUTION = 1
    WARNING = 2
    CRITICAL = 3


@dataclasses.dataclass
class Signal:
    """One reason for concern: its name, the value seen and the limit."""

    name: str
    value: float
    threshold: float
    level: DivergenceLevel


# ---------------------------------------------------------------- actions
@dataclasses.dataclass
class Continue:
    """Nothing to do."""


@dataclasses.dataclass
class ReducePredictRatio:
    """Shrink the PREDICT horizon by `factor` (in (0, 1))."""

    # The intervention's kind in the report's events and the messages.
    kind: typing.ClassVar[str] = "shorter_predictions"
    factor: float = 0.5


@dataclasses.dataclass
class ForceFullPhase:
    """End any prediction and run only FULL phases for `steps` steps."""

    kind: typing.ClassVar[str] = "forced_full"
    steps: int


@dataclasses.dataclass
class RollbackAndRetry:
    """Restore weights and optimizer state of `checkpoint_step` and go on
    with the learning rate times `learning_rate_factor`."""

    kind: typing.ClassVar[str] = "rollback"
    checkpoint_step: int
    learning_rate_factor: float = 0.5


@dataclasses.dataclass
class Abort:
    """Stop training with a `DivergenceError` carrying `reason`."""

    kind: typing.ClassVar[str] = "abort"
    reason: str


class DivergenceMonitor:
    """Watches loss and gradient statistics for signs of divergence.

    Levels: non-finite loss or gradient, or a gradient norm above ten times
    the explosion threshold, is CRITICAL. A loss more than `loss_sigma`
    standard deviations above its running mean two checked steps in a row
    (one hard batch is not a divergence: when the data order repeats every
    epoch, as in Keras' `fit()` after `keras.utils.set_random_seed`, the
    same hard batch would warn in every epoch), an exploding or a vanishing
    gradient is a WARNING; `PERSISTENT_WARNINGS` loss or explosion warnings
    in a row become CRITICAL when the loss has doubled or the gradient is
    exploding (minibatch losses late in training are heavy-tailed: single
    or repeated moderate spikes are noise, not divergence). A vanishing
    gradient never becomes critical: rolling back cannot cure it. A wrong
    loss forecast and an oscillating loss are CAUTION.

    After an accepted jump (`note_jump`) the loss rises for a few steps
    before training pulls it down again (as after the outer steps of
    Lookahead or DiLoCo): for the next `JUMP_SETTLE_STEPS` checked steps a
    loss above the `loss_sigma` limit of the statistics from before the
    jump raises no warning, is not held against the loss forecast and
    enters no baseline. A loss still above it after them is judged as any
    other; non-finite values and gradient signals are judged throughout.

    Args:
        config: the `DivergenceConfig`.
        full_steps: FULL phase length (a forced FULL stretch is
            `recovery_full_steps` long).
        max_rollbacks: rollbacks allowed before `Abort`.
    """

    PERSISTENT_WARNINGS = 3
    # Checked steps after an accepted jump whose loss is not judged against
    # the loss statistics from before it (the spike after a jump lasts
    # about three steps on our tasks; a real divergence is caught after
    # them).
    JUMP_SETTLE_STEPS = 10

    def __init__(self, config, full_steps=20, max_rollbacks=3):
        self.config = config
        self.full_steps = full_steps
        self.max_rollbacks = max_rollbacks
        self.reset()

    @property
    def recovery_full_steps(self):
        """The FULL steps forced after a divergence warning or a rollback
        (`RECOVERY_FULL_PHASES` FULL phases)."""
        return RECOVERY_FULL_PHASES * self.full_steps

    def reset(self):
        self.loss_mean = None
        self.loss_var = 0.0
        self.grad_baseline = None
        self.losses = collections.deque(
            maxlen=self.config.oscillation_window + 1
        )
        self.rollbacks = 0
        self.steps_seen = 0
        self.warnings_in_a_row = 0
        self.settle_steps = 0
        # Whether the last checked loss was above the `loss_sigma` limit.
        self.above_limit = False

    def note_jump(self):
        """An accepted jump has just moved the weights: the loss spike of
        the next `JUMP_SETTLE_STEPS` checked steps is expected, not a
        divergence."""
        self.settle_steps = self.JUMP_SETTLE_STEPS

    # ---------------------------------------------------------- checks
    def check(self, loss, grad_norm=None, predicted_loss=None):
        """Checks one step's statistics.

        Args:
            loss: the batch loss.
            grad_norm: the global gradient norm (`None` on steps without a
                backward pass).
            predicted_loss: the predictor's forecast for this loss, if any.

        Returns:
            `(level, signals)`.
        """
        c = self.config
        signals = []
        self.steps_seen += 1
        if loss is None or not math.isfinite(loss):
            signals.append(Signal("non_finite_loss", _num(loss), 0.0,
                                  DivergenceLevel.CRITICAL))
        if grad_norm is not None and not math.isfinite(grad_norm):
            signals.append(Signal("non_finite_gradient", _num(grad_norm), 0.0,
                                  DivergenceLevel.CRITICAL))
        if signals:
            return DivergenceLevel.CRITICAL, signals

        settling = self.settle_steps > 0
        if settling:
            self.settle_steps -= 1
        spike = above = False
        if self.loss_mean is not None and self.steps_seen > 10:
            sigma = max(math.sqrt(self.loss_var), 1e-3 * abs(self.loss_mean))
            limit = self.loss_mean + c.loss_sigma * sigma
            if loss > limit and settling:
                spike = True  # the expected rise after a jump
            elif loss > limit and self.above_limit:
                signals.append(Signal("loss_sigma", loss, limit,
                                      DivergenceLevel.WARNING))
            above = loss > limit
        self.above_limit = above
        if grad_norm is not None and self.grad_baseline:
            high = c.grad_explosion_factor * self.grad_baseline
            low = c.grad_vanishing_factor * self.grad_baseline
            if grad_norm > high:
                # One large gradient is common late in training (a hard
                # batch); ten times the explosion threshold is not.
                level = (DivergenceLevel.CRITICAL
                         if grad_norm > 10 * high else DivergenceLevel.WARNING)
                signals.append(Signal("gradient_explosion", grad_norm, high,
                                      level))
            elif grad_norm < low:
                signals.append(Signal("gradient_vanishing", grad_norm, low,
                                      DivergenceLevel.WARNING))
        if predicted_loss is not None and predicted_loss > 0 and not spike:
            error = abs(loss - predicted_loss) / predicted_loss
            if error > c.prediction_error:
                signals.append(Signal("prediction_error", error,
                                      c.prediction_error,
                                      DivergenceLevel.CAUTION))
        self.losses.append(loss)
        changes = self._sign_changes()
        if changes > c.oscillation_sign_changes:
            signals.append(Signal("oscillation", changes,
                                  c.oscillation_sign_changes,
                                  DivergenceLevel.CAUTION))
        level = max((s.level for s in signals),
                    default=DivergenceLevel.NORMAL)
        escalating = {"loss_sigma", "gradient_explosion"}
        if level == DivergenceLevel.WARNING and any(
            s.name in escalating for s in signals
        ):
            self.warnings_in_a_row += 1
            runaway = any(s.name == "gradient_explosion" for s in signals) or (
                self.loss_mean is not None and loss > 2.0 * abs(self.loss_mean)
            )
            if self.warnings_in_a_row >= self.PERSISTENT_WARNINGS and runaway:
                level = DivergenceLevel.CRITICAL
                signals.append(Signal("persistent_warning",
                                      self.warnings_in_a_row,
                                      self.PERSISTENT_WARNINGS, level))
        else:
            self.warnings_in_a_row = 0
        if level <= DivergenceLevel.WARNING and not spike:
            # Baselines follow warnings too, so that a shift of the loss
            # level (late-training noise, a new phase) is not mistaken for
            # divergence forever; critical values never enter them, nor
            # does an exploding gradient enter the gradient baseline, nor
            # the spike after a jump either baseline.
            exploding = any(s.name == "gradient_explosion" for s in signals)
            self._update_baselines(loss, None if exploding else grad_norm)
        return level, signals

    def healthy(self):
        """Called at the end of a FULL phase without alarms: a rollback
        budget spent long ago is given back one at a time."""
        self.rollbacks = max(0, self.rollbacks - 1)

    def _sign_changes(self):
        """Sign changes of the loss differences in the window, counting only
        swings larger than twice the loss's running standard deviation (the
        step-to-step noise of minibatch losses alternates all the time)."""
        values = list(self.losses)
        floor = 2.0 * math.sqrt(self.loss_var) if self.loss_mean else 0.0
        diffs = [b - a for a, b in zip(values, values[1:])
                 if abs(b - a) > floor and b != a]
        return sum(1 for a, b in zip(diffs, diffs[1:]) if (a > 0) != (b > 0))

    def _update_baselines(self, loss, grad_norm, decay=0.95):
        if self.loss_mean is None:
            self.loss_mean = loss
        else:
            diff = loss - self.loss_mean
            self.loss_mean += (1 - decay) * diff
            self.loss_var = decay * (self.loss_var + (1 - decay) * diff**2)
        if grad_norm is not None and grad_norm > 0:
            if self.grad_baseline is None:
                self.grad_baseline = grad_norm
            else:
                self.grad_baseline += (1 - decay) * (
                    grad_norm - self.grad_baseline
                )

    # ---------------------------------------------------------- policy
    def decide(self, level, signals, step, last_good_step):
        """Maps a level to a recovery action.

        CAUTION shrinks the prediction horizon; WARNING forces FULL phases;
        CRITICAL rolls back to the last good point (halving the learning
        rate) up to `max_rollbacks` times, then aborts; before the first
        good point it forces FULL phases (there is nothing to restore).
        """
        if level == DivergenceLevel.NORMAL:
            return Continue()
        if level == DivergenceLevel.CAUTION:
            return ReducePredictRatio(0.5)
        if level == DivergenceLevel.WARNING:
            return ForceFullPhase(self.recovery_full_steps)
        names = ", ".join(
            f"{s.name} (value {s.value:.4g}, limit {s.threshold:.4g})"
            for s in signals
        )
        if last_good_step is None:
            # Nothing to roll back to yet: train on with full steps and
            # leave stopping to the user's callbacks (`TerminateOnNaN`), as
            # Keras does.
            return ForceFullPhase(self.recovery_full_steps)
        if self.rollbacks >= self.max_rollbacks:
            return Abort(
                f"Training diverged at step {step}: {names}. "
                f"{self.rollbacks} rollback(s) with a halved learning rate "
                "did not help. Lower the learning rate, add gradient "
                "clipping (e.g. `clipnorm` on the optimizer), check the "
                "data for bad values, or use the 'conservative' preset."
            )
        self.rollbacks += 1
        return RollbackAndRetry(last_good_step, 0.5)


def _num(value):
    return float("nan") if value is None else float(value)
