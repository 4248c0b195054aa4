"""Every backend and more than one device.

The backend is fixed per process, so the other backends run in
subprocesses: the tests marked `backends` (every phase, both PREDICT modes,
rollback and abort, checkpoints and resume, the step inspections) under
`KERAS_BACKEND=jax` and `torch`; and the distribution workers
(`tests/distributed_worker.py`), which configure their devices before the
backend starts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import backend_is

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

only_from_tensorflow = pytest.mark.skipif(
    not backend_is("tensorflow"),
    reason="started from the default (TensorFlow) run only",
)


def run(args, backend=None, timeout=2400):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


_SUBSETS = {}


def _start_subsets(tmp_dir):
    """Starts the JAX and PyTorch subsets side by side (once): on a
    2-core machine the two processes overlap their Python-bound stretches,
    so the pair takes less wall-clock than one after the other."""
    if not _SUBSETS:
        for backend in ("jax", "torch"):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                       KERAS_BACKEND=backend)
            out = open(os.path.join(tmp_dir, f"{backend}.out"), "w+")
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-m", "backends",
                 "-p", "no:cacheprovider", "-W", "ignore", "tests"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                text=True)
            _SUBSETS[backend] = (process, out)
    return _SUBSETS


@only_from_tensorflow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_subset_passes(backend, tmp_path_factory):
    process, out = _start_subsets(str(tmp_path_factory.getbasetemp()))[
        backend]
    try:
        returncode = process.wait(timeout=2400)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    out.seek(0)
    text = out.read()
    summary = text.strip().splitlines()[-1:] or [""]
    assert returncode == 0, text[-9000:]
    assert " passed" in summary[0] and "failed" not in summary[0], summary


def run_worker(kind, predict_mode):
    result = run(["tests/distributed_worker.py", kind, predict_mode])
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@only_from_tensorflow
@pytest.mark.parametrize("kind", ["mirrored", "data_parallel"])
@pytest.mark.parametrize("predict_mode", ["per_step", "jump"])
def test_replicas_stay_identical(kind, predict_mode):
    out = run_worker(kind, predict_mode)
    s = out["summary"]
    assert out["replicas"] == 2 and out["copies"] == 2
    # Predicted deltas (or jumps), micro-corrections and a rollback all ran:
    assert s["predictions_accepted"] >= 1 and s["steps_by_phase"]["PREDICT"] > 0
    assert s["corrections"] >= 1
    assert any(e.startswith("RollbackAndRetry") for e in out["events"]), out
    # ... and every copy of every variable is the same on both replicas.
    assert out["finite"]
    assert out["max_replica_difference"] == 0.0
    # The model learned (chance level is ln 10 = 2.3): each update was
    # applied once, not once per replica.
    assert out["eval_loss"] < 1.5, out


@only_from_tensorflow
def test_rejected_jumps_retrain_identically_on_every_replica():
    """A rejected jump's check batches (one per replica each) are retrained
    through the FULL step: every replica applies the same updates."""
    out = run_worker("mirrored", "jump-rejected")
    s = out["summary"]
    assert out["replicas"] == 2 and out["copies"] == 2
    assert s["predictions_rejected"] >= 1
    by_phase = s["steps_by_phase"]
    assert s["backward_passes"] > by_phase["FULL"] + by_phase["WARMUP"]
    assert out["finite"]
    assert out["max_replica_difference"] == 0.0
    assert out["eval_loss"] < 1.5, out



@only_from_tensorflow
@pytest.mark.parametrize("kind", ["mirrored", "data_parallel"])
def test_freeze_schedule_on_two_replicas(kind):
    """A frozen group stays put and the replicas agree under
    MirroredStrategy and JAX's DataParallel."""
    result = run(["tests/freeze_worker.py", kind])
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["frozen_unchanged"] and out["replicas_identical"], out
    if kind == "mirrored":
        assert out["replica_variables_compared"] > 0, out
    assert [e["frozen_groups"] for e in out["events"]] == [2, 1]
    assert out["loss"] < 0.6, out  # it learned (chance: ln 2 = 0.69)


@only_from_tensorflow
def test_layerwise_decisions_are_the_same_on_every_backend():
    """The `finetune` preset's settle checks, from the same NumPy weights
    and batches, decide the same (both ways) and freeze at the same steps
    on TensorFlow, JAX and PyTorch; their loss margins agree to float
    noise."""
    outs = {}
    for backend in ("tensorflow", "jax", "torch"):
        result = run(["tests/layerwise_worker.py"], backend=backend,
                     timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        outs[backend] = json.loads(result.stdout.strip().splitlines()[-1])
        assert outs[backend]["backend"] == backend
    reference = outs["tensorflow"]
    settled = [d[2] for d in reference["decisions"]]
    assert True in settled and False in settled, reference
    assert reference["events"], reference  # groups froze
    for backend in ("jax", "torch"):
        out = outs[backend]
        assert out["decisions"] == reference["decisions"], outs
        assert out["events"] == reference["events"], outs
        np.testing.assert_allclose(out["margins"], reference["margins"],
                                   atol=1e-4)
        np.testing.assert_allclose(out["final_loss"],
                                   reference["final_loss"], rtol=1e-4)
