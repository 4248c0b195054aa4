"""Divergence monitor, recovery actions and fault injection."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hybrid as kh
from keras_hybrid import divergence as dv
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config
from tests.helpers import trained_runner

pytestmark = pytest.mark.backends


def monitor(**overrides):
    return dv.DivergenceMonitor(kh.DivergenceConfig(**overrides), full_steps=5)


def warmed(m, steps=20, loss=1.0, grad=1.0):
    for i in range(steps):
        m.check(loss + 0.01 * (i % 2), grad)
    return m


def test_non_finite_values_are_critical():
    m = monitor()
    assert m.check(float("nan"))[0] == dv.DivergenceLevel.CRITICAL
    level, signals = m.check(1.0, float("inf"))
    assert level == dv.DivergenceLevel.CRITICAL
    assert signals[0].name == "non_finite_gradient"


def test_loss_spike_levels():
    m = warmed(monitor(loss_sigma=3.0))
    level, signals = m.check(1.0)
    assert level <= dv.DivergenceLevel.CAUTION
    sigma = max(m.loss_var**0.5, 1e-3 * m.loss_mean)
    # One hard batch (between 3 and 9 sigma) is not a divergence; a second
    # loss above the limit right after it is.
    level, signals = m.check(m.loss_mean + 5 * sigma)
    assert "loss_sigma" not in [s.name for s in signals]
    sigma = max(m.loss_var**0.5, 1e-3 * m.loss_mean)
    level, signals = m.check(m.loss_mean + 5 * sigma)
    assert level == dv.DivergenceLevel.WARNING and signals[0].name == "loss_sigma"
    # Even a huge spike is only a warning (late-training minibatch losses
    # are heavy-tailed); three warnings in a row are critical.
    assert m.check(50.0)[0] == dv.DivergenceLevel.WARNING
    level, signals = m.check(50.0)
    assert level == dv.DivergenceLevel.CRITICAL
    assert signals[-1].name == "persistent_warning"
    m.check(1.0)
    assert m.warnings_in_a_row == 0


def test_a_hard_batch_repeating_every_epoch_raises_no_warning():
    # Keras' fit() after keras.utils.set_random_seed repeats its data order
    # every epoch: one hard batch comes back at the same place, 3.2-3.5
    # sigma above the running mean (a 16x16-image CNN, epochs 8-15), while
    # the loss falls smoothly.
    m = monitor(loss_sigma=3.0)
    rng = np.random.default_rng(0)
    epoch = 0.1 * rng.normal(size=63)
    for e in range(15):
        for i, noise in enumerate(epoch):
            loss = 2.0 - 0.01 * (e + i / 63) + noise
            if i == 38:
                loss = m.loss_mean + 3.4 * m.loss_var ** 0.5
            level, signals = m.check(loss, 2.0)
            assert level <= dv.DivergenceLevel.CAUTION, (e, i, signals)


def _falling_loss(m, steps=100, start=2.0):
    """Feeds a smoothly falling, noisy minibatch loss (deterministic);
    returns the last trend value."""
    rng = np.random.default_rng(0)
    for i in range(steps):
        trend = start - 0.002 * i
        assert m.check(trend + 0.1 * rng.normal(), 2.0)[0] <= (
            dv.DivergenceLevel.CAUTION)
    return trend


def _post_jump(m, trend):
    """The losses after an outer jump as measured on a small CNN (`outer`,
    16x16 images, seed 2, step 733): 3.1, 4.4 and 2.0 standard deviations
    above the mean from before the jump, then back on the trend."""
    sigma = m.loss_var ** 0.5
    spike = [m.loss_mean + z * sigma for z in (3.1, 4.4, 2.0)]
    return spike + [trend - 0.002 * i for i in range(1, 8)]


def test_loss_spike_after_an_accepted_jump_forces_no_full_phase():
    # Without being told of the jump, the monitor takes the spike for a
    # divergence and forces FULL phases (what `outer` printed 9 times).
    m = monitor(loss_sigma=3.0)
    trend = _falling_loss(m)
    results = [m.check(loss, 4.0) for loss in _post_jump(m, trend)]
    assert results[1][0] == dv.DivergenceLevel.WARNING
    assert results[1][1][0].name == "loss_sigma"
    assert isinstance(m.decide(*results[1], step=734, last_good_step=700),
                      dv.ForceFullPhase)
    # Told of the jump, it sees nothing to act on, and the spike does not
    # inflate the statistics later steps are judged against.
    m = monitor(loss_sigma=3.0)
    trend = _falling_loss(m)
    mean, sigma = m.loss_mean, m.loss_var ** 0.5
    m.note_jump()
    for loss in _post_jump(m, trend)[:3]:
        level, signals = m.check(loss, 4.0)
        assert level == dv.DivergenceLevel.NORMAL, signals
        assert isinstance(m.decide(level, signals, 734, 700), dv.Continue)
    # Only the loss within the limit (2.0 sigma) entered the mean.
    assert m.loss_mean - mean == pytest.approx(0.05 * 2.0 * sigma)
    for loss in _post_jump(m, trend)[3:]:
        assert m.check(loss, 2.0)[0] == dv.DivergenceLevel.NORMAL


def test_divergence_after_an_accepted_jump_is_still_caught():
    # A jump that breaks training: the loss triples and stays there. The
    # settling steps pass without a warning, then it is rolled back.
    m = monitor(loss_sigma=3.0)
    _falling_loss(m)
    m.note_jump()
    high = 3.0 * m.loss_mean
    levels = [m.check(high + 0.01 * i, 4.0)[0]
              for i in range(m.JUMP_SETTLE_STEPS)]
    assert max(levels) == dv.DivergenceLevel.NORMAL
    level, signals = m.check(high, 4.0)
    assert level == dv.DivergenceLevel.WARNING
    assert signals[0].name == "loss_sigma"
    m.check(high, 4.0)
    level, signals = m.check(high, 4.0)
    assert level == dv.DivergenceLevel.CRITICAL
    assert isinstance(m.decide(level, signals, 420, 360),
                      dv.RollbackAndRetry)
    # Non-finite values and exploding gradients are judged throughout.
    m = monitor()
    _falling_loss(m)
    m.note_jump()
    assert m.check(float("nan"), 4.0)[0] == dv.DivergenceLevel.CRITICAL
    assert m.check(1.5, 2000.0)[0] == dv.DivergenceLevel.CRITICAL


def test_gradient_explosion_and_vanishing():
    m = warmed(monitor())
    level, signals = m.check(1.0, 11.0)
    assert level == dv.DivergenceLevel.WARNING
    assert signals[0].name == "gradient_explosion"
    m.check(1.0, 1.0)
    assert m.check(1.0, 101.0)[0] == dv.DivergenceLevel.CRITICAL
    level, signals = m.check(1.0, 0.005)
    assert level == dv.DivergenceLevel.WARNING
    assert signals[0].name == "gradient_vanishing"


def test_prediction_error_and_oscillation_are_cautions():
    m = warmed(monitor(), steps=12)
    level, signals = m.check(1.0, 1.0, predicted_loss=0.5)
    assert "prediction_error" in [s.name for s in signals]
    assert level == dv.DivergenceLevel.CAUTION
    m = monitor(oscillation_sign_changes=3, oscillation_window=6, loss_sigma=100.0)
    rng = np.random.default_rng(0)
    names = set()
    for i in range(40):  # plain noise: no oscillation
        names |= {s.name for s in m.check(1.0 + 0.01 * rng.normal())[1]}
    assert "oscillation" not in names
    for i in range(12):  # large alternating swings
        names |= {s.name for s in m.check(1.0 + (0.5 if i % 2 else 0.0))[1]}
    assert "oscillation" in names


def test_policy_and_abort_message():
    m = monitor()
    assert isinstance(m.decide(dv.DivergenceLevel.NORMAL, [], 5, 0), dv.Continue)
    assert isinstance(m.decide(dv.DivergenceLevel.CAUTION, [], 5, 0),
                      dv.ReducePredictRatio)
    assert m.decide(dv.DivergenceLevel.WARNING, [], 5, 0) == dv.ForceFullPhase(10)
    signal = dv.Signal("non_finite_loss", float("nan"), 0.0,
                       dv.DivergenceLevel.CRITICAL)
    for _ in range(m.max_rollbacks):
        action = m.decide(dv.DivergenceLevel.CRITICAL, [signal], 7, 3)
        assert action == dv.RollbackAndRetry(3, 0.5)
    action = m.decide(dv.DivergenceLevel.CRITICAL, [signal], 9, 3)
    assert isinstance(action, dv.Abort)
    m.healthy()
    assert isinstance(m.decide(dv.DivergenceLevel.CRITICAL, [signal], 9, 3),
                      dv.RollbackAndRetry)
    assert "step 9" in action.reason and "non_finite_loss" in action.reason
    assert "Lower the learning rate" in action.reason


class AlwaysFinite(keras.callbacks.Callback):
    """Checks the weights after every step."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_end(self, batch, logs=None):
        for w in self.model.weights:
            assert np.isfinite(keras.ops.convert_to_numpy(w)).all(), batch
        self.checked += 1


