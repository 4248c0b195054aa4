"""`HybridConfig.train_check_batches`: the check batches of an accepted jump
are trained on after it, so that a jump skips no data (with a PREDICT length
equal to `validation_samples`, every batch gets its backward pass)."""

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.calls import StepCalls
from keras_hybrid.jump_check import JumpCheck
from keras_hybrid.phases import Phase

from helpers import build_mlp
from helpers import compile_model
from helpers import eager_config
from helpers import weights_of

pytestmark = pytest.mark.backends


def _synced_weights(runner, model):
    """The model's weights as the fit loop holds them (on JAX the loop
    keeps its own state; the variables are brought up to date first)."""
    runner.calls.sync()
    return weights_of(model)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 20)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return x, y


def _fit(monkeypatch, **config):
    """Two epochs (40 steps) of a hybrid fit that jumps early and often,
    recording every jump (`JumpCheck.search` for a checked one, with its
    batches; `JumpCheck.jump_now` for an unchecked one: the jump's first
    target, whether it was accepted and the weights then) and every
    training step on a stored batch (the compiled `train_batch`: the
    batch, the phase and the weights it trained from) or on an immediate
    jump's batches (the FULL step's `"retrain"` calls)."""
    searches, trainings = [], []
    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          learning_rate=1e-3)
    search, jump_now = JumpCheck.search, JumpCheck.jump_now

    def first_target(check, outcome):
        scale = check.config.predictor.jump_scales[0]
        return [keras.ops.convert_to_numpy(t) for t in outcome.targets(scale)]

    def record(check, batches, accepted, target):
        searches.append({
            "batches": batches, "accepted": accepted, "target": target,
            "after": [keras.ops.convert_to_numpy(v)
                      for v in check.weights.variables],
            "weights": (_synced_weights(callback.runner, model)
                        if accepted else None),
        })

    def spy_search(check, functions, step):
        checked = list(check.batches)
        target = first_target(check, check.outcome)
        search(check, functions, step)
        record(check, checked, check.abort is None, target)

    def spy_jump_now(check, outcome, step):
        target = first_target(check, outcome)
        applied = jump_now(check, outcome, step)
        record(check, None, applied, target)
        return applied

    monkeypatch.setattr(JumpCheck, "search", spy_search)
    monkeypatch.setattr(JumpCheck, "jump_now", spy_jump_now)
    full = StepCalls.full

    def spy_full(calls, iterator, collect, kind=None, settle_check=None):
        if kind == "retrain":  # an immediate jump's trained batches
            trainings.append({
                "batch": None, "phase": calls.controller.phase,
                "weights": _synced_weights(callback.runner, model),
            })
        return full(calls, iterator, collect, kind=kind,
                    settle_check=settle_check)

    monkeypatch.setattr(StepCalls, "full", spy_full)
    callback = kh.HybridPredictCallback(eager_config(
        predictor={"type": "nesterov", "min_agreement": -1.0,
                   "jump_scales": [1.0]},
        **config,
    ))

    class SpyTraining(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            runner = callback.runner
            train = runner.functions["train_batch"]

            def spy_train(batch):
                trainings.append({
                    "batch": batch, "phase": runner.controller.phase,
                    "weights": _synced_weights(runner, model),
                })
                return train(batch)

            runner.functions["train_batch"] = spy_train

    model.fit(x, y, batch_size=32, epochs=2, verbose=0,
              callbacks=[callback, SpyTraining()])
    summary = callback.report()["training_summary"]
    return model, callback.runner, summary, searches, trainings


def _same_objects(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _assert_trained_after(accepted, trainings):
    """Each accepted jump's check batches were trained on right after it,
    from the jumped weights (in the CORRECT phase that follows)."""
    after = [t for t in trainings if t["phase"] == Phase.CORRECT]
    assert _same_objects([t["batch"] for t in after],
                         [b for s in accepted for b in s["batches"]])
    first = 0
    for search in accepted:
        for a, b in zip(search["weights"], after[first]["weights"]):
            np.testing.assert_array_equal(a, b)
        first += len(search["batches"])


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
    assert not runner.jump_check.holds_batches and runner.safe_to_checkpoint


def test_longer_phases_skip_only_the_batches_after_the_checks(monkeypatch):
    _, runner, summary, searches, trainings = _fit(
        monkeypatch, train_check_batches=True, min_predict_steps=5,
        max_predict_steps=5, validation_samples=2,
    )
    accepted = sum(s["accepted"] for s in searches)
    assert accepted > 0
    assert summary["backward_passes"] == runner.controller.step - 3 * accepted
    # Two check batches each.
    assert sum(t["phase"] == Phase.CORRECT for t in trainings) == 2 * accepted


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
    assert _same_objects(
        [t["batch"] for t in trainings],
        [b for s in searches if not s["accepted"] for b in s["batches"]],
    )
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
    model, runner, summary, searches, trainings = _fit(
        monkeypatch, train_check_batches=True, check_jumps=False,
        min_predict_steps=2, max_predict_steps=2, validation_samples=2,
    )
    steps = runner.controller.step
    assert searches and all(s["accepted"] for s in searches)
    assert len(searches) == summary["predictions_accepted"]
    # No forward check ran: one forward and one backward pass per batch.
    assert summary["backward_passes"] == summary["forward_passes"] == steps
    assert int(model.optimizer.iterations.numpy()) == steps
    assert all(j["tried"] == [] and j["base_loss"] is None
               for j in runner.stats.jumps)
    # Each jump moved the weights to its first scale's target ...
    for search in searches:
        for a, b in zip(search["target"], search["after"]):
            np.testing.assert_array_equal(a, b)
    # ... as its phase started, and its phase's two batches were trained
    # on as they came, the first from the jumped weights; no batch was held
    # for later (the compiled train-one-batch function never ran).
    assert all(t["phase"] == Phase.PREDICT for t in trainings)
    assert len(trainings) == 2 * len(searches)
    for search, first in zip(searches, trainings[::2]):
        for a, b in zip(search["weights"], first["weights"]):
            np.testing.assert_array_equal(a, b)
    assert not runner.jump_check.holds_batches


def test_unchecked_jumps_train_what_held_batches_would_have(monkeypatch):
    """An immediate jump trains the same batches, in the same order, from
    the same weights as a checked jump that holds them and trains them once
    accepted: with every checked jump accepted (at the same single scale),
    both runs end at the same weights and optimizer state."""
    phases = dict(train_check_batches=True, min_predict_steps=2,
                  max_predict_steps=2, validation_samples=2)
    unchecked, _, summary, _, _ = _fit(monkeypatch, check_jumps=False,
                                       **phases)
    checked, runner, checked_summary, searches, _ = _fit(
        monkeypatch, check_jumps=True, loss_tolerance=1.0, **phases)
    assert searches and all(s["accepted"] for s in searches)
    assert (summary["predictions_accepted"]
            == checked_summary["predictions_accepted"] == len(searches))
    # The checked run made forward passes the unchecked one did not.
    assert checked_summary["forward_passes"] > summary["forward_passes"]
    # Two compiled training functions (train-one-batch, the FULL step) may
    # round differently: equal to float32 precision.
    for a, b in zip(weights_of(unchecked), weights_of(checked)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(unchecked.optimizer.variables,
                    checked.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                                   keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6)


def test_check_jumps_validation():
    assert kh.HybridConfig().check_jumps is True
    with pytest.raises(ValueError, match="Received: check_jumps=0"):
        kh.HybridConfig(check_jumps=0)
