"""`HybridConfig.train_check_batches`: the check batches of an accepted jump
are trained on after it, so that a jump skips no data (with a PREDICT length
equal to `validation_samples`, every batch gets its backward pass)."""

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.phases import Phase
from keras_hybrid.runner import HybridRunner

from helpers import build_mlp
from helpers import compile_model
from helpers import eager_config
from helpers import weights_of


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 20)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return x, y


def _fit(monkeypatch, **config):
    """Two epochs (40 steps) of a hybrid fit that jumps early and often,
    recording every line search and every `_train_batches` call."""
    searches, trainings = [], []
    line_search = HybridRunner._line_search
    train_batches = HybridRunner._train_batches

    def spy_search(runner):
        checked = list(runner._check_batches)
        line_search(runner)
        accepted = runner._abort is None
        searches.append({
            "batches": checked, "accepted": accepted,
            "weights": weights_of(runner.model) if accepted else None,
        })

    def spy_train(runner, batches):
        trainings.append({
            "batches": list(batches), "phase": runner.controller.phase,
            "weights": weights_of(runner.model),
        })
        train_batches(runner, batches)

    monkeypatch.setattr(HybridRunner, "_line_search", spy_search)
    monkeypatch.setattr(HybridRunner, "_train_batches", spy_train)
    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          learning_rate=1e-3)
    callback = kh.HybridPredictCallback(eager_config(
        predictor={"type": "nesterov", "min_agreement": -1.0,
                   "jump_scales": [1.0]},
        **config,
    ))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    summary = callback.report()["training_summary"]
    return model, callback.runner, summary, searches, trainings


