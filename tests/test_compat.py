"""A wrapped model behaves like the Keras model it wraps (on every backend).

Each test reproduces one incompatibility Keras's own tests found when run
through `HybridModel.wrap` (see `tests/keras_compat`).
"""

import warnings

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.phases import Phase
from tests.helpers import backend_is
from tests.helpers import eager_config

pytestmark = pytest.mark.backends

QUIET = {"metrics": {"log_to_progbar": False, "log_to_history": False}}


def two_outputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    a = keras.layers.Dense(1, name="output_a")(hidden)
    b = keras.layers.Dense(1, activation="sigmoid", name="output_b")(hidden)
    return keras.Model(inputs, [a, b])


def two_output_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    return x, (x[:, :1], (x[:, 1:2] > 0).astype("float32"))


@pytest.mark.parametrize("losses", [
    {"output_a": "mse", "output_b": "binary_crossentropy"},
    ["mse", "binary_crossentropy"],
])
def test_multi_output_names_losses_and_history_keys(losses):
    x, y = two_output_data()
    plain = two_outputs()
    plain.compile(optimizer="sgd", loss=losses,
                  metrics={"output_a": ["mae"]})
    expected = plain.fit(x, y, batch_size=4, verbose=0).history.keys()

    wrapped = kh.HybridModel.wrap(two_outputs())
    assert wrapped.output_names == ["output_a", "output_b"]
    wrapped.compile(optimizer="sgd", loss=losses,
                    metrics={"output_a": ["mae"]})
    callback = kh.HybridPredictCallback(eager_config(**QUIET))
    history = wrapped.fit(x, y, batch_size=4, verbose=0, callbacks=[callback])
    assert sorted(history.history) == sorted(expected)
    assert "output_a_loss" in history.history
    # By default History also carries the hybrid's four entries.
    wrapped.compile(optimizer="sgd", loss=losses,
                    metrics={"output_a": ["mae"]})
    history = wrapped.fit(x, y, batch_size=4, verbose=0,
                          callbacks=[kh.HybridPredictCallback(eager_config())])
    assert sorted(history.history) == sorted(
        list(expected) + ["backward_reduction", "confidence", "phase",
                          "predicted_loss"]
    )


def test_subclassed_model_has_no_output_names_when_wrapped():
    class Net(keras.Model):
        def call(self, x):
            return x

    assert not hasattr(Net(), "output_names")
    assert not hasattr(kh.HybridModel.wrap(Net()), "output_names")


class ScaledLoss(keras.Model):
    """A functional model whose `compute_loss` triples the compiled loss."""

    def __init__(self):
        inputs = keras.Input((3,))
        super().__init__(inputs, keras.layers.Dense(1)(inputs))

    def compute_loss(self, x, y, y_pred, sample_weight=None, training=True):
        return 3.0 * super().compute_loss(
            x, y, y_pred, sample_weight, training=training
        )


def test_model_compute_loss_is_used_when_wrapped():
    x, _ = two_output_data()
    y = x[:, :1] * 2.0
    keras.utils.set_random_seed(0)
    plain = ScaledLoss()
    plain.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    expected = plain.evaluate(x, y, batch_size=16, verbose=0)

    keras.utils.set_random_seed(0)
    wrapped = kh.HybridModel.wrap(ScaledLoss())
    # Only the wrapper is compiled, as users do.
    wrapped.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    history = wrapped.fit(x, y, batch_size=16, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected,
                               rtol=1e-5)
    unscaled = keras.losses.MeanSquaredError()(y, wrapped.predict(x, verbose=0))
    np.testing.assert_allclose(history.history["loss"][0],
                               3.0 * float(unscaled), rtol=1e-5)


def test_model_with_own_train_step_is_refused():
    class OwnStep(keras.Sequential):
        def train_step(self, *args, **kwargs):
            return super().train_step(*args, **kwargs)

    with pytest.raises(ValueError, match="overrides `train_step`"):
        kh.HybridModel.wrap(OwnStep([keras.layers.Dense(1)]))


class TripledLoss(kh.HybridModel):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def compute_loss(self, x, y, y_pred, sample_weight=None, training=True):
        return 3.0 * super().compute_loss(
            x, y, y_pred, sample_weight, training=training
        )


def test_subclass_compute_loss_is_used_by_every_phase():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x[:, :1] * 2.0
    keras.utils.set_random_seed(0)
    model = TripledLoss()
    # A zero learning rate keeps the weights (and the predicted change at
    # zero), so that every step's loss is the loss at the same weights.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    plain = keras.losses.MeanSquaredError()(y, model.predict(x, verbose=0))
    config = eager_config(predict_mode="per_step", **QUIET)
    callback = kh.HybridPredictCallback(config)
    history = model.fit(x, y, batch_size=4, shuffle=False, verbose=0,
                        callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] > 0
    np.testing.assert_allclose(history.history["loss"][0],
                               3.0 * float(plain), rtol=1e-4)


