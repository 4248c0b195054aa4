"""Resumable checkpoints: written atomically, verified before loading.

A checkpoint is a directory:

```
variables.h5          model variables (weights, RNG seeds), optimizer and
                      metric variables, by index, with their paths
runner.json/.h5       the hybrid runner: phase, predictor, monitor, report
                      statistics and trajectory tensors (optional)
training_state.json   step, epoch, batch in epoch, loss, phase, phase step,
                      confidence, Python, NumPy and PyTorch random state
history.json          the metrics logged per epoch so far
config.yaml           the HybridConfig
manifest.json         format version and the SHA-256 of every file above
```

It is written into a temporary directory beside the target and renamed into
place, so a crash never leaves a half-written checkpoint under the target
name. `load_checkpoint` checks the manifest, every checksum and every shape
before it assigns anything: a truncated or corrupted checkpoint is refused
with a `CheckpointError` and the model is left untouched.
"""

import hashlib
import json
import os
import random
import re
import shutil
import tempfile

import h5py
import keras
import numpy as np

from keras_hybrid import backends
from keras_hybrid import distribution
from keras_hybrid.divergence import HybridTrainingError
from keras_hybrid.serialization import clean_json

FORMAT_VERSION = 1
_FILES = ("variables.h5", "training_state.json", "history.json",
          "config.yaml")
_RUNNER_FILES = ("runner.json", "runner.h5")
_NAME = re.compile(r"^ckpt-(\d{8})$")


class CheckpointError(HybridTrainingError, ValueError):
    """A checkpoint is missing, corrupted or does not fit the model."""


# ================================================================== save
def save_checkpoint(model, path, runner=None, include_predictor=True,
                    history=None, config=None):
    """Writes a checkpoint of `model` (and of its hybrid runner) to `path`.

    Args:
        model: a compiled, built Keras model.
        path: the checkpoint directory to create (replaced if it exists).
        runner: the attached `HybridRunner`, if any.
        include_predictor: save the runner's state (needed to resume the
            phase cycle exactly).
        history: dict of per-epoch metric lists.
        config: the `HybridConfig` to store.

    In a multi-process job only process 0 writes; the others return the
    path without writing (their state is the same).

    Returns:
        The path written.
    """
    from keras_hybrid.runner_state import runner_state

    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    runner_json = runner_arrays = None
    if runner is not None:
        if runner.functions is not None:
            runner.settle(keep_pending=True)
        runner.flush_iterations()
        if include_predictor:
            runner_json, runner_arrays = runner_state(runner)
    if not distribution.is_writer():
        return path  # the same state as process 0's, written there
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=parent)
    try:
        _write_variables(os.path.join(tmp, "variables.h5"), model)
        _write_json(os.path.join(tmp, "training_state.json"),
                    _training_state(model, runner))
        _write_json(os.path.join(tmp, "history.json"), history or {})
        with open(os.path.join(tmp, "config.yaml"), "w",
                  encoding="utf-8") as f:
            f.write(config.to_yaml() if config is not None else "")
        files = list(_FILES)
        if runner_json is not None:
            _write_json(os.path.join(tmp, "runner.json"), runner_json)
            _write_arrays(os.path.join(tmp, "runner.h5"), runner_arrays)
            files += list(_RUNNER_FILES)
        manifest = {
            "format_version": FORMAT_VERSION,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "files": {name: _sha256(os.path.join(tmp, name))
                      for name in files},
        }
        _write_json(os.path.join(tmp, "manifest.json"), manifest)
        _fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _training_state(model, runner):
    state = {
        "step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "random": {
            "numpy": _numpy_random_state(),
            "python": _python_random_state(),
            "torch": backends.global_random_state(),
        },
    }
    if runner is not None:
        c = runner.controller
        epoch, batch = runner.position()
        state.update({
            "step": c.step,
            "epoch": epoch,
            "batch_in_epoch": batch,
            "loss": runner.final_loss,
            "phase": c.phase.name,
            "phase_step": c.phase_step,
            "confidence": runner.confidence,
        })
    return state


def _write_variables(path, model):
    groups = {
        "model": model.variables,
        "optimizer": model.optimizer.variables if model.optimizer else [],
        "metrics": model.metrics_variables,
    }
    with h5py.File(path, "w") as f:
        for group_name, variables in groups.items():
            group = f.create_group(group_name)
            for i, variable in enumerate(variables):
                data = group.create_dataset(
                    str(i), data=keras.ops.convert_to_numpy(variable)
                )
                data.attrs["path"] = variable.path


def _write_arrays(path, arrays):
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            group = f.create_group(name)
            group.attrs["is_none"] = values is None
            for i, value in enumerate(values or []):
                group.create_dataset(str(i), data=np.asarray(value))


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(clean_json(data), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def _replace_dir(tmp, path):
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".old-ckpt-",
                               dir=os.path.dirname(path))
        os.rmdir(old)
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(directory):
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            os.fsync(f.fileno())


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numpy_random_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_random_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


