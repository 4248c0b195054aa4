"""Keras's own tests, run with every `fit()` going through keras-hybrid.

Each test below runs a set of the test files shipped inside the installed
`keras` package in a pytest subprocess with the retrofitting plugin
(`plugin.py`: `HybridModel.wrap`, the test's own compile arguments and
optimizer, a `HybridPredictCallback` with tiny phases) under one backend.
Documented differences are expected failures (`expectations.py`): strict,
except the few that depend on the test's random data.

The file sets fit the CI budget (about five minutes on two cores): under
TensorFlow the callback tests and the `Model`/`Sequential` tests; under JAX
and PyTorch the `Model`/`Sequential` tests. Run them alone with
`python -m pytest -m keras_compat tests`, or any Keras test file by hand:

```
KERAS_BACKEND=torch python -m pytest -p tests.keras_compat.plugin \\
    -p no:cacheprovider "$(python -c 'import keras.src, os; \\
    print(os.path.dirname(keras.src.__file__))')/callbacks"
```
"""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

from tests.helpers import backend_is
from tests.keras_compat import expectations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)
)))
KERAS_SRC = os.path.dirname(keras.src.__file__)

MODEL_TESTS = ("models/model_test.py", "models/sequential_test.py")
SUITES = {
    "tensorflow": ("callbacks",) + MODEL_TESTS,
    "jax": MODEL_TESTS,
    "torch": MODEL_TESTS,
}

pytestmark = [
    pytest.mark.keras_compat,
    pytest.mark.skipif(
        not backend_is("tensorflow"),
        reason="started from the default (TensorFlow) run only",
    ),
]


def run_suite(backend, tmp_path):
    """Runs the backend's file set retrofitted; returns (result, counts)."""
    report = tmp_path / "report.json"
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    env = dict(
        os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_COMPAT_REPORT=str(report), PYTHONDONTWRITEBYTECODE="1",
    )
    paths = [os.path.join(KERAS_SRC, name) for name in SUITES[backend]]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEX", "-p", "no:cacheprovider",
         "-W", "ignore::DeprecationWarning", "-c", str(ini),
         f"--rootdir={KERAS_SRC}", "-p", "tests.keras_compat.plugin", *paths],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    counts = json.loads(report.read_text()) if report.exists() else {}
    return result, counts


def outcome_counts(stdout):
    """`{"passed": n, "failed": n, ...}` from pytest's summary line."""
    lines = [l for l in stdout.strip().splitlines() if " in " in l]
    found = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|"
                       r"xpassed)", lines[-1] if lines else "")
    return {kind: int(n) for n, kind in found}


def unexpected_passes(stdout):
    """Expectation keys of the tests pytest's `-rX` summary lists."""
    names = re.findall(r"^XPASS \S*?([\w.]+\.py::\S+)", stdout, re.M)
    return [name.split("/")[-1] for name in names]


@pytest.mark.parametrize("backend", sorted(SUITES))
def test_keras_tests_pass_retrofitted(backend, tmp_path):
    result, counts = run_suite(backend, tmp_path)
    outcomes = outcome_counts(result.stdout)
    assert result.returncode == 0, (
        result.stdout[-8000:] + result.stderr[-3000:]
    )
    assert not outcomes.get("failed"), outcomes
    # Only a difference that depends on the test's random data may pass.
    unexpected = [
        name for name in unexpected_passes(result.stdout)
        if (expectations.lookup(name, backend) or ("",))[0] != "xfail_data"
    ]
    assert not unexpected, unexpected
    # The retrofit really ran: Keras's tests trained through the wrapper,
    # and the tiny phases reached PREDICT many times.
    assert outcomes.get("passed", 0) >= 80, outcomes
    assert counts["retrofitted_fits"] >= 40, counts
    assert counts["predict_phases"] >= 20, counts
    assert counts["backward_passes"] < (
        counts["steps_WARMUP"] + counts["steps_FULL"]
        + counts["steps_PREDICT"] + counts.get("steps_CORRECT", 0)
    ), counts
