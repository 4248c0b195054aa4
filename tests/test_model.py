"""HybridModel + HybridPredictCallback behaviour (on every backend)."""

import json

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.phases import Phase
from tests.helpers import assert_same_weights
from tests.helpers import backend_is
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config
from tests.helpers import trained_runner
from tests.helpers import weights_of

pytestmark = pytest.mark.backends


def iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def fit_plain(x, y, seed=0, **fit_kwargs):
    model = compile_model(build_mlp(seed, dropout=0.2))
    keras.utils.set_random_seed(seed)
    model.fit(x, y, verbose=0, **fit_kwargs)
    return model


def fit_hybrid(x, y, config, seed=0, model_kwargs=None, **fit_kwargs):
    model = compile_model(
        kh.HybridModel.wrap(build_mlp(seed, dropout=0.2)), **(model_kwargs or {})
    )
    callback = kh.HybridPredictCallback(config)
    keras.utils.set_random_seed(seed)
    history = model.fit(x, y, verbose=0, callbacks=[callback], **fit_kwargs)
    return model, callback, history


def test_no_prediction_gives_exactly_plain_fit(classification_data):
    x, y = classification_data
    plain = fit_plain(x, y, batch_size=64, epochs=2)
    config = kh.HybridConfig(warmup_steps=10_000)
    hybrid, callback, _ = fit_hybrid(x, y, config, batch_size=64, epochs=2)
    assert_same_weights(weights_of(plain), weights_of(hybrid))
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] == 0
    assert summary["backward_passes"] == summary["total_steps"] == 64


def _ema_model(inner):
    model = inner
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2, use_ema=True,
                                        ema_momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_keras_weight_averaging_is_kept(classification_data):
    # An optimizer with `use_ema=True`: the FULL step updates the average as
    # Keras' own step does, and fit() ends on the averaged weights.
    x, y = classification_data
    plain = _ema_model(build_mlp(0, dropout=0.2))
    keras.utils.set_random_seed(0)
    plain.fit(x, y, batch_size=64, epochs=2, verbose=0)
    hybrid = _ema_model(kh.HybridModel.wrap(build_mlp(0, dropout=0.2)))
    callback = kh.HybridPredictCallback(kh.HybridConfig(
        enable_prediction=False))
    keras.utils.set_random_seed(0)
    hybrid.fit(x, y, batch_size=64, epochs=2, verbose=0,
               callbacks=[callback])
    assert_same_weights(weights_of(plain), weights_of(hybrid))
    # The weights are the average, not the last step's.
    raw = compile_model(build_mlp(0, dropout=0.2))
    keras.utils.set_random_seed(0)
    raw.fit(x, y, batch_size=64, epochs=2, verbose=0)
    assert not np.allclose(weights_of(raw)[0], weights_of(hybrid)[0])

    # With prediction on, too: fit() ends on the average of what it trained.
    predicting = _ema_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    keras.utils.set_random_seed(0)
    predicting.fit(x, y, batch_size=32, epochs=3, verbose=0,
                   callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] > 0
    averages = predicting.optimizer._model_variables_moving_average
    assert_same_weights(
        [keras.ops.convert_to_numpy(v) for v in averages],
        [keras.ops.convert_to_numpy(v)
         for v in predicting.trainable_variables],
    )
    # Training goes on from there: a second fit() (plain Keras 3.15 on JAX
    # fails here, the weights and their averages sharing arrays).
    predicting.predict_on_batch(x[:4])
    predicting.fit(x, y, batch_size=32, epochs=1, verbose=0,
                   callbacks=[kh.HybridPredictCallback(eager_config())])
    assert all(np.isfinite(w).all() for w in weights_of(predicting))
    assert_same_weights(
        [keras.ops.convert_to_numpy(v) for v in averages],
        [keras.ops.convert_to_numpy(v)
         for v in predicting.trainable_variables],
    )


def test_hybrid_model_without_callback_is_plain_fit(classification_data):
    x, y = classification_data
    plain = fit_plain(x, y, batch_size=128, epochs=1)
    model = compile_model(kh.HybridModel.wrap(build_mlp(0, dropout=0.2)))
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    assert_same_weights(weights_of(plain), weights_of(model))
    assert set(history.history) == {"loss", "accuracy"}


