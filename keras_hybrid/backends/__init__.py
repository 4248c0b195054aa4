"""Per-backend compiled step functions.

`get()` returns the module of the active Keras backend. Each module provides
`train_step(model, ...)` (the backend's `Model.train_step` arguments),
`make_dispatcher(model, plain)`, `make_phase_functions(model, accumulators,
deltas)` and `next_batch(iterator)`.
"""

import keras


def get():
    """Returns the step-function module of the active backend."""
    name = keras.backend.backend()
    if name == "tensorflow":
        from keras_hybrid.backends import tensorflow as module
    elif name == "jax":
        from keras_hybrid.backends import jax as module
    elif name == "torch":
        from keras_hybrid.backends import torch as module
    else:
        raise NotImplementedError(
            "keras_hybrid supports the TensorFlow, JAX and PyTorch backends. "
            f"Received: KERAS_BACKEND={name!r}"
        )
    return module


def compile_function(function):
    """Compiles a function of tensors (and captured variables) into one
    dispatch where the backend can: phase-boundary work (averages, drift,
    snapshots) would otherwise cost one eager op per variable."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True, autograph=False)
    return function
