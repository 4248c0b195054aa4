"""A pytest plugin that runs Keras's own tests through keras-hybrid.

Loaded with `-p tests.keras_compat.plugin` in a pytest run over test files
shipped inside the installed `keras` package (see `test_keras_suite.py`).
While it is active, every `fit()` of a plain Keras model is retrofitted: the
model is wrapped with `HybridModel.wrap`, the wrapper is compiled with the
arguments of the test's own `compile()` call (and the very same optimizer
object), and a `HybridPredictCallback` with tiny phases is added to the
callbacks.
The test's assertions then check keras-hybrid against Keras's expectations.

The known differences are listed in `expectations.py`: each becomes an
explicit expected failure (strict: a difference that disappears fails the
run, except where it depends on the test's random data) or a skip, with
its reason. Nothing is dropped silently. Every test starts from the same
random seed, so a run's outcomes do not change from one run to the next.

If the environment variable `KERAS_COMPAT_REPORT` names a file, the plugin
writes a JSON summary there at the end: how many `fit()` calls were
retrofitted and how many steps ran in each phase.
"""

import collections
import importlib.util
import inspect
import json
import os
import sys
import types
import weakref

import pytest

from tests.keras_compat import expectations

_ORIGINAL = {}
_COUNTS = collections.Counter()
# Per model: its last `compile()` arguments and its compiled wrapper. Kept
# outside the model: a layer attribute would be tracked by Keras (and the
# wrapper, which tracks the model, would become its sublayer).
_COMPILED = weakref.WeakKeyDictionary()

# Tiny phases (`tests.helpers.eager_config` with shorter lengths): WARMUP 1
# step, FULL 2, PREDICT 2-3 (a one-batch forward check), CORRECT 1, so that
# even Keras's short fits (a few batches) reach PREDICT. The hybrid's own
# entries stay out of the logs and History (`log_to_progbar=False`,
# `log_to_history=False`): Keras's tests compare the exact log and History
# keys, and with the defaults the four extra History entries are a
# documented difference.
TINY_PHASES = dict(
    warmup_steps=1,
    full_steps=2,
    min_predict_steps=2,
    max_predict_steps=3,
    validation_samples=1,
    metrics={"log_to_progbar": False, "log_to_history": False},
)


def _hybrid_config():
    from tests.helpers import eager_config

    return eager_config(**TINY_PHASES)


# ------------------------------------------------------------ the retrofit
def _recording_compile(self, *args, **kwargs):
    """`Model.compile` that remembers its arguments for the wrapper."""
    result = _ORIGINAL["compile"](self, *args, **kwargs)
    bound = _ORIGINAL["compile_signature"].bind(self, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self")
    _COMPILED[self] = [arguments, None]
    return result


def _wrapper_for(model):
    """The model's wrapper, compiled like the model (created once per
    `compile()` of the model, so optimizer state carries over between
    `fit()` calls exactly as it does without the wrapper)."""
    import keras_hybrid as kh

    entry = _COMPILED[model]
    if entry[1] is None:
        arguments = dict(entry[0])
        # The optimizer object the model's `compile()` made (or was given).
        arguments["optimizer"] = model.optimizer
        wrapper = kh.HybridModel.wrap(model)
        wrapper.compile(**arguments)
        entry[1] = wrapper
    return entry[1]


def _retrofitted_fit(self, *args, **kwargs):
    from keras_hybrid import HybridModel
    from keras_hybrid import HybridPredictCallback

    original = _ORIGINAL["fit"]
    if isinstance(self, HybridModel) or self not in _COMPILED:
        return original(self, *args, **kwargs)
    bound = _ORIGINAL["fit_signature"].bind(self, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self")
    callback = HybridPredictCallback(_hybrid_config())
    arguments["callbacks"] = list(arguments.get("callbacks") or []) + [
        callback
    ]
    wrapper = _wrapper_for(self)
    _COUNTS["retrofitted_fits"] += 1
    try:
        history = wrapper.fit(**arguments)
    finally:
        runner = callback.runner
        if runner is not None:
            for phase, steps in runner.stats.steps.items():
                _COUNTS[f"steps_{phase}"] += steps
            _COUNTS["backward_passes"] += runner.stats.backward
            _COUNTS["predict_phases"] += runner.stats.predictions_attempted
        self.stop_training = wrapper.stop_training
    self.history = history
    return history


def _install():
    import keras
    from keras.src.trainers import trainer

    _ORIGINAL["compile"] = trainer.Trainer.compile
    _ORIGINAL["compile_signature"] = inspect.signature(trainer.Trainer.compile)
    _ORIGINAL["fit"] = keras.Model.fit
    _ORIGINAL["fit_signature"] = inspect.signature(keras.Model.fit)
    trainer.Trainer.compile = _recording_compile
    keras.Model.fit = _retrofitted_fit


# ------------------------------------------------------- pytest hooks
def _skip_if_backend(given_backend, reason):
    import keras

    return pytest.mark.skipif(
        keras.backend.backend() == given_backend, reason=reason
    )


def pytest_configure(config):
    for marker in (
        "requires_trainable_backend: Keras's marker (every backend here "
        "trains)",
        "multi_device: Keras's marker (needs more than one device)",
    ):
        config.addinivalue_line("markers", marker)
    # Keras's repository has a root `conftest.py` some test files import
    # helpers from; the installed package does not ship it.
    if "conftest" not in sys.modules:
        shim = types.ModuleType("conftest")
        shim.skip_if_backend = _skip_if_backend
        sys.modules["conftest"] = shim
    _install()


def _missing(module):
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # its parent package is missing
        return True


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    for item in items:
        key = expectations.key(item)
        for module, reason in expectations.OPTIONAL_PACKAGES.get(
            item.path.name, ()
        ):
            if _missing(module):
                item.add_marker(pytest.mark.skip(reason=reason))
        if item.get_closest_marker("multi_device"):
            item.add_marker(pytest.mark.skip(
                reason="needs more than one device"
            ))
        found = expectations.lookup(key, backend)
        if found is None:
            continue
        kind, reason = found
        if kind == "skip":
            item.add_marker(pytest.mark.skip(reason=reason))
        else:
            item.add_marker(pytest.mark.xfail(
                reason=reason, strict=kind == "xfail"
            ))


def pytest_runtest_setup(item):
    # Keras's tests draw their data from the global NumPy generator without
    # a seed; whether the hybrid skips a step depends on that data.
    import keras

    keras.utils.set_random_seed(1337)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("KERAS_COMPAT_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(_COUNTS), f)
