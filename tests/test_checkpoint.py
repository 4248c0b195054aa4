"""Checkpoints: atomic, verified, exact resume; SavedModel export."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_hybrid as kh
from keras_hybrid.runner_state import runner_state
from keras_hybrid.serialization import clean_json
from tests.helpers import assert_same_weights
from tests.helpers import backend_is
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config
from tests.helpers import weights_of

pytestmark = pytest.mark.backends

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


def trained(x, y, **config):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[kh.HybridPredictCallback(eager_config(**config))])
    return model


def optimizer_values(model):
    return [np.array(v) for v in model.optimizer.variables]


def fresh_model():
    return compile_model(kh.HybridModel.wrap(build_mlp(1)))


def test_round_trip_is_exact(classification_data, tmp_path):
    x, y = classification_data
    model = trained(x, y)
    path = model.save_checkpoint(tmp_path / "c")
    assert sorted(os.listdir(path)) == [
        "config.yaml", "history.json", "manifest.json", "training_state.json",
        "variables.h5"]  # no runner after fit: it is detached
    other = fresh_model()
    state = other.load_checkpoint(path)
    assert state["step"] == 64
    assert_same_weights(weights_of(model), weights_of(other))
    assert_same_weights(optimizer_values(model), optimizer_values(other))
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_saving_over_an_existing_checkpoint_replaces_it(classification_data, tmp_path):
    x, y = classification_data
    model = trained(x, y)
    model.save_checkpoint(tmp_path / "c")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.save_checkpoint(tmp_path / "c")
    other = fresh_model()
    assert other.load_checkpoint(tmp_path / "c")["step"] == 128
    assert sorted(os.listdir(tmp_path)) == ["c"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupted_checkpoint_is_refused_and_nothing_loaded(
        classification_data, tmp_path, damage):
    x, y = classification_data
    path = trained(x, y).save_checkpoint(tmp_path / "c")
    target = os.path.join(path, "variables.h5")
    if damage == "truncate":
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) // 2)
        message = "does not match its checksum"
    elif damage == "flip":
        with open(target, "r+b") as f:
            f.seek(os.path.getsize(target) - 10)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        message = "does not match its checksum"
    elif damage == "delete":
        os.remove(target)
        message = "variables.h5 is missing"
    else:
        with open(os.path.join(path, "manifest.json"), "w") as f:
            f.write("{not json")
        message = "manifest is unreadable"
    other = fresh_model()
    other.optimizer.build(other.trainable_variables)
    before = weights_of(other)
    with pytest.raises(kh.CheckpointError, match=message):
        other.load_checkpoint(path)
    assert_same_weights(before, weights_of(other))
    with pytest.raises(kh.CheckpointError, match="no manifest.json"):
        other.load_checkpoint(tmp_path / "nothing")


def test_checkpoint_of_another_model_is_refused(classification_data, tmp_path):
    x, y = classification_data
    path = trained(x, y).save_checkpoint(tmp_path / "c")
    keras.utils.set_random_seed(0)
    other = compile_model(kh.HybridModel.wrap(keras.Sequential([
        keras.Input((20,)), keras.layers.Dense(16), keras.layers.Dense(10)])))
    before = weights_of(other)
    with pytest.raises(kh.CheckpointError, match="has shape"):
        other.load_checkpoint(path)
    assert_same_weights(before, weights_of(other))


def test_periodic_checkpoints_rotate(classification_data, tmp_path):
    x, y = classification_data
    directory = tmp_path / "ckpts"
    config = eager_config(checkpoint={"directory": str(directory),
                                      "save_interval": 10, "keep_last_n": 2})
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[kh.HybridPredictCallback(config)])
    names = sorted(os.listdir(directory))
    assert len(names) == 2 and names[-1] >= "ckpt-00000060"
    latest = kh.latest_checkpoint(directory)
    assert latest.endswith(names[-1])
    assert sorted(os.listdir(latest)) == [
        "config.yaml", "history.json", "manifest.json", "runner.h5",
        "runner.json", "training_state.json", "variables.h5"]
    assert kh.HybridConfig.from_yaml(os.path.join(latest, "config.yaml")) == config


def test_checkpoint_config_is_validated():
    with pytest.raises(ValueError, match="`checkpoint.directory` must be set"):
        kh.HybridConfig(checkpoint={"save_interval": 5})


def run_worker(*args):
    result = subprocess.run([sys.executable, WORKER, *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    return result


@pytest.mark.parametrize(
    "predict_mode, kill, resume, predictor",
    [("jump", "kill", "resume", "drift"),
     ("per_step", "kill_predict", "resume_predict", "drift"),
     ("jump", "kill_predict", "resume_predict", "linear"),
     ("per_step", "kill", "resume", "mlp"),
     ("jump", "kill", "resume", "drift-quiet"),
     ("jump", "kill", "resume", "drift-freeze")],
)
def test_resume_after_sigkill_is_bit_exact(tmp_path, predict_mode, kill, resume,
                                           predictor):
    full = run_worker("full", predict_mode, tmp_path, predictor)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run_worker(kill, predict_mode, tmp_path, predictor)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(tmp_path / f"{kill}.npz")
    resumed = run_worker(resume, predict_mode, tmp_path, predictor)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = np.load(tmp_path / "full.npz")
    b = np.load(tmp_path / f"{resume}.npz")
    assert len(a.files) == len(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    if predictor == "drift-quiet":
        # The weights train alike in fitting and quiet phases: the resumed
        # run's back-off must also match (restored counters).
        quiet = []
        for mode in ("full", resume):
            with open(tmp_path / f"{mode}.json") as f:
                quiet.append(json.load(f)["quiet_full_phases"])
        assert quiet[0] >= 3 and quiet[0] == quiet[1], quiet


LAYOUT1 = os.path.join(os.path.dirname(__file__), "data",
                       "checkpoints_layout1")


@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="the fixtures were written by TensorFlow")
@pytest.mark.parametrize(
    "fixture, target, predict_mode, resume, predictor",
    [("per_step_mid_predict", "mid", "per_step", "resume_predict", "drift"),
     ("quiet_step30", os.path.join("ckpts", "ckpt-00000030"), "jump",
      "resume", "drift-quiet")],
)
def test_checkpoint_of_the_first_layout_resumes(
    tmp_path, fixture, target, predict_mode, resume, predictor,
):
    """A checkpoint written before the runner's concepts became objects
    (their fields in the runner's section) loads into each object as it
    was saved and the run finishes from it."""
    source = os.path.join(LAYOUT1, fixture)
    with open(os.path.join(source, "runner.json")) as f:
        old = json.load(f)
    saved = old["runner"]
    with h5py.File(os.path.join(source, "runner.h5")) as f:
        old_arrays = {
            name: None if f[name].attrs["is_none"]
            else [f[name][str(i)][()] for i in range(len(f[name]))]
            for name in ("restore_point", "good_values", "shadow_per_step",
                         "shadow_mean")
        }
    restored = {}

    class Inspect(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored["state"] = runner_state(callback.runner)
            self.model.stop_training = True

    model = compile_model(kh.HybridModel.wrap(build_mlp(0, dropout=0.2)))
    model.load_checkpoint(source)
    callback = kh.HybridPredictCallback(
        kh.HybridConfig.from_yaml(os.path.join(source, "config.yaml")))
    x = np.zeros((64, 20), "float32")
    model.fit(x, np.zeros(64, "int32"), batch_size=32, epochs=3,
              verbose=0, callbacks=[callback, Inspect()])
    state, arrays = restored["state"]
    state = json.loads(json.dumps(clean_json(state)))
    assert state["recovery"] == {"good_step": saved["_good_step"],
                                 "alarm": saved["_phase_alarm"]}
    assert state["jump_check"] == {"loss_limit": saved["_loss_limit"]}
    assert state["quiet"] == {"quiet_left": saved["_quiet_left"],
                              "misses": saved["_misses"],
                              "window": saved["_window"]}
    assert state["shadow"] == {"contiguous": saved["_shadow_contiguous"],
                               "pending": old["shadow"]}
    assert state["runner"] == {k: saved[k] for k in state["runner"]}
    for name, values in old_arrays.items():
        assert (arrays[name] is None) == (values is None), name
        for a, b in zip(arrays[name] or [], values or []):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # The run goes on from it to its end.
    shutil.copytree(source, tmp_path / target)
    resumed = run_worker(resume, predict_mode, tmp_path, predictor)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    b = np.load(tmp_path / f"{resume}.npz")
    assert all(np.isfinite(b[name]).all() for name in b.files)


def test_export_serves_the_users_network_only(classification_data, tmp_path):
    x, y = classification_data
    model = trained(x, y)
    if backend_is("torch"):
        with pytest.raises(NotImplementedError, match="Received: KERAS_BACKEND='torch'"):
            model.export(str(tmp_path / "saved"), format="tf_saved_model")
        return
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        served.serve(tf.constant(x[:64])).numpy(),
        model.predict(x[:64], verbose=0), atol=1e-6)
    names = {v.name for v in served.variables}
    assert not any("hybrid_acc" in n or "hybrid_delta" in n for n in names)
    assert len(served.variables) == len(model.variables)


def test_export_with_optimizer(classification_data, tmp_path):
    x, y = classification_data
    model = trained(x, y)
    if backend_is("torch"):
        with pytest.raises(NotImplementedError, match="Received: KERAS_BACKEND='torch'"):
            model.export_with_optimizer(str(tmp_path / "saved"))
        return
    model.export_with_optimizer(str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        served.serve(tf.constant(x[:8])).numpy(),
        model.predict(x[:8], verbose=0), atol=1e-6)
    saved = [v.numpy() for v in served.optimizer_variables]
    assert_same_weights(saved, optimizer_values(model))


def test_backup_and_restore_compatibility(classification_data, tmp_path):
    x, y = classification_data

    class StopAtEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=64, epochs=4, verbose=0,
                  callbacks=[backup, kh.HybridPredictCallback(eager_config()),
                             StopAtEpoch()])
    assert model._hybrid_runner is None  # detached despite the exception
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    history = model.fit(x, y, batch_size=64, epochs=4, verbose=0,
                        callbacks=[backup, callback])
    assert len(history.history["loss"]) == 2  # resumed at epoch 2 of 4
    assert callback.report()["training_summary"]["total_steps"] == 64