# ================================================================== load
def verify_checkpoint(path):
    """Checks a checkpoint's manifest and checksums.

    Returns:
        The manifest dict.

    Raises:
        CheckpointError: naming what is missing or corrupted.
    """
    path = os.fspath(path)
    manifest_path = os.path.join(path, "manifest.json")
    if not os.path.isdir(path) or not os.path.isfile(manifest_path):
        raise CheckpointError(
            "Not a keras_hybrid checkpoint (no manifest.json). Nothing was "
            f"loaded. Received: path={path!r}"
        )
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        files = dict(manifest["files"])
        version = manifest["format_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"The checkpoint manifest is unreadable ({e}). Nothing was "
            f"loaded. Received: path={path!r}"
        ) from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint format {version} is not supported (this version "
            f"reads {FORMAT_VERSION}). Received: path={path!r}"
        )
    for name, expected in files.items():
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise CheckpointError(
                f"Checkpoint file {name} is missing. Nothing was loaded. "
                f"Received: path={path!r}"
            )
        if _sha256(file_path) != expected:
            raise CheckpointError(
                f"Checkpoint file {name} does not match its checksum (it is "
                "truncated or was modified). Nothing was loaded. "
                f"Received: path={path!r}"
            )
    return manifest


def load_checkpoint(model, path):
    """Loads a checkpoint into `model` (all or nothing).

    The model must be built and compiled like the one that was saved. The
    hybrid runner's state, if saved, is handed to the next `fit()` with a
    `HybridPredictCallback`, which resumes the phase cycle, the epoch and the
    position in it exactly.

    Returns:
        The `training_state.json` dict.

    Raises:
        CheckpointError: if the checkpoint is corrupted or does not fit.
    """
    manifest = verify_checkpoint(path)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    with open(os.path.join(path, "training_state.json"),
              encoding="utf-8") as f:
        state = json.load(f)
    groups = _read_variables(os.path.join(path, "variables.h5"))
    targets = {
        "model": model.variables,
        "optimizer": model.optimizer.variables if model.optimizer else [],
    }
    for name, variables in targets.items():
        _check_fits(name, variables, groups.get(name, []), path)
    runner = None
    if "runner.json" in manifest["files"]:
        with open(os.path.join(path, "runner.json"), encoding="utf-8") as f:
            runner_json = json.load(f)
        runner = (runner_json, _read_arrays(os.path.join(path, "runner.h5")))
    # Everything is read and checked: now assign.
    for name, variables in targets.items():
        for variable, (_, value) in zip(variables, groups.get(name, [])):
            variable.assign(value)
    np.random.set_state(_to_numpy_state(state["random"]["numpy"]))
    version, internal, gauss = state["random"]["python"]
    random.setstate((version, tuple(internal), gauss))
    backends.set_global_random_state(state["random"].get("torch"))
    model._hybrid_resume = {
        "training_state": state,
        "runner": runner,
        # Keras resets the metrics at each epoch start: the callback puts
        # these back at the start of the resumed epoch.
        "metrics": [value for _, value in groups.get("metrics", [])],
    }
    return state


def _datasets(group):
    """The datasets `"0"`, `"1"`, ... of an h5 group, in order."""
    return [group[str(i)] for i in range(len(group))]


def _read_variables(path):
    with h5py.File(path, "r") as f:
        return {
            name: [(d.attrs["path"], d[()]) for d in _datasets(f[name])]
            for name in f
        }


def _read_arrays(path):
    with h5py.File(path, "r") as f:
        return {
            name: None if f[name].attrs["is_none"]
            else [d[()] for d in _datasets(f[name])]
            for name in f
        }


def _check_fits(name, variables, saved, path):
    if len(variables) != len(saved):
        raise CheckpointError(
            f"The checkpoint holds {len(saved)} {name} variables, the model "
            f"has {len(variables)}: it was saved from a different model or "
            f"optimizer. Nothing was loaded. Received: path={path!r}"
        )
    for variable, (saved_path, value) in zip(variables, saved):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise CheckpointError(
                f"Checkpoint variable {saved_path!r} has shape "
                f"{np.shape(value)}, the model's {variable.path!r} has "
                f"{tuple(variable.shape)}. Nothing was loaded. "
                f"Received: path={path!r}"
            )


def _to_numpy_state(state):
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)


# ============================================================ directory
def list_checkpoints(directory):
    """The `ckpt-NNNNNNNN` checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if _NAME.match(n))
    return [os.path.join(directory, n) for n in names]


def latest_checkpoint(directory):
    """The newest checkpoint in `directory` that verifies, or `None`."""
    for path in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def rotate(directory, keep_last_n):
    """Deletes all but the newest `keep_last_n` checkpoints (process 0
    only, which wrote them)."""
    if not distribution.is_writer():
        return
    for path in list_checkpoints(directory)[:-keep_last_n]:
        shutil.rmtree(path, ignore_errors=True)


def step_path(directory, step):
    """The path of the periodic checkpoint of `step`."""
    return os.path.join(os.fspath(directory), f"ckpt-{int(step):08d}")


# =============================================================== export
def export_with_optimizer(model, path, input_signature=None):
    """Writes a TF SavedModel with a `serve` endpoint (the user's network)
    and the optimizer's variables as the `optimizer_variables` collection.

    Args:
        model: a built model.
        path: the SavedModel directory.
        input_signature: optional list of `keras.InputSpec`/`tf.TensorSpec`;
            inferred from the model's inputs when it has them.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    if input_signature is None and hasattr(model, "input_signature"):
        input_signature = model.input_signature()
    if input_signature is None:
        raise ValueError(
            "Cannot infer the input signature of this model. Pass "
            "`input_signature`. Received: input_signature=None"
        )
    archive.add_endpoint(
        "serve", lambda *args: model(*args, training=False), input_signature
    )
    if model.optimizer is not None:
        archive.add_variable_collection(
            "optimizer_variables", list(model.optimizer.variables)
        )
    archive.write_out(path, verbose=False)
    return path