def _same_objects(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _assert_trained_after(accepted, trainings):
    """Each accepted jump's check batches were trained on right after it,
    from the jumped weights (in the CORRECT phase that follows)."""
    after = [t for t in trainings if t["phase"] == Phase.CORRECT]
    assert len(after) == len(accepted)
    for search, training in zip(accepted, after):
        assert _same_objects(training["batches"], search["batches"])
        for a, b in zip(search["weights"], training["weights"]):
            np.testing.assert_array_equal(a, b)


def test_accepted_jumps_skip_nothing(monkeypatch):
    model, runner, summary, searches, trainings = _fit(
        monkeypatch, train_check_batches=True, min_predict_steps=2,
        max_predict_steps=2, validation_samples=2,
    )
    steps = runner.controller.step
    assert steps == 40
    accepted = [s for s in searches if s["accepted"]]
    assert accepted and summary["predictions_accepted"] == len(accepted)
    # Every batch got its backward pass, and the optimizer counted each once.
    assert summary["backward_passes"] == steps
    assert runner.stats.backward_reduction() == 0.0
    assert int(model.optimizer.iterations.numpy()) == steps
    _assert_trained_after(accepted, trainings)
    assert not runner._accepted_batches and runner.safe_to_checkpoint


def test_longer_phases_skip_only_the_batches_after_the_checks(monkeypatch):
    _, runner, summary, searches, trainings = _fit(
        monkeypatch, train_check_batches=True, min_predict_steps=5,
        max_predict_steps=5, validation_samples=2,
    )
    accepted = sum(s["accepted"] for s in searches)
    assert accepted > 0
    assert summary["backward_passes"] == runner.controller.step - 3 * accepted
    assert sum(t["phase"] == Phase.CORRECT for t in trainings) == accepted


@pytest.mark.parametrize("explicit", [False, True])
def test_off_skips_the_whole_phase_as_before(monkeypatch, explicit):
    config = dict(min_predict_steps=5, max_predict_steps=5,
                  validation_samples=2)
    if explicit:
        config["train_check_batches"] = False
    model, runner, summary, searches, trainings = _fit(monkeypatch, **config)
    accepted = sum(s["accepted"] for s in searches)
    assert accepted > 0
    assert summary["backward_passes"] == runner.controller.step - 5 * accepted
    # Only rejected jumps' batches are trained on (back in FULL).
    assert all(t["phase"] == Phase.FULL for t in trainings)
    assert len(trainings) == len(searches) - accepted
    assert int(model.optimizer.iterations.numpy()) == runner.controller.step


def test_off_matches_the_default_exactly(monkeypatch):
    config = dict(min_predict_steps=5, max_predict_steps=5,
                  validation_samples=2)
    default = _fit(monkeypatch, **config)[0]
    off = _fit(monkeypatch, train_check_batches=False, **config)[0]
    for a, b in zip(weights_of(default), weights_of(off)):
        np.testing.assert_array_equal(a, b)


def test_validation():
    assert kh.HybridConfig().train_check_batches is False
    with pytest.raises(ValueError,
                       match="Received: train_check_batches='yes'"):
        kh.HybridConfig(train_check_batches="yes")
    # Without the option the checks must leave batches to skip ...
    with pytest.raises(ValueError, match="`train_check_batches=True` allows"):
        kh.HybridConfig(min_predict_steps=4, max_predict_steps=4,
                        validation_samples=4)
    # ... with it, the phase may be the checks alone, but no shorter.
    config = kh.HybridConfig(min_predict_steps=4, max_predict_steps=4,
                             validation_samples=4, train_check_batches=True)
    assert config.validation_samples == config.min_predict_steps
    with pytest.raises(
        ValueError,
        match=r"<= `min_predict_steps`.*Received: validation_samples=5, "
              r"min_predict_steps=4",
    ):
        kh.HybridConfig(min_predict_steps=4, max_predict_steps=4,
                        validation_samples=5, train_check_batches=True)
    # Fields changed after construction are caught by `validate()`.
    config.train_check_batches = False
    with pytest.raises(ValueError, match="Received: validation_samples=4"):
        config.validate()
    # Per-step mode has no check batches: no constraint either way.
    kh.HybridConfig(predict_mode="per_step", min_predict_steps=4,
                    validation_samples=8, train_check_batches=True)


def test_yaml_round_trip(tmp_path):
    config = kh.HybridConfig(min_predict_steps=2, max_predict_steps=2,
                             validation_samples=2, train_check_batches=True)
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert "train_check_batches: true" in path.read_text()
    loaded = kh.HybridConfig.from_yaml(path)
    assert loaded == config and loaded.train_check_batches is True


def test_unchecked_jumps_cost_no_forward_pass(monkeypatch):
    moves = []
    unchecked = HybridRunner._unchecked_jump

    def spy(runner, batches):
        scale = runner.config.predictor.jump_scales[0]
        target = [keras.ops.convert_to_numpy(t)
                  for t in runner._outcome.targets(scale)]
        unchecked(runner, batches)
        moves.append((target, [keras.ops.convert_to_numpy(v)
                               for v in runner.trajectory.variables]))

    monkeypatch.setattr(HybridRunner, "_unchecked_jump", spy)
    model, runner, summary, searches, trainings = _fit(
        monkeypatch, train_check_batches=True, check_jumps=False,
        min_predict_steps=2, max_predict_steps=2, validation_samples=2,
    )
    steps = runner.controller.step
    assert searches and all(s["accepted"] for s in searches)
    assert len(moves) == len(searches) == summary["predictions_accepted"]
    # No forward check ran: one forward and one backward pass per batch.
    assert summary["backward_passes"] == summary["forward_passes"] == steps
    assert int(model.optimizer.iterations.numpy()) == steps
    assert all(j["tried"] == [] and j["base_loss"] is None
               for j in runner.stats.jumps)
    # Each jump moved the weights to its first scale's target ...
    for target, weights in moves:
        for a, b in zip(target, weights):
            np.testing.assert_array_equal(a, b)
    # ... and its batches were trained on from there.
    _assert_trained_after(searches, trainings)


def test_check_jumps_validation():
    assert kh.HybridConfig().check_jumps is True
    with pytest.raises(ValueError, match="Received: check_jumps=0"):
        kh.HybridConfig(check_jumps=0)