class AtBatch(keras.callbacks.Callback):
    def __init__(self, batch, action):
        super().__init__()
        self.batch, self.action, self.done = batch, action, False

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch and not self.done:
            self.done = True
            self.action(self.model)


def fit(x, y, config, extra=(), sample_weight=None, epochs=1):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(config)
    finite = AlwaysFinite()
    keras.utils.set_random_seed(0)
    if np.isfinite(x).all():
        data = dict(x=x, y=y, sample_weight=sample_weight, batch_size=32,
                    shuffle=False)
    else:  # NumPy NaNs are refused up front; a dataset is not scanned.
        data = dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(32))
    model.fit(epochs=epochs, verbose=0, callbacks=[callback, finite, *extra],
              **data)
    return model, callback.report(), finite


def test_exploding_learning_rate_is_rolled_back(classification_data):
    x, y = classification_data

    def explode(model):
        model.optimizer.learning_rate = 1e5

    model, report, finite = fit(x, y, eager_config(), [AtBatch(30, explode)])
    events = report["divergence_events"]
    rollbacks = [e for e in events if e["outcome"].startswith("RollbackAndRetry")]
    assert rollbacks, events
    first = rollbacks[0]["step"]
    assert 30 < first <= 30 + 50
    assert "learning rate -> 0.005" in rollbacks[0]["outcome"]
    assert rollbacks[0]["kind"] == "rollback"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
    assert finite.checked == 64