def test_wrap_trains_the_original_variables(classification_data):
    x, y = classification_data
    inner = build_mlp(0)
    model = compile_model(kh.HybridModel.wrap(inner))
    before = weights_of(inner)
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    assert [id(v) for v in model.trainable_variables] == [
        id(v) for v in inner.trainable_variables
    ]
    assert not np.array_equal(before[0], weights_of(inner)[0])


def test_compiling_the_inner_model_instead_of_the_wrapper(
        classification_data):
    x, y = classification_data
    inner = compile_model(build_mlp(0))
    model = kh.HybridModel.wrap(inner)
    before = weights_of(inner)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, batch_size=128, epochs=1, verbose=0,
                  callbacks=[kh.HybridPredictCallback()])
    message = str(info.value)
    assert "Compile the model returned by `HybridModel.wrap()`" in message
    assert f"Received: wrapper='hybrid_{inner.name}'" in message
    assert_same_weights(before, weights_of(inner))
    # Compiling the wrapper, as the message says, trains.
    compile_model(model).fit(x, y, batch_size=128, epochs=1, verbose=0)


def test_functional_and_subclassed_styles(classification_data):
    x, y = classification_data
    inputs = keras.Input((20,))
    outputs = keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(inputs))
    functional = compile_model(kh.HybridModel(inputs, outputs))

    class Net(kh.HybridModel):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, inputs):
            return self.out(self.hidden(inputs))

    subclassed = compile_model(Net())
    for model in (functional, subclassed):
        callback = kh.HybridPredictCallback(eager_config())
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[callback])
        summary = callback.report()["training_summary"]
        assert summary["predictions_attempted"] >= 1


