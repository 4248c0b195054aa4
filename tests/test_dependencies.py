"""The package works with only the active backend installed, and names the
extra to install when a needed one is missing. Missing packages are
simulated in a subprocess (`sys.modules[name] = None` makes the import
fail)."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(backend, missing, body):
    code = "import sys\n" + "".join(
        f"sys.modules[{name!r}] = None\n" for name in missing
    ) + textwrap.dedent(body)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True,
        text=True, timeout=300,
    )


TRAIN = """
import numpy as np
import keras
import keras_hybrid as kh
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
model = kh.HybridModel.wrap(keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(2)]))
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    from_logits=True))
callback = kh.HybridPredictCallback(dict(
    warmup_steps=2, full_steps=4, min_predict_steps=4, max_predict_steps=6,
    validation_samples=2, confidence_threshold=0.0))
model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
print("trained", callback.report()["training_summary"]["total_steps"])
"""


@pytest.mark.parametrize("backend,missing", [
    ("jax", ["tensorflow", "torch"]),
    ("torch", ["tensorflow", "jax"]),
])
def test_trains_with_only_the_active_backend(backend, missing):
    pytest.importorskip(backend)
    result = _run(backend, missing, TRAIN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 24" in result.stdout


def test_missing_backend_names_its_extra():
    result = _run("torch", ["torch"], "import keras_hybrid\n")
    assert result.returncode != 0
    assert ("ImportError: The Keras backend 'torch' (KERAS_BACKEND) needs "
            "`torch`, which is not installed. Install it with "
            '`pip install "keras-hybrid[torch]"`') in result.stderr


def test_saved_model_export_without_tensorflow_names_the_extra():
    pytest.importorskip("jax")
    result = _run("jax", ["tensorflow"], """
import keras
import keras_hybrid as kh
model = kh.HybridModel.wrap(keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(2)]))
try:
    model.export("unused_path")
except ImportError as e:
    print("ImportError:", e)
""")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("ImportError: Exporting a SavedModel needs `tensorflow`, which is "
            'not installed. Install it with `pip install '
            '"keras-hybrid[tensorflow]"`') in result.stdout