def test_nan_loss_rolls_back_exactly(classification_data):
    x, y = classification_data
    x = x.copy()
    x[40 * 32:41 * 32] = np.nan  # one poisoned batch
    # Confidence never reaches 1.0: every step runs FULL, so the poisoned
    # batch is computed (a skipped batch would never touch the weights).
    model, report, finite = fit(x, y, eager_config(confidence_threshold=1.0))
    events = [e for e in report["divergence_events"]
              if "non_finite" in e["signal"]]
    assert events and events[0]["outcome"].startswith("RollbackAndRetry")
    assert finite.checked == 64


def test_loss_spike_forces_full_phases(classification_data):
    x, y = classification_data
    x = x.copy()
    x[35 * 32:37 * 32] *= 30.0  # two batches far off the distribution
    _, report, finite = fit(x, y, eager_config(predict_mode="per_step"))
    signals = {e["signal"] for e in report["divergence_events"]}
    assert any("loss_sigma" in s or "gradient_explosion" in s for s in signals)
    assert finite.checked == 64


def test_vanishing_gradient_stretch_is_flagged(classification_data):
    x, y = classification_data
    weights = np.ones(len(x), dtype="float32")
    weights[30 * 32:40 * 32] = 1e-5  # ten batches whose gradients vanish
    _, report, finite = fit(x, y, eager_config(), sample_weight=weights)
    vanishing = [e for e in report["divergence_events"]
                 if "gradient_vanishing" in e["signal"]]
    assert vanishing and all(30 <= e["step"] <= 41 for e in vanishing)
    assert vanishing[0]["outcome"] == "ForceFullPhase"
    assert vanishing[0]["kind"] == "forced_full"
    assert finite.checked == 64


