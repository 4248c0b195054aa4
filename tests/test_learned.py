"""Learned predictors in a real fit: shadow checks, landing, bad inputs."""

import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.phases import Phase
from keras_hybrid.trajectory import delta_agreement
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

pytestmark = pytest.mark.backends


def fit(x, y, epochs=2, **config):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(**config))
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
              callbacks=[callback])
    return model, callback


@pytest.mark.parametrize("kind", ["linear", "mlp", "rssm"])
def test_learned_predictor_trains_predicts_and_is_scored(
        classification_data, kind):
    x, y = classification_data
    # A high threshold keeps FULL phases contiguous: every phase is a
    # training sample and a shadow check.
    _, callback = fit(x, y, confidence_threshold=1.0,
                      predictor={"type": kind})
    runner = callback.runner
    predictor = runner.predictor
    assert predictor.ready()
    assert len(predictor.samples) >= 4
    assert predictor.basis.fitted
    accuracy = callback.report()["phase_statistics"]["prediction_accuracy"]
    assert accuracy["checked_predictions"] >= 3
    assert -1.0 <= accuracy["weight_cosine_similarity"] <= 1.0
    assert accuracy["weight_relative_error"] > 0.0
    assert 0.0 <= accuracy["calibration_error"] <= 1.0
    assert np.isfinite(accuracy["loss_mae"])
    confidence = predictor.prediction_confidence(runner.state)
    assert 0.0 <= confidence <= 1.0
    outcome = predictor.predict_phase_outcome(runner.state, 8)
    assert [tuple(d.shape) for d in outcome.per_step_delta] == [
        tuple(v.shape) for v in runner.variables]
    low, high = outcome.loss_bounds
    assert low <= outcome.predicted_loss <= high
    assert 0.0 < predictor.memory_mb() < runner.config.predictor_memory_budget_mb


def test_refit_interval_refits_every_nth_phase_and_still_predicts(
        classification_data):
    x, y = classification_data
    fits = {}
    for interval in (1, 3):
        _, callback = fit(x, y, confidence_threshold=1.0, predictor={
            "type": "mlp", "refit_interval": interval})
        predictor = callback.runner.predictor
        accuracy = callback.report()["phase_statistics"][
            "prediction_accuracy"]
        fits[interval] = (predictor.ensemble._train_calls,
                          predictor.basis._num_fits,
                          accuracy["checked_predictions"],
                          len(predictor.samples))
        state = predictor.get_state()
        assert state["since_refit"] == predictor._since_refit
        assert 0 <= state["since_refit"] < interval
    trains_1, basis_1, checked_1, samples_1 = fits[1]
    trains_3, basis_3, checked_3, samples_3 = fits[3]
    # Every phase is still observed, recorded and shadow-checked ...
    assert (samples_3, checked_3) == (samples_1, checked_1)
    # ... but the basis and the ensemble are refitted a third as often
    # (the first fit of each comes as soon as it is possible).
    assert trains_1 >= 6
    assert trains_3 == 1 + (trains_1 - 1) // 3
    assert basis_3 < basis_1


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_learned_predictor_runs_prediction_phases(classification_data, kind):
    x, y = classification_data
    _, callback = fit(x, y, epochs=3, predictor={"type": kind})
    summary = callback.report()["training_summary"]
    assert summary["predictions_attempted"] >= 1
    assert summary["backward_passes"] < summary["total_steps"]


def test_landing_ends_the_run_with_a_prediction(classification_data):
    x, y = classification_data
    _, callback = fit(x, y, finish_with_prediction=True,
                      confidence_threshold=1.0, max_predict_steps=12)
    history = callback.runner.controller.history
    phases = [r.phase for r in history if r.length > 0]
    # Never confident enough, so the only PREDICT phase is the landing one.
    assert phases.count("PREDICT") == 1
    landing = [r for r in history if r.phase == "PREDICT"][0]
    assert landing.start_step + landing.planned_length == 128
    assert callback.runner.controller.step == 128


def test_delta_agreement_of_exact_and_opposite_predictions():
    old = [np.zeros((3,), "float32"), np.ones((2, 2), "float32")]
    new = [np.full((3,), 2.0, "float32"), np.full((2, 2), 3.0, "float32")]
    per_step = [(b - a) / 4.0 for a, b in zip(old, new)]
    cos, error = delta_agreement(per_step, new, old, 4.0)
    assert cos == pytest.approx(1.0) and error == pytest.approx(0.0, abs=1e-6)
    cos, error = delta_agreement([-d for d in per_step], new, old, 4.0)
    assert cos == pytest.approx(-1.0) and error == pytest.approx(2.0)


def test_memory_budget_and_feature_dim_are_checked_before_training(
        classification_data):
    x, y = classification_data
    with pytest.raises(ValueError, match="predictor_memory_budget_mb"):
        fit(x, y, predictor_memory_budget_mb=0.01,
            predictor={"type": "linear"})
    with pytest.raises(ValueError, match="Raise feature_dim to at least"):
        fit(x, y, predictor={"type": "mlp", "feature_dim": 8})


def test_predictor_type_is_validated():
    with pytest.raises(ValueError, match="`predictor.type` must be one of"):
        kh.HybridConfig(predictor={"type": "transformer"})
    with pytest.raises(ValueError, match="`predictor.trajectory_basis`"):
        kh.HybridConfig(predictor={"trajectory_basis": "svd"})