def test_subclass_with_own_train_step_is_refused_by_the_callback():
    class OwnStep(TripledLoss):
        def train_step(self, *args):
            return super().train_step(*args)

    model = OwnStep()
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 3), "float32")
    with pytest.raises(ValueError, match="overriding `train_step`"):
        model.fit(x, x[:, :1], verbose=0,
                  callbacks=[kh.HybridPredictCallback(eager_config())])


def frozen_model():
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(2)
    dense.trainable = False
    return keras.Sequential([keras.Input((3,)), dense])


def test_model_without_trainable_weights_trains_like_keras():
    x = np.random.default_rng(0).normal(size=(48, 3)).astype("float32")
    y = np.zeros((48, 2), "float32")
    model = kh.HybridModel.wrap(frozen_model())
    model.compile(optimizer="sgd", loss="mse")
    before = [np.array(w) for w in model.weights]
    callback = kh.HybridPredictCallback(eager_config(**QUIET))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                            callbacks=[callback])
    # Keras warns from its TensorFlow and PyTorch steps (not on JAX).
    assert backend_is("jax") or any(
        "does not have any trainable weights" in str(w.message)
        for w in caught
    )
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, np.array(new))
    summary = callback.report()["training_summary"]
    assert summary["total_steps"] == 24
    assert summary["steps_by_phase"]["PREDICT"] == 0


def embedding_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((4,), dtype="int32"),
        keras.layers.Embedding(10, 3, name="emb"),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])


def test_wrapped_model_exposes_the_inner_layers_and_attributes():
    inner = embedding_model()
    inner.custom_counter = 7
    wrapped = kh.HybridModel.wrap(inner)
    assert wrapped.layers == inner.layers
    assert wrapped.get_layer("emb") is inner.layers[0]
    assert wrapped.custom_counter == 7
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute


def test_tensorboard_embeddings_metadata(tmp_path):
    pytest.importorskip("tensorboard")
    model = kh.HybridModel.wrap(embedding_model())
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(32).reshape(8, 4) % 10
    board = keras.callbacks.TensorBoard(
        str(tmp_path), embeddings_freq=1,
        embeddings_metadata={"emb": "metadata.tsv"},
    )
    model.fit(x, np.zeros((8, 1)), batch_size=4, verbose=0, callbacks=[board])
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in config


def test_weights_file_loads_into_the_plain_model(tmp_path):
    x, y = two_output_data()
    wrapped = kh.HybridModel.wrap(two_outputs())
    wrapped.compile(optimizer="sgd", loss=["mse", "binary_crossentropy"])
    wrapped.fit(x, y, batch_size=4, verbose=0)
    path = str(tmp_path / "w.weights.h5")
    wrapped.save_weights(path)
    plain = two_outputs()
    plain.load_weights(path)
    for a, b in zip(wrapped.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    # ... and back; a whole saved wrapper's weights load too.
    again = kh.HybridModel.wrap(two_outputs())
    again.load_weights(path)
    whole = str(tmp_path / "whole.keras")
    wrapped.save(whole)
    last = kh.HybridModel.wrap(two_outputs())
    last.load_weights(whole)
    for a, b, c in zip(wrapped.get_weights(), again.get_weights(),
                       last.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def nan_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
            float("inf"))),
    ])


def test_terminate_on_nan_stops_before_any_good_point():
    x = np.ones((32, 3), "float32")
    y = np.zeros((32, 2), "float32")
    model = kh.HybridModel.wrap(nan_model())
    model.compile(optimizer="sgd", loss="mse")
    callback = kh.HybridPredictCallback(eager_config(**QUIET))
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                        callbacks=[callback, keras.callbacks.TerminateOnNaN()])
    assert model.stop_training
    assert len(history.history["loss"]) == 1
    assert not np.isfinite(history.history["loss"][0])
    report = callback.report()
    assert report["training_summary"]["total_steps"] == 1
    # The monitor saw the non-finite step at the end of fit(), after
    # TerminateOnNaN had stopped training, and returned to the weights
    # training started from (the first good point).
    events = report["divergence_events"]
    assert events and "non_finite" in events[0]["signal"]
    assert events[0]["outcome"].startswith("RollbackAndRetry: to step 0, ")