def test_hopeless_divergence_aborts_with_clear_error(classification_data):
    x, y = classification_data
    x = x.copy()
    x[20 * 32:] = np.nan  # everything after batch 20 is poisoned
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    finite = AlwaysFinite()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(kh.DivergenceError, match="Training diverged at step"):
        model.fit(data, epochs=1, verbose=0,
                  callbacks=[kh.HybridPredictCallback(eager_config()), finite])
    for w in model.weights:
        assert np.isfinite(keras.ops.convert_to_numpy(w)).all()
    # The runner is detached: the model trains plainly again.
    assert model._hybrid_runner is None


def test_rollback_restores_weights_and_optimizer_bit_for_bit(classification_data):
    x, y = classification_data
    model, runner = trained_runner(x, y)
    runner.recovery.save_good_point(runner.controller.step)
    good_model = [np.array(v) for v in model.variables]
    good_optimizer = [np.array(v) for v in model.optimizer.variables]
    model.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0)
    for v in model.trainable_variables:
        v.assign(v * np.nan)
    signal = dv.Signal("non_finite_loss", float("nan"), 0.0,
                       dv.DivergenceLevel.CRITICAL)
    runner.recovery.action = (
        [signal], dv.RollbackAndRetry(runner.recovery.good_step, 1.0)
    )
    runner.settle()  # carries the queued action out
    for a, b in zip(good_model, model.variables):
        np.testing.assert_array_equal(a, np.array(b))
    for a, b in zip(good_optimizer, model.optimizer.variables):
        np.testing.assert_array_equal(a, np.array(b))
    assert runner.stats.events[-1]["outcome"].startswith("RollbackAndRetry")


OUTER_LIKE = dict(
    predictor={"type": "nesterov", "min_agreement": -1.0,
               "jump_scales": [1.0]},
    train_check_batches=True, check_jumps=False, min_predict_steps=2,
    max_predict_steps=2, validation_samples=2,
)


def test_accepted_jumps_are_noted_before_the_steps_after_them(
        classification_data, monkeypatch):
    noted, settling = [], {}
    note, check = dv.DivergenceMonitor.note_jump, dv.DivergenceMonitor.check

    def spy_note(monitor):
        noted.append(monitor.steps_seen)
        note(monitor)

    def spy_check(monitor, *args, **kwargs):
        settling[monitor.steps_seen + 1] = monitor.settle_steps
        return check(monitor, *args, **kwargs)

    monkeypatch.setattr(dv.DivergenceMonitor, "note_jump", spy_note)
    monkeypatch.setattr(dv.DivergenceMonitor, "check", spy_check)
    x, y = classification_data
    _, report, finite = fit(x, y, eager_config(**OUTER_LIKE))
    accepted = report["training_summary"]["predictions_accepted"]
    assert accepted >= 3 and len(noted) == accepted
    # The first step checked after each jump (its retrained check batch)
    # is judged as settling.
    for seen in noted:
        assert settling[seen + 1] == dv.DivergenceMonitor.JUMP_SETTLE_STEPS
    assert finite.checked == 64


def test_checkpoints_keep_the_monitors_settling_and_spike_state(
        classification_data):
    from keras_hybrid.runner_state import runner_state
    from keras_hybrid.runner_state import set_runner_state

    x, y = classification_data
    _, runner = trained_runner(x, y, **OUTER_LIKE)
    runner.monitor.settle_steps, runner.monitor.above_limit = 7, True
    json_state, arrays = runner_state(runner)
    assert json_state["monitor"]["settle_steps"] == 7
    assert json_state["monitor"]["above_limit"] is True
    _, fresh = trained_runner(x, y, **OUTER_LIKE)
    set_runner_state(fresh, json_state, arrays)
    assert (fresh.monitor.settle_steps, fresh.monitor.above_limit) == (7, True)
    # A checkpoint written before these fields loads with neither.
    for name in ("settle_steps", "above_limit"):
        del json_state["monitor"][name]
    set_runner_state(fresh, json_state, arrays)
    assert (fresh.monitor.settle_steps, fresh.monitor.above_limit) == (
        0, False)