def test_phase_cycle_skips_backward_passes(classification_data):
    x, y = classification_data
    _, callback, history = fit_hybrid(
        x, y, eager_config(), batch_size=32, epochs=2,
        validation_data=(x[:256], y[:256]),
    )
    report = callback.report()
    summary = report["training_summary"]
    assert summary["total_steps"] == 128
    assert summary["steps_by_phase"]["PREDICT"] > 0
    assert summary["backward_passes"] < summary["total_steps"]
    assert summary["backward_reduction_pct"] == pytest.approx(
        100 * (1 - summary["backward_passes"] / summary["total_steps"])
    )
    phases = [p["phase"] for p in report["phases"]]
    assert phases[0] == "WARMUP" and "PREDICT" in phases and "FULL" in phases
    for key in ("phase", "confidence", "backward_reduction", "predicted_loss",
                "loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 2, key
    assert history.history["backward_reduction"][-1] == pytest.approx(
        summary["backward_reduction_pct"] / 100
    )


def checked_jump(runner, outcome, batches, functions=None):
    """The runner's jump check run on `batches` for `outcome` (a jump from
    the current weights), as at a jump's last check batch."""
    check = runner.jump_check
    check.begin(outcome, runner.state.full_loss)
    for batch in batches:
        check.add(batch)
    check.search(functions or runner.functions, runner.controller.step)
    return check


def current_weights(model):
    return [keras.ops.copy(v.value) for v in model.trainable_variables]


def test_rejected_jump_restores_weights_exactly(classification_data):
    x, y = classification_data
    model, runner = trained_runner(x, y, loss_tolerance=0.0)
    before = weights_of(model)
    start = current_weights(model)

    class Terrible:
        def targets(self, scale):
            return [v + 100.0 * scale for v in start]

    batch = (keras.ops.convert_to_tensor(x[:32]), keras.ops.convert_to_tensor(y[:32]))
    check = checked_jump(runner, Terrible(), [batch, batch])
    assert check.abort == "forward_check"
    assert_same_weights(before, weights_of(model))


@pytest.mark.parametrize("tolerance, accepted", [(0.0, False), (0.02, True)])
def test_loss_tolerance_admits_a_slightly_worse_jump(
    classification_data, tolerance, accepted,
):
    x, y = classification_data
    model, runner = trained_runner(x, y, loss_tolerance=tolerance,
                                   predictor={"jump_scales": [1.0]})
    start_weights = current_weights(model)
    start = float(keras.ops.convert_to_numpy(start_weights[0])[0, 0])

    class SlightlyWorse:
        def targets(self, scale):
            first = start_weights[0] + scale * 1e-3
            return [first] + list(start_weights[1:])

    def checked_loss(batch):
        # 1.0 at the current weights, 1.01 at the jump's target.
        first = model.trainable_variables[0].value
        moved = float(keras.ops.convert_to_numpy(first)[0, 0]) - start
        return keras.ops.convert_to_tensor(1.0 + 10.0 * round(moved, 6))

    batch = (keras.ops.convert_to_tensor(x[:32]),
             keras.ops.convert_to_tensor(y[:32]))
    check = checked_jump(runner, SlightlyWorse(), [batch, batch],
                         dict(runner.functions, eval_loss=checked_loss))
    jump = runner.stats.jumps[-1]
    assert [round(loss, 4) for _, loss in jump["tried"]] == [1.01]
    assert (jump["accepted_scale"] == 1.0) == accepted
    assert (check.abort == "forward_check") == (not accepted)


def test_non_finite_prediction_never_reaches_the_weights(classification_data):
    x, y = classification_data
    model, runner = trained_runner(x, y)
    before = weights_of(model)
    start = current_weights(model)

    class Broken:
        def targets(self, scale):
            return [v * np.nan for v in start]

    batch = (keras.ops.convert_to_tensor(x[:32]), keras.ops.convert_to_tensor(y[:32]))
    check = checked_jump(runner, Broken(), [batch])
    assert check.abort == "forward_check"
    assert_same_weights(before, weights_of(model))
    assert any(e["signal"] == "non_finite_prediction" for e in runner.stats.events)


def test_per_step_mode_runs_forward_only_predict_steps(classification_data):
    x, y = classification_data
    _, callback, _ = fit_hybrid(
        x, y, eager_config(predict_mode="per_step", divergence_threshold=50.0),
        batch_size=32, epochs=1,
    )
    report = callback.report()
    s = report["training_summary"]
    assert s["steps_by_phase"]["PREDICT"] > 0
    assert s["forward_passes"] == s["total_steps"]
    assert "predict" in report["phase_statistics"]["median_call_time_ms"]


def test_per_step_loss_spike_is_undone(classification_data, monkeypatch):
    from keras_hybrid.dynamics import drift

    original = drift.DriftPredictor.predict_phase_outcome

    def wild(self, state, phase_length):
        outcome = original(self, state, phase_length)
        outcome.per_step_delta = [d * 1e4 for d in outcome.per_step_delta]
        return outcome

    monkeypatch.setattr(drift.DriftPredictor,
                        "predict_phase_outcome", wild)
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(predict_mode="per_step"))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    report = callback.report()
    s = report["training_summary"]
    assert s["predictions_rejected"] >= 1
    assert s["predictions_rejected"] + s["predictions_accepted"] == (
        s["predictions_attempted"])
    assert {e["signal"] for e in report["divergence_events"]} <= {
        "divergence_threshold", "non_finite_loss"}
    assert len(report["divergence_events"]) == s["predictions_rejected"]
    assert all(np.isfinite(w).all() for w in weights_of(model))


def test_predicted_steps_advance_the_learning_rate_schedule(classification_data):
    x, y = classification_data
    model, callback, _ = fit_hybrid(x, y, eager_config(), batch_size=32, epochs=2)
    s = callback.report()["training_summary"]
    assert s["steps_by_phase"]["PREDICT"] > 0
    assert iterations(model) == s["total_steps"] == 128


def test_force_full_phase_prevents_prediction(classification_data):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.force_full_phase(10_000)
    callback = kh.HybridPredictCallback(eager_config())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] == 0
    assert model.statistics()["total_steps"] == 64
    assert model.current_confidence is None  # detached after fit


@pytest.mark.parametrize("source", ["dataset", "pydataset"])
def test_dataset_inputs(classification_data, source):
    x, y = classification_data
    if source == "dataset":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    else:

        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return len(x) // 32

            def __getitem__(self, i):
                return x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]

        data = Batches()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    model.fit(data, epochs=2, verbose=0, callbacks=[callback])
    s = callback.report()["training_summary"]
    assert s["total_steps"] == 128 and s["steps_by_phase"]["PREDICT"] > 0
    assert iterations(model) == 128


def test_sample_weights_and_several_metrics(classification_data):
    x, y = classification_data
    weights = np.linspace(0.5, 1.5, len(x)).astype("float32")
    model = kh.HybridModel.wrap(build_mlp(0))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3)],
    )
    callback = kh.HybridPredictCallback(eager_config())
    history = model.fit(x, y, sample_weight=weights, batch_size=32, epochs=1,
                        verbose=0, callbacks=[callback])
    assert "sparse_top_k_categorical_accuracy" in history.history
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] > 0


