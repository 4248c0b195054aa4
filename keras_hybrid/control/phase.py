"""`PhaseControl`: PREDICT lengths, the confidence threshold and the
correction interval, each adapted online from how predictions went."""

import math

import numpy as np

from keras_hybrid.control.bandit import LinUCB
from keras_hybrid.control.bandit import UCB1
from keras_hybrid.control.bandit import auto_tune_confidence
from keras_hybrid.control.bandit import phase_reward
from keras_hybrid.control.interval import AdaptiveInterval

NUM_ARMS = 4
REJECTION_PENALTY = 0.1
HISTORY = 64


class PhaseControl:
    """Online choices of the phase cycle.

    - `length(controller, confidence, context)`: the PREDICT length, from the
      controller's confidence rule or from a UCB1 / LinUCB bandit over
      `NUM_ARMS` lengths in `[min_predict_steps, max_predict_steps]`.
    - `threshold`: the confidence threshold; re-tuned by
      `auto_tune_confidence` when `config.target_quality` is set.
    - `correction_interval`: `config.correction_interval`, or with
      `adaptive_correction` an `AdaptiveInterval` driven by the predictor's
      residuals on real FULL phases.

    Args:
        config: the `HybridConfig`.
    """

    CONTEXT_DIM = 3

    def __init__(self, config):
        self.config = config
        lo, hi = config.min_predict_steps, config.max_predict_steps
        self.arms = sorted({int(round(v))
                            for v in np.linspace(lo, hi, NUM_ARMS)})
        self.bandit = None
        if config.horizon_policy == "ucb1":
            self.bandit = UCB1(self.arms)
        elif config.horizon_policy == "linucb":
            self.bandit = LinUCB(self.arms, self.CONTEXT_DIM)
        self.threshold = float(config.confidence_threshold)
        self.history = []
        self.pending = None
        self._confidence = 0.0
        self.interval = None
        base = config.correction_interval
        if base and config.adaptive_correction:
            self.interval = AdaptiveInterval(
                initial=base, minimum=max(2, base // 4), maximum=4 * base,
            )

    # ------------------------------------------------------------ lengths
    def context(self, confidence, loss_slope):
        """The bandit's context: bias, confidence and the loss trend."""
        return np.asarray(
            [1.0, float(confidence), math.tanh(float(loss_slope))],
            np.float64,
        )

    def length(self, controller, confidence, context):
        """The length of the PREDICT phase about to start."""
        if self.bandit is None:
            length = controller.horizon(confidence)
        else:
            arm = self.bandit.select(context)
            length = max(
                self.config.min_predict_steps,
                int(round(arm * controller.horizon_scale)),
            )
            self.pending = (
                arm, None if context is None else [float(v) for v in context]
            )
        self._confidence = float(confidence)
        return length

    def outcome(self, accepted, length, loss_ratio=None):
        """Rewards the last choice and re-tunes the threshold.

        Args:
            accepted: whether the prediction was kept.
            length: the phase's length in steps.
            loss_ratio: training loss after the phase over the predicted
                loss (`None` if unknown).
        """
        c = self.config
        ratio = 1.0 if loss_ratio is None or not math.isfinite(
            loss_ratio) else float(loss_ratio)
        if self.pending is not None:
            arm, context = self.pending
            self.pending = None
            if accepted:
                saved = length / (length + c.full_steps + c.correct_steps)
                reward = phase_reward(saved, ratio - 1.0)
            else:
                reward = -REJECTION_PENALTY
            self.bandit.update(
                arm, reward, None if context is None else np.asarray(context)
            )
        self.history.append((self._confidence, bool(accepted), ratio))
        self.history = self.history[-HISTORY:]
        if c.target_quality is not None:
            self.threshold = auto_tune_confidence(
                self.history, c.target_quality, min_count=3,
                default=c.confidence_threshold,
            )

    # ------------------------------------------------------- corrections
    def correction_interval(self):
        if self.interval is None:
            return self.config.correction_interval
        return self.interval.value

    def residual(self, relative_error):
        """Feeds a residual of the predictor (relative error of a predicted
        weight change against a real FULL phase)."""
        if self.interval is not None and relative_error is not None and (
            math.isfinite(relative_error)
        ):
            self.interval.update(float(relative_error))

    # -------------------------------------------------------------- state
    def get_state(self):
        return {
            "bandit": None if self.bandit is None else self.bandit.get_state(),
            "threshold": self.threshold,
            "history": [list(h) for h in self.history],
            "pending": None if self.pending is None else list(self.pending),
            "interval": None if self.interval is None
            else self.interval.get_state(),
            "confidence": self._confidence,
        }

    def set_state(self, state):
        if self.bandit is not None and state["bandit"] is not None:
            self.bandit.set_state(state["bandit"])
        self.threshold = float(state["threshold"])
        self.history = [tuple(h) for h in state["history"]]
        self.pending = None if state["pending"] is None else tuple(
            state["pending"]
        )
        if self.interval is not None and state["interval"] is not None:
            self.interval.set_state(state["interval"])
        self._confidence = float(state["confidence"])
