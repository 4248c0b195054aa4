"""Shared builders for the tests."""

import math

import keras
import numpy as np

import keras_hybrid as kh


def backend_is(name):
    """Whether the active Keras backend is `name`."""
    return keras.backend.backend() == name


def build_mlp(seed=0, inputs=20, classes=10, dropout=0.0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,)), keras.layers.Dense(32, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers)


def compile_model(model, learning_rate=1e-2, **kwargs):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **kwargs,
    )
    return model


def eager_config(**overrides):
    """A config that predicts early and often (for behaviour tests)."""
    values = dict(
        warmup_steps=4,
        full_steps=6,
        min_predict_steps=6,
        max_predict_steps=10,
        confidence_threshold=0.0,
        validation_samples=2,
        correct_steps=1,
        loss_tolerance=1.0,
        # Every FULL phase fits the predictor (no back-off to quiet phases).
        max_quiet_phases=0,
    )
    values.update(overrides)
    return kh.HybridConfig(**values)


def trained_runner(x, y, **config):
    """A wrapped model after one short hybrid fit, and its runner."""
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(**config))
    model.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0,
              callbacks=[callback])
    return model, callback.runner


def fit_long_window(predictor, **config):
    """Two epochs of a hybrid fit with a long-window predictor (`predictor`:
    its config; the agreement gate open) on a separable problem, with the
    weights checked finite. Returns `(model, callback)`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 20)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          learning_rate=1e-3)
    callback = kh.HybridPredictCallback(eager_config(
        full_steps=10, predictor=dict({"min_agreement": -1.0}, **predictor),
        **config,
    ))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert all(np.all(np.isfinite(np.asarray(w))) for w in model.weights)
    return model, callback


def weights_of(model):
    return [np.array(v) for v in model.weights]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


class TinyTask:
    """A task with the `keras_hybrid.bench.tasks.Task` interface, small
    enough for tests. Module-level so the benchmark's arm subprocesses can unpickle it."""

    def __init__(self, name="tiny", n=48, batch_size=16, epochs=2):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n + 64, 8)).astype("float32")
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
        self.name = name
        self.x_train, self.y_train = x[:n], y[:n]
        self.x_val, self.y_val = x[n:n + 32], y[n:n + 32]
        self.x_test, self.y_test = x[n + 32:], y[n + 32:]
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = 1e-2
        self.loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        )
        self.metrics = ["accuracy"]
        self.description = "tiny synthetic binary classification"

    def build_model(self, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2),
        ])

    def make_optimizer(self, learning_rate):
        return keras.optimizers.Adam(learning_rate)

    @property
    def steps_per_epoch(self):
        return math.ceil(len(self.x_train) / self.batch_size)
