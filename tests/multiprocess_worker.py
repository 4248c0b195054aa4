"""One process of the multi-process JAX tests (run as a script, 2 at once).

Usage: python tests/multiprocess_worker.py PROCESS_ID PORT PREDICT_MODE RUN DIR
    [CONFIG_JSON]

Joins a 2-process JAX job whose coordinator listens on 127.0.0.1:PORT
(`keras.distribution.initialize`), with 2 CPU devices per process and
`keras.distribution.DataParallel` over the 4 devices of both processes.
The global `tf.data` pipeline is sharded by Keras: each process reads half of
every global batch. Process 1's half has noisy labels (its local losses are
much higher than process 0's) and, in one batch, NaN inputs (a local NaN
that only the global loss shows to process 0): a decision taken from a
process-local value would differ between the processes.

RUN: `full` (uninterrupted; a checkpoint every 10 steps, and the report) or
`resume` (a new job: loads the `full` job's checkpoint of step 40, in the
middle of an epoch and of a PREDICT phase, and finishes). Writes
DIR/RUN-PROCESS_ID.json: the report's phases, events and jumps, a hash of
every variable, this process's local loss, and the files it renamed into
place under DIR (checkpoints and the report are written that way).
CONFIG_JSON: more `HybridConfig` fields (e.g. another predictor).
"""

import hashlib
import json
import os
import sys

PROCESS_ID, PORT, PREDICT_MODE, RUN, DIRECTORY = sys.argv[1:6]
DIRECTORY = os.path.abspath(DIRECTORY)
OVERRIDES = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
PROCESS_ID = int(PROCESS_ID)
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402

keras.distribution.initialize(
    job_addresses=f"127.0.0.1:{PORT}", num_processes=2, process_id=PROCESS_ID
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_hybrid as kh  # noqa: E402
from tests.helpers import build_mlp  # noqa: E402
from tests.helpers import compile_model  # noqa: E402
from tests.helpers import eager_config  # noqa: E402

WRITES = []


def _audit(event, args):
    """Records every file or directory renamed into place under DIRECTORY
    (checkpoints and the report are written to a temporary name, then
    renamed), whatever code does it."""
    if event == "os.rename":
        target = os.path.abspath(os.fspath(args[1]))
        if target.startswith(DIRECTORY + os.sep):
            WRITES.append(os.path.relpath(target, DIRECTORY))


sys.addaudithook(_audit)

GLOBAL_BATCH = 64
RESUME_STEP = 40
POISONED_BATCH = 20


def global_data():
    """The global arrays; in every global batch, the second half (process
    1's shard) has random labels; one of those halves has NaN inputs."""
    rng = np.random.default_rng(0)
    n = 32 * GLOBAL_BATCH
    x = rng.normal(size=(n, 20)).astype("float32")
    w = rng.normal(size=(20, 10)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(n, 10)), axis=1)
    noisy = (np.arange(n) % GLOBAL_BATCH) >= GLOBAL_BATCH // 2
    y[noisy] = rng.integers(0, 10, size=int(noisy.sum()))
    start = POISONED_BATCH * GLOBAL_BATCH + GLOBAL_BATCH // 2
    x[start:start + 8] = np.nan
    return x, y.astype("int32")


def dataset():
    return tf.data.Dataset.from_tensor_slices(global_data()).batch(
        GLOBAL_BATCH
    )


def config(periodic):
    return eager_config(
        predict_mode=PREDICT_MODE,
        correction_interval=3,
        divergence_threshold=50.0,
        loss_tolerance=0.0,
        checkpoint={
            "directory": os.path.join(DIRECTORY, "ckpts") if periodic
            else None,
            "save_interval": 10 if periodic else 0,
            "keep_last_n": 10,
        },
        metrics={
            "report_path": os.path.join(DIRECTORY, f"report-{RUN}.json")
        },
        **OVERRIDES,
    )


def variables_hash(model):
    """A hash of every model and optimizer variable, and whether the copies
    on this process's devices are all the same."""
    digest = hashlib.sha256()
    same = True
    for variable in list(model.variables) + list(model.optimizer.variables):
        copies = [np.asarray(s.data)
                  for s in variable.value.addressable_shards]
        same = same and all(np.array_equal(c, copies[0])
                            for c in copies[1:])
        digest.update(np.ascontiguousarray(copies[0]).tobytes())
    return digest.hexdigest(), same and len(copies) == 2


def local_losses(model, distribution):
    """Mean loss of this process's clean local shards (final weights), by
    a NumPy forward pass of the 2-layer network, and whether the local
    shards hold a NaN."""
    w1, b1, w2, b2 = [keras.ops.convert_to_numpy(v)
                      for v in model.trainable_variables]
    losses, has_nan = [], False
    for x, y in distribution.distribute_dataset(dataset()).as_numpy_iterator():
        if np.isnan(x).any():
            has_nan = True
            continue
        logits = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        losses.append(float(-logp[np.arange(len(y)), y].mean()))
    return float(np.mean(losses)), has_nan


def main():
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()
    )
    keras.distribution.set_distribution(distribution)
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    if RUN == "resume":
        model.load_checkpoint(
            os.path.join(DIRECTORY, "ckpts", f"ckpt-{RESUME_STEP:08d}")
        )
    callback = kh.HybridPredictCallback(config(periodic=RUN != "resume"))
    model.fit(dataset(), epochs=3, verbose=0, callbacks=[callback])
    report = callback.report()
    local_loss, local_nan = local_losses(model, distribution)
    digest, same = variables_hash(model)
    result = {
        "process_count": jax.process_count(),
        "devices": len(distribution.device_mesh.devices.flatten()),
        "phases": report["phases"],
        "events": report["divergence_events"],
        "jumps": report["jumps"],
        "summary": {k: v for k, v in report["training_summary"].items()
                    if k != "wall_time_s"},
        "hash": digest,
        "local_copies_identical": same,
        "finite": all(np.isfinite(keras.ops.convert_to_numpy(v)).all()
                      for v in model.variables),
        "local_loss": local_loss,
        "local_nan": local_nan,
        "writes": WRITES,
    }
    with open(os.path.join(DIRECTORY, f"{RUN}-{PROCESS_ID}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
