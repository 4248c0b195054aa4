"""The callback keeps Keras' asynchronous batch-end dispatch: it does its
per-step work from the runner, not from `on_train_batch_end` (a callback
that overrides that hook makes Keras convert every step's logs to Python
floats on the spot, a host sync per step).

Marked `backends`: `tests/test_backends.py` runs these under JAX and
PyTorch too, where Keras dispatches batch-end hooks asynchronously.
"""

import keras
import pytest
from keras.src.utils.python_utils import is_default

import keras_hybrid as kh
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

pytestmark = pytest.mark.backends


def test_callback_leaves_batch_end_hooks_to_keras():
    callback = kh.HybridPredictCallback("balanced")
    assert is_default(callback.on_train_batch_end)
    assert is_default(callback.on_batch_end)
    callbacks = keras.callbacks.CallbackList([callback])
    # TensorFlow never dispatches asynchronously; the others do unless a
    # callback needs every step's logs.
    assert callbacks._async_train == keras.src.backend.IS_THREAD_SAFE


def test_after_call_runs_once_per_train_function_call(classification_data):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    calls = []

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            after = callback.runner.after_call

            def counted():
                calls.append(callback.runner.controller.step)
                after()

            callback.runner.after_call = counted

    model.fit(x[:320], y[:320], batch_size=32, epochs=2, verbose=0,
              shuffle=False, callbacks=[callback, Spy()])
    assert calls == list(range(1, 21))
