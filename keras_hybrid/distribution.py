"""Which distributed set-ups the hybrid supports, and which process writes.

Supported: one process with several devices (TensorFlow `MirroredStrategy`,
JAX `keras.distribution.DataParallel`), and several JAX processes
(`keras.distribution.initialize` + `DataParallel` over every process's
devices). Under JAX the compiled steps see the global batch, so every
value the hybrid decides from (losses, gradient norms, forward checks) is
the same in every process, and each process takes the same decisions. Files
(checkpoints, the report) are written by process 0 only.

TensorFlow's `MultiWorkerMirroredStrategy` is refused before training:
Keras 3 `fit()` itself fails under it with more than one worker.
"""

import keras


def process_index():
    """The index of this process in a multi-process job (0 if alone)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    return 0


def is_writer():
    """Whether this process writes the run's files (process 0 does)."""
    return process_index() == 0


def check_supported(model):
    """Raises if `model` is set up for a distribution the hybrid cannot
    train with (called by `HybridModel.fit` before Keras' `fit()`).

    Args:
        model: the model about to be trained.

    Raises:
        ValueError: under TensorFlow's `MultiWorkerMirroredStrategy`.
    """
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    multi_worker = (
        tf.distribute.MultiWorkerMirroredStrategy,
        tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy,
    )
    strategy = model.distribute_strategy
    if isinstance(strategy, multi_worker):
        raise ValueError(
            "`MultiWorkerMirroredStrategy` is not supported (Keras 3 "
            "`fit()` fails under it with several workers). For several GPUs "
            "in one machine, use `tf.distribute.MirroredStrategy`; for "
            "several machines, use the JAX backend with "
            "`keras.distribution.initialize(...)` and "
            "`keras.distribution.DataParallel`. "
            f"Received: strategy={type(strategy).__name__}"
        )
