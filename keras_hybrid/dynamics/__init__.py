"""Dynamics models: predict what a PREDICT phase would have done."""

from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.base import Predictor
from keras_hybrid.dynamics.linear import LinearTrajectoryPredictor

AVAILABLE = ("linear",)


def get(config, trajectory):
    """Builds the predictor named by `config.predictor.type`.

    Raises:
        NotImplementedError: for a type this version does not provide yet.
    """
    kind = config.predictor.type
    if kind == "linear":
        return LinearTrajectoryPredictor(config, trajectory)
    raise NotImplementedError(
        f"predictor.type={kind!r} is not available in this version of "
        "keras_hybrid; use predictor.type='linear'. "
        f"Received: predictor.type={kind!r}"
    )
