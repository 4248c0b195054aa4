"""Dynamics models: predict what a PREDICT phase would have done."""

from keras_hybrid.config import PREDICTOR_TYPES as AVAILABLE
from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.base import Predictor
from keras_hybrid.dynamics.drift import DriftPredictor


def get(config, trajectory):
    """Builds the predictor named by `config.predictor.type`."""
    kind = config.predictor.type
    if kind == "drift":
        return DriftPredictor(config, trajectory)
    if kind in AVAILABLE:
        from keras_hybrid.dynamics.learned import LearnedPredictor

        return LearnedPredictor(config, trajectory, kind)
    raise ValueError(
        f"Unknown predictor type. Expected one of {AVAILABLE}. "
        f"Received: predictor.type={kind!r}"
    )