@pytest.mark.skipif(backend_is("torch"),
                    reason="Keras' PyTorch trainer allows steps_per_execution=1 only")
def test_steps_per_execution_switches_per_execution(classification_data):
    x, y = classification_data
    model, callback, _ = fit_hybrid(
        x, y, eager_config(warmup_steps=8, full_steps=8, min_predict_steps=8,
                           max_predict_steps=16, validation_samples=4),
        batch_size=32, epochs=2, model_kwargs={"steps_per_execution": 4},
    )
    report = callback.report()
    assert report["training_summary"]["total_steps"] == 128
    assert all(p["start_step"] % 4 == 0 for p in report["phases"])
    assert iterations(model) == 128


@pytest.mark.skipif(not backend_is("tensorflow"), reason="TensorFlow graphs")
def test_predict_graph_has_no_gradient_ops(classification_data):
    import tensorflow as tf

    from keras_hybrid.backends import tensorflow as tf_backend

    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    deltas = [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
    batch = (keras.ops.convert_to_tensor(x[:32]), keras.ops.convert_to_tensor(y[:32]))
    full = tf_backend.step_graph(model, "full", deltas, batch)
    predict = tf_backend.step_graph(model, "predict", deltas, batch)
    assert tf_backend.gradient_ops(full), "the full step must compute gradients"
    assert tf_backend.gradient_ops(predict) == []
    # The forward pass itself is in the predict graph.
    assert any(op.type == "MatMul" for op in predict.get_operations())


def test_callback_errors_before_training(classification_data):
    x, y = classification_data
    plain = compile_model(build_mlp(0))
    with pytest.raises(ValueError, match="needs a HybridModel"):
        plain.fit(x, y, epochs=1, verbose=0,
                  callbacks=[kh.HybridPredictCallback()])
    with pytest.raises(ValueError, match="`predictor.type` must be one of"):
        kh.HybridPredictCallback({"predictor": {"type": "gru"}})
    with pytest.raises(ValueError, match="Unknown config field"):
        kh.HybridPredictCallback({"warmpu_steps": 1})
    with pytest.raises(RuntimeError, match="No report yet"):
        kh.HybridPredictCallback().report()
    with pytest.raises(ValueError, match="must be a keras.Model"):
        kh.HybridModel.wrap("not a model")


def test_report_is_strict_json_and_callback_is_reusable(classification_data, tmp_path):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    first = callback.report()["training_summary"]["total_steps"]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    assert callback.report()["training_summary"]["total_steps"] == first == 64
    path = callback.save_report(tmp_path / "report.json")
    report = json.loads(open(path).read())  # strict: no NaN allowed
    assert set(report) >= {"training_summary", "phase_statistics",
                           "divergence_events", "predictor_overhead"}
    assert report["training_summary"]["wall_clock_speedup"] is None
    assert set(report["phase_statistics"]["prediction_accuracy"]) == {
        "checked_predictions", "weight_cosine_similarity",
        "weight_relative_error", "improving_share", "loss_mae",
        "loss_correlation", "calibration_error", "applied_loss_mae",
        "applied_loss_correlation", "drift_consistency"}
    assert set(report["predictor_overhead"]) == {
        "encode_ms", "predict_ms", "update_ms", "memory_used_mb",
        "pct_of_step_time"}


def test_report_path_in_config_writes_the_report(classification_data, tmp_path):
    x, y = classification_data
    path = tmp_path / "out" / "r.json"
    config = eager_config(metrics={"report_path": str(path)})
    fit_hybrid(x, y, config, batch_size=64, epochs=1)
    assert json.loads(path.read_text())["training_summary"]["total_steps"] == 32


def test_wrapped_model_round_trips_through_keras_format(classification_data, tmp_path):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kh.WrappedHybridModel)
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0),
                               model.predict(x[:16], verbose=0), atol=1e-6)


def test_current_phase_and_confidence_during_fit(classification_data):
    x, y = classification_data
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((self.model.current_phase, self.model.current_confidence))

    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[kh.HybridPredictCallback(eager_config()), Probe()])
    phases = {p for p, _ in seen}
    assert Phase.WARMUP in phases and Phase.PREDICT in phases
    assert all(0.0 <= c <= 1.0 for _, c in seen)
