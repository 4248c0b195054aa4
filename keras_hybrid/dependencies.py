"""Optional dependencies: which extra installs what, and a clear error when
one is missing.

The package depends on Keras, not on a backend: TensorFlow, JAX and PyTorch
come with the user's environment or with the extras `[tensorflow]`,
`[tensorflow-cpu]`, `[jax]` and `[torch]`.
"""

import importlib
import os
import sys

# The extra that installs each optional module.
EXTRAS = {
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
    "matplotlib": "bench",
    "mnist1d": "bench",
}


def missing_message(module, purpose):
    """The message of the error raised when `module` is not installed.

    Args:
        module: the top-level module name, e.g. `"tensorflow"`.
        purpose: what needs it, e.g. `"Exporting a SavedModel"`.

    Returns:
        A one-paragraph string naming the pip extra that installs it.
    """
    extra = EXTRAS.get(module, module)
    cpu = (
        "; `tensorflow-cpu` is the smaller CPU-only build"
        if module == "tensorflow" else ""
    )
    return (
        f"{purpose} needs `{module}`, which is not installed. Install it "
        f'with `pip install "keras-hybrid[{extra}]"` (or `pip install '
        f"{module}`{cpu}), or install your own build of {module} (for "
        "example a GPU one) in this environment."
    )


def require(module, purpose):
    """Imports and returns `module`, or raises an `ImportError` naming the
    extra that installs it.

    Args:
        module: the module to import, e.g. `"tensorflow"`.
        purpose: what needs it, used in the message.

    Returns:
        The imported module.

    Raises:
        ImportError: `module` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(missing_message(module.split(".")[0], purpose)) from e


def import_keras():
    """Imports Keras; if the backend it selects is not installed, raises an
    `ImportError` naming the extra instead of Keras' own traceback.

    In the `keras-hybrid` command, TensorFlow's start-up lines are kept out
    of its output (see `keras_hybrid.tf_startup`).

    Returns:
        The `keras` module.
    """
    from keras_hybrid.tf_startup import quiet_cli_startup

    try:
        with quiet_cli_startup():
            return importlib.import_module("keras")
    except ImportError as e:
        backend = _selected_backend()
        missing = (getattr(e, "name", None) or "").split(".")[0]
        if backend in EXTRAS and missing == backend:
            raise ImportError(
                missing_message(
                    backend, f"The Keras backend {backend!r} (KERAS_BACKEND)"
                )
            ) from e
        raise


def _selected_backend():
    """The backend Keras was about to load (its config module survives a
    failed `import keras`), else `KERAS_BACKEND`, else TensorFlow."""
    config = sys.modules.get("keras.src.backend.config")
    if config is not None and hasattr(config, "backend"):
        return config.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")
