"""Work a phase end does only where its result is read: the jump start of
a drift prediction (computed when read; a shadow prediction never reads
it) and the training-state features at a FULL phase's start (computed
only for a predictor that reads them)."""

import keras
import numpy as np
import pytest

from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.drift import DriftPredictor
from keras_hybrid.config import HybridConfig
from keras_hybrid.control import PhaseControl
from keras_hybrid.report import RunStatistics
from keras_hybrid.shadow import ShadowScoring
from keras_hybrid.state import TrainingState
from keras_hybrid.trajectory import WeightTrajectory
from tests.helpers import build_mlp
from tests.helpers import trained_runner


def _data(count=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, 20)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def test_a_lazy_start_is_computed_once_when_read():
    calls = []

    def start():
        calls.append(1)
        return [np.ones(2)]

    outcome = PhaseOutcome(targets=None, per_step_delta=[], start=start,
                           predicted_loss=1.0, loss_bounds=(0.5, 2.0))
    assert calls == []
    copy = outcome.replace(predicted_loss=2.0)
    assert calls == [] and copy.predicted_loss == 2.0
    np.testing.assert_array_equal(outcome.start[0], np.ones(2))
    np.testing.assert_array_equal(outcome.start[0], np.ones(2))
    assert calls == [1]
    np.testing.assert_array_equal(copy.start[0], np.ones(2))
    assert calls == [1, 1]
    given = outcome.replace(start=[np.zeros(2)])
    np.testing.assert_array_equal(given.start[0], np.zeros(2))
    with pytest.raises(TypeError, match="Unknown PhaseOutcome fields"):
        outcome.replace(strat=[])


def _finished_trajectory():
    """A trajectory whose phase averaged w (first half) and 3 w (second),
    on a built MLP's weights w."""
    model = build_mlp(0)
    model.build((None, 20))
    trajectory = WeightTrajectory(model.trainable_variables)
    trajectory.start_phase()
    for total, variable in zip(trajectory.accumulators,
                               trajectory.variables):
        total.assign(2.0 * variable.value)
    trajectory.added(2)
    trajectory.close_half()
    for total, variable in zip(trajectory.accumulators,
                               trajectory.variables):
        total.assign(6.0 * variable.value)
    trajectory.added(2)
    assert trajectory.finish_phase()
    return model, trajectory


def test_the_drift_start_is_the_target_when_the_prediction_was_made():
    model, trajectory = _finished_trajectory()
    predictor = DriftPredictor(HybridConfig(), trajectory)
    expected = [keras.ops.convert_to_numpy(t) for t in trajectory.target(0.0)]
    weights = [keras.ops.convert_to_numpy(v) for v in trajectory.variables]
    # second mean 3 w, drift w per step, lag 0.5: the start is 3.5 w.
    for want, w in zip(expected, weights):
        np.testing.assert_allclose(want, 3.5 * w, rtol=1e-6)
    outcome = predictor.predict_phase_outcome(TrainingState(), 10)
    # The trajectory moves on (another phase's average and drift) before
    # the start is read: it still is the one of the prediction's time.
    trajectory.second_mean = [m * 0.0 for m in trajectory.second_mean]
    trajectory.drift = [d * 0.0 for d in trajectory.drift]
    trajectory.second_count = 7
    for got, want in zip(outcome.start, expected):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_a_shadow_prediction_does_not_compute_the_start():
    model, trajectory = _finished_trajectory()
    computed = []
    target = trajectory._target

    def counted(*args):
        computed.append(1)
        return target(*args)

    trajectory._target = counted
    config = HybridConfig()
    predictor = DriftPredictor(config, trajectory)
    shadow = ShadowScoring(RunStatistics(), PhaseControl(config))
    shadow.contiguous = True
    shadow.predict(trajectory, predictor, TrainingState(), 0.5, 10)
    assert shadow.pending is not None
    assert computed == []
    # A real prediction reads its start: computed then, once.
    outcome = predictor.predict_phase_outcome(TrainingState(), 10)
    outcome.start
    outcome.start
    assert computed == [1]


@pytest.mark.parametrize("uses", [False, True])
def test_start_features_are_computed_only_for_a_predictor_that_reads_them(
    uses,
):
    model, runner = trained_runner(*_data())
    seen = []
    predictor = runner.cycle.predictor
    update = predictor.update_from_observation

    def recording(before, after, losses):
        seen.append(before)
        return update(before, after, losses)

    predictor.update_from_observation = recording
    predictor.uses_start_features = uses
    runner.cycle.start_full()
    runner.cycle._phase_losses = [(1, 1.0)]
    runner.cycle.predictor.update_from_observation(
        runner.cycle._phase_start_features, runner.state,
        runner.cycle._phase_losses,
    )
    if uses:
        assert seen[-1] is not None and np.shape(seen[-1]) == (4,)
    else:
        assert seen[-1] is None

