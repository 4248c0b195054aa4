"""Several processes: a 2-process JAX job on loopback, and the refusal of
TensorFlow's `MultiWorkerMirroredStrategy`.

The JAX job (`tests/multiprocess_worker.py`, 2 processes x 2 CPU devices,
`keras.distribution.DataParallel` over all 4) trains a wrapped model with
prediction, a rejected prediction, a rollback and micro-corrections, on data
whose per-process halves differ (noisy labels and a NaN batch in process 1's
half only). Run alone with `pytest -m multiprocess`.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.multiprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multiprocess_worker.py")
RESUME_STEP = 40  # the worker's
JOB_TIMEOUT_S = 180


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(run, predict_mode, directory):
    """Runs both processes of one job; always ends them. Returns their
    results (dicts written by the worker)."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT)
    port = free_port()
    procs = []
    try:
        for process_id in (0, 1):
            log = open(directory / f"log-{run}-{process_id}.txt", "w")
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, str(process_id), str(port),
                 predict_mode, run, str(directory)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))
            log.close()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        hung = True
    else:
        hung = False
    finally:
        # A process blocked in a collective ignores SIGTERM.
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    logs = "\n".join((directory / f"log-{run}-{i}.txt").read_text()[-3000:]
                     for i in (0, 1))
    # Processes that took different decisions run different compiled
    # steps and wait for each other in a collective forever.
    assert not hung, f"The job did not end in {JOB_TIMEOUT_S} s.\n{logs}"
    assert [p.returncode for p in procs] == [0, 0], logs
    return [json.loads((directory / f"{run}-{i}.json").read_text())
            for i in (0, 1)]


@pytest.fixture(scope="module", params=["jump", "per_step"])
def job(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    full = run_job("full", request.param, directory)
    resumed = run_job("resume", request.param, directory)
    return {"mode": request.param, "dir": directory, "full": full,
            "resume": resumed}


def test_job_spans_both_processes(job):
    for result in job["full"]:
        assert result["process_count"] == 2 and result["devices"] == 4


def test_same_decisions_at_the_same_steps(job):
    p0, p1 = job["full"]
    for key in ("phases", "events", "jumps", "summary"):
        assert p0[key] == p1[key], key
    s = p0["summary"]
    assert s["predictions_accepted"] >= 1 and s["steps_by_phase"]["PREDICT"] > 0
    assert s["predictions_rejected"] >= 1
    assert s["corrections"] >= 1
    outcomes = [e["outcome"] for e in p0["events"]]
    assert any(o.startswith("RollbackAndRetry") for o in outcomes), outcomes
    rejected = {"jump": "forward_check", "per_step": "non_finite_loss"}
    assert any(e["signal"] == rejected[job["mode"]] for e in p0["events"])


def test_decisions_are_global_though_local_losses_differ(job):
    p0, p1 = job["full"]
    # Each process's own half of the data: process 1's has noisy labels and
    # the NaN inputs; a decision taken from a local loss would differ.
    assert p1["local_loss"] - p0["local_loss"] > 0.5, (p0, p1)
    assert not p0["local_nan"] and p1["local_nan"]
    # ... yet process 0 rolled back for process 1's NaN, at the same step.
    steps = [e["step"] for e in p0["events"]
             if e["outcome"].startswith("RollbackAndRetry")]
    assert steps and steps == [
        e["step"] for e in p1["events"]
        if e["outcome"].startswith("RollbackAndRetry")
    ]


def test_variables_identical_in_every_process(job):
    p0, p1 = job["full"]
    assert p0["finite"] and p1["finite"]
    assert p0["local_copies_identical"] and p1["local_copies_identical"]
    assert p0["hash"] == p1["hash"]


def test_checkpoints_and_report_written_once_by_process_0(job):
    p0, p1 = job["full"]
    directory = job["dir"]
    assert p1["writes"] == []
    checkpoints = sorted(os.listdir(directory / "ckpts"))
    assert p0["writes"] == [f"ckpts/{c}" for c in checkpoints] + [
        "report-full.json"]
    assert len(checkpoints) >= 8 and f"ckpt-{RESUME_STEP:08d}" in checkpoints
    report = json.loads((directory / "report-full.json").read_text())
    assert report["phases"] == p0["phases"]
    assert job["resume"][1]["writes"] == []
    assert job["resume"][0]["writes"] == ["report-resume.json"]


def test_restarted_job_resumes_bit_exactly(job):
    full, resumed = job["full"], job["resume"]
    state = json.loads((job["dir"] / "ckpts" / f"ckpt-{RESUME_STEP:08d}" /
                        "training_state.json").read_text())
    # Resumed in the middle of an epoch and of a PREDICT phase.
    assert state["phase"] == "PREDICT" and state["phase_step"] > 0, state
    assert state["batch_in_epoch"] > 0, state
    for process_id in (0, 1):
        assert resumed[process_id]["hash"] == full[0]["hash"]
        for key in ("phases", "events", "jumps"):
            assert resumed[process_id][key] == full[0][key], key


MULTI_WORKER_SCRIPT = """
import json, numpy as np, tensorflow as tf, keras, keras_hybrid as kh
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = kh.HybridModel.wrap(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile(optimizer="sgd", loss="mse")
x = np.zeros((8, 4), "float32")
try:
    model.fit(x, x[:, :2], verbose=0, callbacks=[kh.HybridPredictCallback()])
except ValueError as e:
    print(json.dumps({"error": str(e),
                      "steps": int(model.optimizer.iterations.numpy())}))
"""


def test_multi_worker_mirrored_strategy_is_refused_before_training():
    # A single worker (no TF_CONFIG) is enough to construct the strategy;
    # a subprocess keeps its collective set-up out of this one.
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", MULTI_WORKER_SCRIPT], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["steps"] == 0  # refused before the first step
    error = out["error"]
    assert error.startswith("`MultiWorkerMirroredStrategy` is not supported")
    assert "`tf.distribute.MirroredStrategy`" in error
    assert "`keras.distribution.initialize(...)`" in error
    assert "Received: strategy=" in error
