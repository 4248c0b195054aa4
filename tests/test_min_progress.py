"""`predictor.min_progress`: the share of the skipped steps' expected
loss decrease a long-window jump must deliver (`PhaseOutcome.required_gain`),
on synthetic loss and weight trajectories."""

import math

import pytest

import keras_hybrid as kh
from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.state import TrainingState

from test_long_window import L
from test_long_window import SyntheticTrajectory
from test_long_window import _linear
from test_long_window import _run
from test_long_window import _velocity


def _predictor(kind, min_progress):
    config = kh.HybridConfig(
        full_steps=L, max_predict_steps=40,
        predictor={"type": kind, "min_progress": min_progress,
                   "min_agreement": -1.0},
    )
    trajectory = SyntheticTrajectory()
    predictor = kh.dynamics.get(config, trajectory)
    weight_at, _ = _linear(_velocity(), noise=0.01)
    _run(predictor, trajectory, weight_at, phases=4)
    return predictor


def _state(slope, steps=60, start=2.0):
    """FULL losses falling log-linearly by `slope` per step (noiseless)."""
    state = TrainingState()
    for t in range(steps):
        state.record(t, start * math.exp(slope * t))
    return state


@pytest.mark.parametrize("kind", ["nesterov", "holt"])
def test_required_gain_is_the_share_of_the_skipped_progress(kind):
    predictor = _predictor(kind, 0.5)
    outcome = predictor.predict_phase_outcome(_state(-0.002), 25)
    expected = 0.5 * (1.0 - math.exp(-0.002 * 25))
    assert outcome.required_gain == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["nesterov", "holt"])
def test_no_requirement_when_off_flat_or_unknown(kind):
    assert _predictor(kind, 0.0).predict_phase_outcome(
        _state(-0.002), 25).required_gain == 0.0
    on = _predictor(kind, 1.0)
    assert on.predict_phase_outcome(_state(0.001), 25).required_gain == 0.0
    assert on.predict_phase_outcome(TrainingState(), 25).required_gain == 0.0


def test_required_gain_grows_with_the_skipped_steps():
    predictor = _predictor("nesterov", 1.0)
    state = _state(-0.003)
    short = predictor.predict_phase_outcome(state, 10).required_gain
    long = predictor.predict_phase_outcome(state, 40).required_gain
    assert 0.0 < short < long < 1.0


def test_default_outcome_requires_nothing():
    outcome = PhaseOutcome(targets=None, per_step_delta=[], start=[],
                           predicted_loss=None, loss_bounds=(None, None))
    assert outcome.required_gain == 0.0
    assert kh.HybridConfig().predictor.min_progress == 0.0


def test_min_progress_is_validated():
    with pytest.raises(ValueError, match="Received: min_progress=3.0"):
        kh.HybridConfig(predictor={"type": "nesterov", "min_progress": 3.0})


def _fit(min_progress):
    from helpers import fit_long_window

    _, callback = fit_long_window(
        {"type": "nesterov", "min_progress": min_progress},
        loss_tolerance=0.0,
    )
    return callback


def test_fit_refuses_every_jump_below_the_required_progress():
    """The same run accepts its jumps without a requirement and refuses
    them all when a jump must bring twice the skipped steps' progress."""
    free = _fit(0.0).report()["training_summary"]
    assert free["predictions_accepted"] > 0
    callback = _fit(2.0)
    strict = callback.report()["training_summary"]
    assert strict["predictions_attempted"] > 0
    assert strict["predictions_accepted"] == 0
    # The jump records say so too: a refused jump has no accepted scale.
    jumps = callback.runner.stats.jumps
    assert jumps and all(j["accepted_scale"] is None for j in jumps)