def overflowing_model():
    """Keras' `CSVLoggerTest.test_stop_training_csv` model: the first
    batch's loss overflows to `inf`."""
    keras.utils.set_random_seed(0)
    big = keras.initializers.Constant(1e5)
    return keras.Sequential(
        [keras.Input((3,))]
        + [keras.layers.Dense(2, activation="relu", kernel_initializer=big)
           for _ in range(5)]
        + [keras.layers.Dense(2)]
    )


def test_terminate_on_nan_with_csv_logger(tmp_path, capsys):
    # The loss logged is Keras' own (`inf`, the first batch's). Plain Keras
    # then applies the non-finite update, its weights become NaN and its
    # validation loss is `nan`; keras-hybrid refuses that update inside the
    # step and rolls back, so its weights stay finite and its validation
    # loss is `inf`.
    rng = np.random.default_rng(0)
    x = rng.random((10, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, size=10), 2)
    rows, finite = {}, {}
    for hybrid in (False, True):
        model = overflowing_model()
        callbacks = [keras.callbacks.TerminateOnNaN()]
        if hybrid:
            model = kh.HybridModel.wrap(model)
            callbacks.append(
                kh.HybridPredictCallback(eager_config(**QUIET), verbose=1))
        model.compile(optimizer="sgd", loss="mse")
        path = tmp_path / f"hybrid_{hybrid}.csv"
        callbacks.append(keras.callbacks.CSVLogger(str(path)))
        model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y),
                  verbose=0, callbacks=callbacks)
        rows[hybrid] = [line.split(",")
                        for line in path.read_text().split()]
        finite[hybrid] = all(np.isfinite(w).all() for w in model.get_weights())
    assert rows[False] == [["epoch", "loss", "val_loss"], ["0", "inf", "nan"]]
    assert rows[True] == [["epoch", "loss", "val_loss"], ["0", "inf", "inf"]]
    assert finite == {False: False, True: True}
    out = capsys.readouterr().out
    assert ("step 1: rolled back to the last good weights (to step 0, "
            "learning rate -> 0.005) (signal: non_finite") in out
    assert "(," not in out


class Counter(keras.layers.Layer):
    """Counts its calls in a non-trainable variable, in inference too."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros",
                                     trainable=False)

    def call(self, x):
        self.count.assign(self.count + 1.0)
        return x


def test_jump_checks_leave_no_trace_in_non_trainable_state():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    keras.utils.set_random_seed(0)
    counter = Counter()
    inner = keras.Sequential([keras.Input((8,)), counter,
                              keras.layers.Dense(1)])
    model = kh.HybridModel.wrap(inner)
    model.compile(optimizer="adam", loss="mse")
    callback = kh.HybridPredictCallback(eager_config(**QUIET))
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] > 0  # jumps were checked
    # One count per step with a forward and backward pass, none per check.
    count = float(keras.ops.convert_to_numpy(counter.count))
    assert count == summary["backward_passes"]


class PhaseWatch(keras.callbacks.Callback):
    """Records the non-trainable variables around PREDICT phases."""

    def __init__(self):
        super().__init__()
        self.previous = None
        self.start = None
        self.during = []
        self.after = None

    def on_train_batch_end(self, batch, logs=None):
        phase = self.model.current_phase
        values = [np.array(v) for v in self.model.non_trainable_variables]
        if phase == Phase.PREDICT and self.previous != Phase.PREDICT:
            if self.start is None:
                self.start = values
        elif phase == Phase.PREDICT:
            self.during.append(values)
        elif self.previous == Phase.PREDICT and self.after is None:
            self.after = values
        self.previous = phase


def test_rejected_prediction_restores_batch_norm_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype("float32")
    y = x[:, :1].copy()
    # Two batches in the PREDICT phase have far larger targets: its loss
    # check fails there (after a step that moved the statistics).
    x[96:112] *= 3.0
    y[96:112] += 20.0
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([
        keras.Input((4,)), keras.layers.BatchNormalization(),
        keras.layers.Dense(1),
    ])
    model = kh.HybridModel.wrap(inner)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    config = eager_config(
        predict_mode="per_step", warmup_steps=4, full_steps=6,
        min_predict_steps=6, max_predict_steps=6,
        divergence_threshold=10.0, **QUIET,
    )
    callback = kh.HybridPredictCallback(config)
    watch = PhaseWatch()
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0,
              callbacks=[callback, watch])
    assert callback.report()["training_summary"]["predictions_rejected"] >= 1
    assert watch.start is not None and watch.after is not None
    # The PREDICT steps moved the statistics ...
    assert any(not np.array_equal(a, b)
               for a, b in zip(watch.start, watch.during[0]))
    # ... and the rejection restored them exactly.
    for a, b in zip(watch.start, watch.after):
        np.testing.assert_array_equal(a, b)
