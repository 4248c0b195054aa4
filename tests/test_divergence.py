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
    level, signals = m.check(m.loss_mean + 5 * sigma)  # between 3 and 9 sigma
    assert level == dv.DivergenceLevel.WARNING and signals[0].name == "loss_sigma"
    # Even a huge single spike is only a warning (late-training minibatch
    # losses are heavy-tailed); three warnings in a row are critical.
    assert m.check(50.0)[0] == dv.DivergenceLevel.WARNING
    level, signals = m.check(50.0)
    assert level == dv.DivergenceLevel.CRITICAL
    assert signals[-1].name == "persistent_warning"
    m.check(1.0)
    assert m.warnings_in_a_row == 0


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
