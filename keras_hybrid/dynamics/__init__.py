"""Dynamics models: predict what a PREDICT phase would have done."""

from keras_hybrid.config import PREDICTOR_TYPES as AVAILABLE
from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.base import Predictor
from keras_hybrid.dynamics.drift import DriftPredictor
from keras_hybrid.dynamics.holt import HoltPredictor
from keras_hybrid.dynamics.nesterov import NesterovPredictor


def get(config, trajectory, optimizer=None):
    """Builds the predictor named by `config.predictor.type`.

    Args:
        config: the `HybridConfig`.
        trajectory: the `WeightTrajectory` the predictor reads.
        optimizer: the model's optimizer; the long-window estimators
            (`nesterov`, `holt`) read its step counter and learning-rate
            schedule.
    """
    kind = config.predictor.type
    if kind == "drift":
        return DriftPredictor(config, trajectory)
    if kind == "nesterov":
        return NesterovPredictor(config, trajectory, optimizer)
    if kind == "holt":
        return HoltPredictor(config, trajectory, optimizer)
    if kind in AVAILABLE:
        from keras_hybrid.dynamics.learned import LearnedPredictor

        return LearnedPredictor(config, trajectory, kind)
    raise ValueError(
        f"Unknown predictor type. Expected one of {AVAILABLE}. "
        f"Received: predictor.type={kind!r}"
    )
