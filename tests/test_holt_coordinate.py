"""`holt` with `predictor.shrinkage='coordinate'`: the per-weight James-Stein
factor of the velocity, on synthetic weight trajectories."""

import numpy as np
import keras
import pytest

import keras_hybrid as kh
from keras_hybrid.dynamics.holt import HoltPredictor
from keras_hybrid.state import TrainingState

from test_long_window import L
from test_long_window import SIZES
from test_long_window import SyntheticTrajectory
from test_long_window import _arrays
from test_long_window import _run


def _config(**predictor):
    return kh.HybridConfig(
        full_steps=L, max_predict_steps=40,
        predictor={"type": "holt", "shrinkage": "coordinate", **predictor},
    )


def _half_drifting(seed=0, drift=0.01, walk=0.02):
    """Weights whose first half of coordinates (in every tensor) drift
    linearly and whose second half random-walk with no drift."""
    rng = np.random.default_rng(seed)
    velocity = [drift * rng.normal(size=s).astype("float32") for s in SIZES]
    masks = []
    for s in SIZES:
        mask = np.zeros(int(np.prod(s)), "float32")
        mask[: mask.size // 2] = 1.0
        masks.append(mask.reshape(s))
    velocity = [v * m for v, m in zip(velocity, masks)]
    state = [np.zeros(s, "float32") for s in SIZES]
    cache = {}

    def weight_at(t):
        while len(cache) < t:
            for a, v, m in zip(state, velocity, masks):
                a += v + (1.0 - m) * walk * rng.normal(size=a.shape).astype(
                    "float32")
            cache[len(cache) + 1] = [a.copy() for a in state]
        return cache[t]

    return weight_at, velocity, masks


def _direction(holt):
    outcome = holt.predict_phase_outcome(TrainingState(), L)
    start = _arrays(outcome.start)
    return [b - a for a, b in zip(start, _arrays(outcome.targets(1.0)))]


def test_coordinate_shrinkage_keeps_drift_and_drops_the_walk():
    weight_at, velocity, masks = _half_drifting()
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(_config(), trajectory)
    _run(holt, trajectory, weight_at, phases=10)
    assert holt.ready()
    moved = _direction(holt)
    drifting = np.concatenate([(d * m).ravel() for d, m in zip(moved, masks)])
    wandering = np.concatenate(
        [(d * (1 - m)).ravel() for d, m in zip(moved, masks)])
    truth = np.concatenate([(L * v).ravel() for v in velocity])
    # Along the drifting coordinates the jump covers most of the true
    # displacement; on the random-walk ones it moves far less than the raw
    # velocity estimate does there.
    raw = np.concatenate([(L * np.asarray(keras.ops.convert_to_numpy(v))
                           * (1 - m)).ravel()
                          for v, m in zip(holt.velocity, masks)])
    cosine = drifting @ truth / (np.linalg.norm(drifting)
                                 * np.linalg.norm(truth))
    assert cosine > 0.95
    assert 0.6 < np.linalg.norm(drifting) / np.linalg.norm(truth) <= 1.05
    assert np.linalg.norm(wandering) < 0.6 * np.linalg.norm(raw)


def test_coordinate_shrinkage_waits_for_two_drifts():
    weight_at, _, _ = _half_drifting()
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(_config(min_agreement=-1.0), trajectory)
    _run(holt, trajectory, weight_at, phases=2)
    assert holt.moment_rate is None  # one drift fed: no variance yet
    assert not holt.ready()
    _run(holt, trajectory, weight_at, phases=1, start=2 * L)
    assert holt.moment_rate is not None
    assert holt.ready()


def test_coordinate_state_round_trip():
    weight_at, _, _ = _half_drifting()
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(_config(), trajectory)
    _run(holt, trajectory, weight_at, phases=5)
    other = HoltPredictor(_config(), trajectory)
    other.set_state(holt.get_state())
    other.set_arrays(holt.get_arrays())
    for x, y in zip(_direction(holt), _direction(other)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_tensor_mode_is_the_default_and_unchanged():
    assert kh.HybridConfig().predictor.shrinkage == "tensor"
    weight_at, _, _ = _half_drifting()
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(kh.HybridConfig(
        full_steps=L, max_predict_steps=40, predictor={"type": "holt"}),
        trajectory)
    _run(holt, trajectory, weight_at, phases=5)
    assert holt.drift_mean is None and holt.drift_variance is None


def test_shrinkage_is_validated():
    with pytest.raises(ValueError, match="Received: shrinkage='weight'"):
        kh.HybridConfig(predictor={"type": "holt", "shrinkage": "weight"})
