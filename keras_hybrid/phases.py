"""The phase state machine: WARMUP -> FULL -> PREDICT -> CORRECT -> FULL."""

import dataclasses
import enum


class Phase(enum.IntEnum):
    """Training phases. The integer value is what the logs show."""

    WARMUP = 0
    FULL = 1
    PREDICT = 2
    CORRECT = 3


LEGAL_TRANSITIONS = {
    Phase.WARMUP: (Phase.FULL,),
    Phase.FULL: (Phase.FULL, Phase.PREDICT),
    Phase.PREDICT: (Phase.CORRECT, Phase.FULL),
    Phase.CORRECT: (Phase.FULL,),
}


class IllegalTransitionError(RuntimeError):
    """Raised when the controller is asked for a transition that the phase
    cycle does not allow."""


@dataclasses.dataclass
class PhaseRecord:
    """One phase as it happened (for the report and the benchmark plots)."""

    phase: str
    start_step: int
    length: int = 0
    planned_length: int = 0
    outcome: str = None
    confidence: float = None


class PhaseController:
    """Decides which phase runs next and for how long.

    Only the legal transitions are possible (`LEGAL_TRANSITIONS`); any other
    request raises `IllegalTransitionError`. A PREDICT phase starts only when
    the confidence is at or above `confidence_threshold`. Its length is

        min + (max - min) * confidence**2 * horizon_decay**k

    where `k` counts the PREDICT phases in a row since the last failure,
    bounded by `[min_predict_steps, max_predict_steps]`.

    Args:
        config: a `HybridConfig`.
    """

    def __init__(self, config):
        self.config = config
        self.reset()

    def reset(self):
        """Returns to the start of the cycle."""
        self.phase = Phase.WARMUP
        self.phase_step = 0
        self.phase_length = self.config.warmup_steps
        self.step = 0
        self.consecutive_predicts = 0
        self.consecutive_failures = 0
        self.cooldown = 0
        self.forced_full_steps = 0
        self.horizon_scale = 1.0
        self.history = [
            PhaseRecord("WARMUP", 0, planned_length=self.phase_length)
        ]
        if self.phase_length == 0:
            self._enter(Phase.FULL, self.config.full_steps)

    # ------------------------------------------------------------ queries
    @property
    def phase_done(self):
        return self.phase_step >= self.phase_length

    def horizon(self, confidence):
        """The PREDICT length for a given confidence."""
        c = self.config
        span = c.max_predict_steps - c.min_predict_steps
        scale = (confidence**2 * c.horizon_decay**self.consecutive_predicts
                 * self.horizon_scale)
        length = c.min_predict_steps + span * scale
        return int(min(max(round(length), c.min_predict_steps),
                       c.max_predict_steps))

    def can_predict(self, confidence, threshold=None):
        """Whether a PREDICT phase may start now (at `threshold`, by default
        `config.confidence_threshold`)."""
        if threshold is None:
            threshold = self.config.confidence_threshold
        return (
            self.forced_full_steps <= 0
            and self.cooldown <= 0
            and confidence >= threshold
        )

    # ------------------------------------------------------------ updates
    def advance(self, steps=1):
        """Counts `steps` steps done in the current phase."""
        self.phase_step += steps
        self.step += steps
        self.history[-1].length += steps
        if self.forced_full_steps > 0 and self.phase != Phase.PREDICT:
            self.forced_full_steps = max(0, self.forced_full_steps - steps)

    def transition(self, to, length=None, outcome=None, confidence=None):
        """Ends the current phase and starts `to`.

        Args:
            to: the next `Phase`.
            length: its planned length in steps (defaults per phase).
            outcome: a short word recorded for the phase that ends.
            confidence: the confidence the new phase starts with.
        """
        to = Phase(to)
        if to not in LEGAL_TRANSITIONS[self.phase]:
            raise IllegalTransitionError(
                f"Illegal phase transition {self.phase.name} -> {to.name}. "
                f"Allowed from {self.phase.name}: "
                f"{[p.name for p in LEGAL_TRANSITIONS[self.phase]]}"
            )
        if outcome is not None:
            self.history[-1].outcome = outcome
        if length is None:
            length = {
                Phase.FULL: self.config.full_steps,
                Phase.CORRECT: self.config.correct_steps,
            }.get(to)
            if length is None:
                raise ValueError(
                    "A PREDICT phase needs an explicit `length`. "
                    f"Received: length={length}"
                )
        if self.phase == Phase.FULL and to == Phase.FULL:
            self.cooldown = max(0, self.cooldown - 1)
        self._enter(to, length, confidence)

    def _enter(self, phase, length, confidence=None):
        self.phase = phase
        self.phase_step = 0
        self.phase_length = int(length)
        self.history.append(
            PhaseRecord(
                phase.name, self.step, planned_length=int(length),
                confidence=confidence,
            )
        )

    def record_prediction(self, success):
        """Records how a PREDICT phase went, for the horizon and cooldown."""
        if success:
            self.horizon_scale = min(1.0, self.horizon_scale * 1.25)
            self.consecutive_predicts += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_predicts = 0
            self.consecutive_failures += 1
            if (
                self.consecutive_failures
                >= self.config.divergence.max_consecutive_failures
            ):
                self.cooldown = self.config.divergence.cooldown_phases
                self.consecutive_failures = 0

    def force_full(self, steps):
        """Forbids PREDICT for the next `steps` steps."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(
                f"`steps` must be a non-negative integer. Received: steps={steps!r}"
            )
        self.forced_full_steps = max(self.forced_full_steps, steps)
