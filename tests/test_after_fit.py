"""The model a user gets back from a hybrid `fit()` is a normal Keras model.

After `fit()` (every preset, with and without validation data, one epoch or
several) each weight and optimizer variable can be read and is finite, and
`evaluate`, `predict`, `save`/`load`, `export` and a second `fit()` work;
so do the callbacks a user adds (`on_train_end` readers, `ModelCheckpoint`,
`BackupAndRestore`). On JAX the fit loop donates the state it threads
through the train function: a copy of it kept anywhere else becomes a
deleted array (a regression of exactly that kind once reached users).
"""

import os

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.config import PRESET_NAMES
from keras_hybrid.config import HybridConfig
from tests.helpers import backend_is

pytestmark = pytest.mark.backends

PRESETS = sorted(PRESET_NAMES)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 24)).astype("float32")
    y = (x[:, :5] @ rng.normal(size=(5,)) > 0).astype("int32") + (
        x[:, 5] > 0.5
    ).astype("int32")
    return x, y


def build(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    model = kh.HybridModel.wrap(
        keras.Model(inputs, keras.layers.Dense(3)(hidden))
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def config(preset):
    """The preset, with a warmup short enough for its phases to begin
    within these short runs."""
    cfg = HybridConfig.preset(preset)
    cfg.warmup_steps = 10
    return cfg


def fit_kwargs(x, y, validation):
    kwargs = dict(batch_size=20, verbose=0)
    if validation:
        kwargs["validation_data"] = (x[:100], y[:100])
    return kwargs


def readable(values):
    """Every value as numpy, each checked finite."""
    arrays = [keras.ops.convert_to_numpy(v) for v in values]
    for array in arrays:
        assert np.all(np.isfinite(array))
    return arrays


@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize("validation", [False, True],
                         ids=["no_validation", "validation"])
@pytest.mark.parametrize("preset", PRESETS)
def test_model_is_usable_after_fit(data, tmp_path, preset, validation,
                                   epochs):
    x, y = data
    model = build()
    callback = kh.HybridPredictCallback(config(preset))
    history = model.fit(x, y, epochs=epochs, callbacks=[callback],
                        **fit_kwargs(x, y, validation))
    assert len(history.history["loss"]) == epochs
    assert callback.report()["training_summary"]["total_steps"] == 30 * epochs

    # Reading every weight and optimizer variable, as a user does.
    weights = readable(v.numpy() for v in model.trainable_variables)
    readable(model.optimizer.variables)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())

    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(loss)
    predictions = model.predict(x[:8], verbose=0)
    assert np.all(np.isfinite(predictions))

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), predictions,
                               rtol=1e-5, atol=1e-6)
    for saved, kept in zip(loaded.trainable_variables, weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved), kept)

    # Training goes on, with the callback and without.
    model.fit(x, y, epochs=1, callbacks=[kh.HybridPredictCallback(
        config(preset))], **fit_kwargs(x, y, validation))
    model.fit(x, y, epochs=1, **fit_kwargs(x, y, validation))
    readable(model.trainable_variables)
    readable(model.optimizer.variables)
    assert np.isfinite(model.evaluate(x, y, verbose=0, return_dict=True)[
        "loss"])


class ReadsTheModel(keras.callbacks.Callback):
    """Reads the weights and predicts where a user's callback would."""

    def __init__(self, x):
        super().__init__()
        self.x = x
        self.seen = []

    def _read(self, where):
        weights = self.model.get_weights()
        assert all(np.all(np.isfinite(w)) for w in weights), where
        outputs = keras.ops.convert_to_numpy(
            self.model.predict_on_batch(self.x)
        )
        assert np.all(np.isfinite(outputs)), where
        self.seen.append(where)

    def on_epoch_end(self, epoch, logs=None):
        self._read(f"epoch {epoch}")

    def on_train_end(self, logs=None):
        self._read("train end")


@pytest.mark.parametrize("preset", ["balanced", "outer"])
def test_users_callbacks_read_the_model(data, tmp_path, preset):
    x, y = data
    model = build()
    reader = ReadsTheModel(x[:4])
    model.fit(x, y, epochs=3, callbacks=[
        kh.HybridPredictCallback(config(preset)),
        reader,
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "every7.weights.h5"), save_weights_only=True,
            save_freq=7,
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5,
                                      restore_best_weights=True),
    ], **fit_kwargs(x, y, True))
    assert reader.seen == ["epoch 0", "epoch 1", "epoch 2", "train end"]
    # The checkpoint written mid-epoch holds finite weights that load.
    other = build(seed=1)
    other.load_weights(str(tmp_path / "every7.weights.h5"))
    readable(other.trainable_variables)
    model.save_weights(str(tmp_path / "after.weights.h5"))
    other.load_weights(str(tmp_path / "after.weights.h5"))
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("save_freq", ["epoch", 7])
def test_backup_and_restore_resumes(data, tmp_path, save_freq):
    x, y = data
    backup = str(tmp_path / "backup")
    model = build()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=4, callbacks=[
            kh.HybridPredictCallback(config("balanced")),
            keras.callbacks.BackupAndRestore(backup, save_freq=save_freq),
            StopAt(1),
        ], **fit_kwargs(x, y, True))
    # The interrupted model is readable too.
    readable(model.trainable_variables)

    resumed = build(seed=1)
    history = resumed.fit(x, y, epochs=4, callbacks=[
        kh.HybridPredictCallback(config("balanced")),
        keras.callbacks.BackupAndRestore(backup, save_freq=save_freq),
    ], **fit_kwargs(x, y, True))
    if save_freq == "epoch":
        assert len(history.history["loss"]) == 2  # epochs 2 and 3
    readable(resumed.trainable_variables)
    readable(resumed.optimizer.variables)
    assert np.all(np.isfinite(resumed.evaluate(x, y, verbose=0)))


def test_force_full_from_a_callback_between_steps(data):
    """A callback that holds the model itself (not `self.model`) and ends
    a prediction between two steps: the runner works on the loop's newest
    state, and the loop goes on from what the runner left."""
    x, y = data
    model = build()
    calls = []

    class Force(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if model.current_phase == kh.Phase.PREDICT and not calls:
                calls.append(batch)
                model.force_full_phase(5)

    cfg = config("balanced")
    cfg.confidence_threshold = 0.0
    cfg.full_steps = 10
    model.fit(x, y, epochs=3, callbacks=[kh.HybridPredictCallback(cfg),
                                          Force()],
              **fit_kwargs(x, y, True))
    readable(model.trainable_variables)
    readable(model.optimizer.variables)
    assert np.all(np.isfinite(model.evaluate(x, y, verbose=0)))


@pytest.mark.skipif(backend_is("torch"),
                    reason="a SavedModel is exported from TensorFlow or JAX")
def test_export_after_fit(data, tmp_path):
    pytest.importorskip("tensorflow")
    x, y = data
    model = build()
    model.fit(x, y, epochs=2, callbacks=[kh.HybridPredictCallback(
        config("balanced"))], **fit_kwargs(x, y, True))
    expected = model.predict(x[:8], verbose=0)
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    if backend_is("tensorflow"):
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # kept: it owns the variables
        served = loaded.serve(x[:8])
        np.testing.assert_allclose(np.asarray(served), expected, rtol=1e-5,
                                   atol=1e-5)
