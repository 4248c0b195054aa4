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


def global_random_state():
    """The backend's global random generator state, where Keras draws from
    one (PyTorch: unseeded dropout masks and the DataLoader's base seed);
    `None` elsewhere (TensorFlow and JAX keep theirs in seed variables)."""
    if keras.backend.backend() != "torch":
        return None
    import torch

    return torch.get_rng_state().tolist()


def set_global_random_state(state):
    """Restores `global_random_state()` output (`None`: nothing to do)."""
    if state is None or keras.backend.backend() != "torch":
        return
    import torch

    torch.set_rng_state(torch.tensor(state, dtype=torch.uint8))
