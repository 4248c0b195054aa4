"""Shared builders for the tests."""

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


def weights_of(model):
    return [np.array(v) for v in model.weights]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
