"""Worker process of the resume tests (run as a script).

Usage: python tests/resume_worker.py MODE PREDICT_MODE DIR [PREDICTOR]

MODE: `full` (uninterrupted), `kill` (periodic checkpoints, SIGKILL at step
37), `kill_predict` (checkpoint in the middle of a PREDICT phase, then
SIGKILL), `resume` (load the newest checkpoint and finish), `resume_predict`
(load the mid-PREDICT checkpoint and finish). Writes DIR/MODE.npz with the
final model and optimizer variables.
"""

import json
import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402
from keras_hybrid.phases import Phase  # noqa: E402
from tests.helpers import build_mlp  # noqa: E402
from tests.helpers import compile_model  # noqa: E402
from tests.helpers import eager_config  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


class Killer(keras.callbacks.Callback):
    def __init__(self, mode, directory):
        super().__init__()
        self.mode, self.directory = mode, directory

    def on_train_batch_end(self, batch, logs=None):
        runner = self.model._hybrid_runner
        step = runner.controller.step
        if self.mode == "kill" and step == 37:
            os.kill(os.getpid(), signal.SIGKILL)
        if (self.mode == "kill_predict" and step > 20
                and runner.controller.phase == Phase.PREDICT
                and runner.controller.phase_step >= 2
                and runner.safe_to_checkpoint):
            self.model.save_checkpoint(os.path.join(self.directory, "mid"))
            os.kill(os.getpid(), signal.SIGKILL)


def main(mode, predict_mode, directory, predictor="drift"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 20)).astype("float32")
    w = rng.normal(size=(20, 10)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(1024, 10)), axis=1)
    periodic = mode in ("kill", "resume")
    extra = {}
    if predictor == "drift-freeze":
        # The head alone, then everything: the kill at step 37 falls
        # between the schedule's events (steps 0 and 50), which the resumed
        # run must keep, with the frozen depth's own compiled step.
        predictor = "drift"
        extra = dict(freeze={"events": [[0, -1], [50, 0]]})
    if predictor == "drift-quiet":
        # Prediction never pays: the run backs off to quiet FULL phases,
        # whose counters the checkpoints must carry.
        predictor = "drift"
        extra = dict(max_quiet_phases=2, enable_prediction=False)
    config = eager_config(
        predict_mode=predict_mode,
        divergence_threshold=50.0,
        predictor={"type": predictor},
        **extra,
        checkpoint={
            "directory": os.path.join(directory, "ckpts") if periodic
            else None,
            "save_interval": 10 if periodic else 0,
            "keep_last_n": 2,
        },
    )
    model = compile_model(kh.HybridModel.wrap(build_mlp(0, dropout=0.2)))
    keras.utils.set_random_seed(0)
    if mode == "resume":
        model.load_checkpoint(
            kh.latest_checkpoint(os.path.join(directory, "ckpts"))
        )
    if mode == "resume_predict":
        state = model.load_checkpoint(os.path.join(directory, "mid"))
        assert state["phase"] == "PREDICT", state
    callback = kh.HybridPredictCallback(config)
    model.fit(
        x, y, batch_size=32, epochs=3, shuffle=False, verbose=0,
        callbacks=[callback, Killer(mode, directory)],
    )
    with open(os.path.join(directory, f"{mode}.json"), "w") as f:
        json.dump(callback.report()["phase_statistics"], f)
    np.savez(
        os.path.join(directory, f"{mode}.npz"),
        *[keras.ops.convert_to_numpy(v) for v in model.variables],
        *[keras.ops.convert_to_numpy(v) for v in model.optimizer.variables],
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
