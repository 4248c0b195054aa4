"""Offline, deterministic benchmark tasks.

Each task bundles fixed train / validation / test splits, a model factory and
the training settings (batch size, epochs, learning rate, loss and metrics)
used by the benchmark harness. Nothing is downloaded: MNIST-1D is generated
with the `mnist1d` package (pure NumPy) and the language-modelling corpus is
read from the running Python's own standard library sources.

Every task comes in two sizes: the full size used by the benchmark suite and
a `quick=True` size for smoke runs and CI.

Generated MNIST-1D splits are cached in memory and, because generation takes
seconds and the benchmark runs every arm in a fresh process, on disk under
`$KERAS_HYBRID_CACHE_DIR` (default `~/.keras/keras_hybrid`; an empty value
disables it). The file name hashes every generator input and the versions of
`mnist1d`, NumPy and SciPy, so a stale file is never reused.

Example:

```python
task = get_task("mnist1d-mlp", quick=True)
model = task.build_model(seed=0)
model.compile(
    optimizer=task.make_optimizer(),
    loss=task.loss,
    metrics=task.metrics,
)
model.fit(
    task.x_train, task.y_train,
    batch_size=task.batch_size,
    epochs=task.epochs,
    validation_data=(task.x_val, task.y_val),
)
```
"""

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import random
import sysconfig
import tempfile
from typing import Callable

import keras
import numpy as np

from keras_hybrid.bench.transformer import byte_transformer

TASK_NAMES = ("mnist1d-mlp", "mnist1d-cnn", "stdlib-lm", "stdlib-gpt")
# Fine-tuning tasks (`keras_hybrid.bench.finetune`): built by `get_task` but
# not part of "all" (their first build pretrains a backbone, minutes).
FINETUNE_TASK_NAMES = ("ft-docs", "ft-topics")
KNOWN_TASK_NAMES = TASK_NAMES + FINETUNE_TASK_NAMES

# ---------------------------------------------------------------------------
# Sizes, measured with the TensorFlow backend on two CPU cores. A full
# training run takes about 15 s (mnist1d-mlp: more epochs would only overfit),
# 20-30 s (mnist1d-cnn) and 40 s (stdlib-lm); a quick one 3-10 s.
# ---------------------------------------------------------------------------

_MNIST1D_SEED = 42  # Seed of the MNIST-1D generator.
_MNIST1D_SPLIT_SEED = 1234  # Seed of the train / validation permutation.
_MNIST1D_VAL_FRACTION = 0.1
_MNIST1D_NUM_SAMPLES = {False: 60000, True: 12000}
_MNIST1D_MLP_EPOCHS = {False: 20, True: 12}
_MNIST1D_CNN_EPOCHS = {False: 15, True: 8}
_MNIST1D_CACHE_FORMAT = 1  # Bump when the cached arrays change meaning.

_LM_SEQUENCE_LENGTH = 64
_LM_SPLIT_SEED = 2024  # Seed of the window subsampling.
# Maximum number of windows per split.
_LM_MAX_WINDOWS = {
    False: {"train": 12288, "val": 1024, "test": 1024},
    True: {"train": 2048, "val": 256, "test": 256},
}
_LM_EPOCHS = {False: 4, True: 4}

# `stdlib-gpt`: a 2-block causal transformer on the same byte windows,
# AdamW with linear warmup (the recipe decays it with `--schedule cosine`).
# 4 x 384 steps take about 100 s of training on two busy CPU cores (0.06 s a
# step); the quick size 3 x 64 steps.
_GPT_WIDTH = 128
_GPT_BLOCKS = 2
_GPT_HEADS = 4
_GPT_BATCH = 32
_GPT_EPOCHS = {False: 4, True: 3}
_GPT_WARMUP_STEPS = {False: 75, True: 10}
_GPT_LEARNING_RATE = 2e-3
_GPT_WEIGHT_DECAY = 0.1

# Standard library modules used by `stdlib-lm`. Every name is a single-file
# module present in CPython 3.10 through 3.13 (modules removed by PEP 594 and
# modules that became packages, e.g. `pathlib` or `zipfile`, are avoided).
# The corpus is split by file, so no validation or test file is ever seen in
# training.
STDLIB_LM_TRAIN_FILES = (
    "abc.py",
    "argparse.py",
    "ast.py",
    "base64.py",
    "bdb.py",
    "bisect.py",
    "cmd.py",
    "code.py",
    "codecs.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "dis.py",
    "doctest.py",
    "enum.py",
    "filecmp.py",
    "fileinput.py",
    "fnmatch.py",
    "fractions.py",
    "ftplib.py",
    "functools.py",
    "getopt.py",
    "gettext.py",
    "glob.py",
    "gzip.py",
    "hmac.py",
    "imaplib.py",
    "inspect.py",
    "ipaddress.py",
    "linecache.py",
    "locale.py",
    "mailbox.py",
    "mimetypes.py",
    "numbers.py",
    "operator.py",
    "pdb.py",
    "pickle.py",
    "platform.py",
    "plistlib.py",
    "posixpath.py",
    "profile.py",
    "pstats.py",
    "queue.py",
    "sched.py",
    "selectors.py",
    "shutil.py",
    "smtplib.py",
    "socketserver.py",
    "statistics.py",
    "string.py",
    "subprocess.py",
    "tarfile.py",
    "tempfile.py",
    "threading.py",
    "timeit.py",
    "trace.py",
    "traceback.py",
    "typing.py",
    "uuid.py",
    "weakref.py",
)
STDLIB_LM_VAL_FILES = (
    "configparser.py",
    "pprint.py",
    "shlex.py",
    "textwrap.py",
)
STDLIB_LM_TEST_FILES = (
    "calendar.py",
    "heapq.py",
    "optparse.py",
    "tokenize.py",
)


@dataclasses.dataclass(eq=False)
class Task:
    """A benchmark task: fixed data splits, a model factory and settings.

    Attributes:
        name: the task name, one of `TASK_NAMES`.
        x_train: training inputs.
        y_train: training targets.
        x_val: validation inputs, disjoint from the training and test data.
        y_val: validation targets.
        x_test: held-out test inputs.
        y_test: test targets.
        batch_size: training batch size.
        epochs: number of training epochs.
        learning_rate: the peak learning rate of the optimizer.
        loss: the loss to compile with (a `keras.losses.Loss` instance).
        metrics: the metrics to compile with.
        description: a one-line, human-readable summary of the task.
        model_fn: a callable with no arguments that returns a new, uncompiled
            model. Prefer `build_model`, which seeds the weights.
        warmup_steps: linear learning-rate warmup steps of the task's
            recipe (see `keras_hybrid.bench.schedules`).
        optimizer: `"adam"` or `"adamw"`.
        weight_decay: the decoupled weight decay of `"adamw"`.
    """

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_val: np.ndarray = dataclasses.field(repr=False)
    y_val: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    batch_size: int
    epochs: int
    learning_rate: float
    loss: keras.losses.Loss | str = dataclasses.field(repr=False)
    metrics: list
    description: str
    model_fn: Callable[[], keras.Model] = dataclasses.field(
        repr=False, compare=False
    )
    warmup_steps: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def __post_init__(self):
        for split in ("train", "val", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(
                    f"`x_{split}` and `y_{split}` must have the same length. "
                    f"Received: len(x_{split})={len(x)}, "
                    f"len(y_{split})={len(y)}"
                )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                "`batch_size` must be a positive integer. "
                f"Received: batch_size={self.batch_size!r}"
            )
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(
                "`optimizer` must be 'adam' or 'adamw'. "
                f"Received: optimizer={self.optimizer!r}"
            )

    def build_model(self, seed):
        """Builds a new, uncompiled model with seeded initial weights.

        Calls `keras.utils.set_random_seed(seed)` first (which also seeds
        Python's `random` and NumPy's global generator), so the same seed
        always gives the same initial weights.

        Args:
            seed: a non-negative integer.

        Returns:
            An uncompiled `keras.Model`.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(
                f"`seed` must be an integer. Received: seed={seed!r}"
            )
        if seed < 0:
            raise ValueError(
                f"`seed` must be non-negative. Received: seed={seed}"
            )
        keras.utils.set_random_seed(int(seed))
        return self.model_fn()

    def make_optimizer(self, learning_rate=None):
        """Creates the task's optimizer (Adam, or AdamW for `"adamw"`).

        Args:
            learning_rate: a float, a
                `keras.optimizers.schedules.LearningRateSchedule`, or `None`
                to use `self.learning_rate`.

        Returns:
            A new `keras.optimizers.Adam` or `keras.optimizers.AdamW`.
        """
        if learning_rate is None:
            learning_rate = self.learning_rate
        schedule = keras.optimizers.schedules.LearningRateSchedule
        if isinstance(learning_rate, schedule):
            return self._optimizer(learning_rate)
        if isinstance(learning_rate, bool) or not isinstance(
            learning_rate, (int, float, np.floating, np.integer)
        ):
            raise ValueError(
                "`learning_rate` must be a positive float or a "
                "`keras.optimizers.schedules.LearningRateSchedule`. "
                f"Received: learning_rate={learning_rate!r}"
            )
        if not learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be positive. "
                f"Received: learning_rate={learning_rate!r}"
            )
        return self._optimizer(float(learning_rate))

    def _optimizer(self, learning_rate):
        if self.optimizer == "adamw":
            return keras.optimizers.AdamW(
                learning_rate=learning_rate, weight_decay=self.weight_decay
            )
        return keras.optimizers.Adam(learning_rate=learning_rate)

    @property
    def steps_per_epoch(self):
        """Number of training steps per epoch (the last batch may be short)."""
        return math.ceil(len(self.x_train) / self.batch_size)


def get_task(name, quick=False):
    """Builds a benchmark task.

    Data generation is deterministic: the same arguments always give identical
    arrays. Generated data is kept in memory for the life of the process, and
    every call returns fresh copies.

    Args:
        name: one of `TASK_NAMES`: `"mnist1d-mlp"`, `"mnist1d-cnn"`,
            `"stdlib-lm"` or `"stdlib-gpt"`; or a fine-tuning task of
            `FINETUNE_TASK_NAMES`, `"ft-docs"` or `"ft-topics"` (see
            `keras_hybrid.bench.finetune`; its first build pretrains and
            caches the backbone).
        quick: if `True`, return a smaller version (fewer samples and epochs)
            for smoke runs.

    Returns:
        A `Task`.
    """
    if name in FINETUNE_TASK_NAMES:
        from keras_hybrid.bench.finetune import get_finetune_task

        return get_finetune_task(name, quick=quick)
    if name not in TASK_NAMES:
        raise ValueError(
            f"`name` must be one of {KNOWN_TASK_NAMES}. "
            f"Received: name={name!r}"
        )
    quick = bool(quick)
    if name == "mnist1d-mlp":
        return _mnist1d_task(name, quick, conv=False)
    if name == "mnist1d-cnn":
        return _mnist1d_task(name, quick, conv=True)
    if name == "stdlib-gpt":
        return _stdlib_gpt_task(quick)
    return _stdlib_lm_task(quick)


def _copies(arrays):
    return tuple(np.array(a, copy=True) for a in arrays)


def _classification_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------


_SPLIT_NAMES = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _import_mnist1d():
    try:
        import mnist1d.data
    except ImportError as e:
        raise ImportError(
            "The MNIST-1D tasks need the `mnist1d` package. Install it with "
            "`pip install mnist1d`."
        ) from e
    return mnist1d.data


def _mnist1d_args(num_samples):
    args = _import_mnist1d().get_dataset_args()
    args.num_samples = num_samples
    args.seed = _MNIST1D_SEED
    return args


def _generate_mnist1d(num_samples):
    """Generates, splits and standardizes MNIST-1D; returns six arrays."""
    args = _mnist1d_args(num_samples)
    # The generator reseeds Python's and NumPy's global generators; restore
    # them so that building a task has no side effects on the caller.
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        data = _import_mnist1d().make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    x = np.asarray(data["x"], dtype="float64")
    y = np.asarray(data["y"], dtype="int32")
    x_test = np.asarray(data["x_test"], dtype="float64")
    y_test = np.asarray(data["y_test"], dtype="int32")

    order = np.random.default_rng(_MNIST1D_SPLIT_SEED).permutation(len(x))
    num_val = int(round(len(x) * _MNIST1D_VAL_FRACTION))
    val_idx, train_idx = order[:num_val], order[num_val:]
    x_train, y_train = x[train_idx], y[train_idx]
    x_val, y_val = x[val_idx], y[val_idx]

    mean, std = x_train.mean(), x_train.std()

    def standardize(a):
        return ((a - mean) / std).astype("float32")

    return (
        standardize(x_train), y_train,
        standardize(x_val), y_val,
        standardize(x_test), y_test,
    )


def _cache_dir():
    """Directory of the on-disk data cache, or `None` if caching is off.

    `KERAS_HYBRID_CACHE_DIR` overrides the default `$KERAS_HOME/keras_hybrid`
    (`~/.keras/keras_hybrid`); set it to an empty string to disable caching.
    """
    path = os.environ.get("KERAS_HYBRID_CACHE_DIR")
    if path is None:
        keras_home = os.environ.get("KERAS_HOME") or os.path.join(
            os.path.expanduser("~"), ".keras"
        )
        path = os.path.join(keras_home, "keras_hybrid")
    return path or None


def _mnist1d_cache_path(num_samples):
    """Cache file name; it changes whenever the generated data could."""
    spec = dict(vars(_mnist1d_args(num_samples)))
    spec.pop("url", None)
    spec["split_seed"] = _MNIST1D_SPLIT_SEED
    spec["val_fraction"] = _MNIST1D_VAL_FRACTION
    spec["format"] = _MNIST1D_CACHE_FORMAT
    for package in ("mnist1d", "numpy", "scipy"):
        try:
            spec[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            spec[package] = None
    digest = hashlib.sha256(
        json.dumps(spec, sort_keys=True).encode("utf-8")
    ).hexdigest()[:16]
    return os.path.join(_cache_dir(), f"mnist1d-{num_samples}-{digest}.npz")


@functools.lru_cache(maxsize=None)
def _mnist1d_splits(num_samples):
    """MNIST-1D splits, from memory, the disk cache, or freshly generated.

    Generating 60000 samples takes about 12 s, and the benchmark builds each
    task in several fresh processes, so the (deterministic, ~10 MB) result is
    cached on disk, keyed by every input of the generator.
    """
    if _cache_dir() is None:
        return _generate_mnist1d(num_samples)
    path = _mnist1d_cache_path(num_samples)
    try:
        with np.load(path) as cached:
            return tuple(cached[name] for name in _SPLIT_NAMES)
    except Exception:  # Missing or unreadable: regenerate.
        pass
    arrays = _generate_mnist1d(num_samples)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(
            suffix=".npz", dir=os.path.dirname(path)
        )
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **dict(zip(_SPLIT_NAMES, arrays)))
            os.replace(tmp_path, path)  # Atomic: readers never see a part.
        except BaseException:
            os.remove(tmp_path)
            raise
    except OSError:
        pass  # Caching is best effort (e.g. a read-only home directory).
    return arrays


def _mnist1d_mlp():
    inputs = keras.Input(shape=(40,), name="signal")
    h = keras.layers.Dense(256, activation="relu")(inputs)
    h = keras.layers.Dense(256, activation="relu")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="mnist1d_mlp")


def _mnist1d_cnn():
    inputs = keras.Input(shape=(40, 1), name="signal")
    h = keras.layers.Conv1D(32, 5, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling1D(2)(h)
    h = keras.layers.Conv1D(64, 5, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling1D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="mnist1d_cnn")


def _mnist1d_task(name, quick, conv):
    num_samples = _MNIST1D_NUM_SAMPLES[quick]
    x_train, y_train, x_val, y_val, x_test, y_test = _copies(
        _mnist1d_splits(num_samples)
    )
    if conv:
        x_train, x_val, x_test = (
            a[..., None] for a in (x_train, x_val, x_test)
        )
        epochs = _MNIST1D_CNN_EPOCHS[quick]
        model_fn = _mnist1d_cnn
        model_desc = "1-D CNN (Conv1D 32/64, kernel 5, max-pooling, dense 128)"
    else:
        epochs = _MNIST1D_MLP_EPOCHS[quick]
        model_fn = _mnist1d_mlp
        model_desc = "MLP 40-256-256-10"
    return _classification_task(
        name,
        (x_train, y_train, x_val, y_val, x_test, y_test),
        epochs=epochs,
        learning_rate=1e-3,
        description=(
            f"MNIST-1D 10-class classification ({num_samples} generated "
            f"signals of length 40), {model_desc}."
        ),
        model_fn=model_fn,
    )


def _classification_task(name, splits, **fields):
    """A `Task` with the fields every bench task shares (batch 128,
    sparse categorical cross-entropy on logits, accuracy)."""
    return Task(
        name=name,
        **dict(zip(_SPLIT_NAMES, splits)),
        batch_size=128,
        loss=_classification_loss(),
        metrics=["accuracy"],
        **fields,
    )


# ---------------------------------------------------------------------------
# Byte-level language model on the standard library
# ---------------------------------------------------------------------------


def _stdlib_dir():
    return sysconfig.get_paths()["stdlib"]


def _read_stdlib_files(file_names):
    """Returns the raw bytes of the given standard library files."""
    root = _stdlib_dir()
    paths = [os.path.join(root, file_name) for file_name in file_names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            "The `stdlib-lm` task needs these Python standard library files, "
            f"which are missing from {root}: {missing}. The file list targets "
            "CPython 3.10-3.13."
        )
    contents = []
    for path in paths:
        with open(path, "rb") as f:
            contents.append(f.read())
    return contents


def _windows(contents, length, max_windows, seed):
    """Cuts non-overlapping windows of `length` bytes from each file.

    Windows never cross file boundaries; each file's trailing remainder is
    dropped. If there are more than `max_windows` windows, a fixed random
    subset is kept (in corpus order).
    """
    windows = []
    for content in contents:
        count = len(content) // length
        data = np.frombuffer(content[: count * length], dtype=np.uint8)
        windows.append(data.reshape(count, length))
    windows = np.concatenate(windows, axis=0)
    if len(windows) > max_windows:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(windows), max_windows, replace=False))
        windows = windows[keep]
    return windows.astype("int32")


@functools.lru_cache(maxsize=None)
def _stdlib_lm_splits(quick):
    """Returns x / y arrays of the train, validation and test splits."""
    caps = _LM_MAX_WINDOWS[quick]
    arrays = []
    for offset, (split, file_names) in enumerate(
        (
            ("train", STDLIB_LM_TRAIN_FILES),
            ("val", STDLIB_LM_VAL_FILES),
            ("test", STDLIB_LM_TEST_FILES),
        )
    ):
        windows = _windows(
            _read_stdlib_files(file_names),
            _LM_SEQUENCE_LENGTH + 1,
            caps[split],
            seed=_LM_SPLIT_SEED + offset,
        )
        arrays.extend([windows[:, :-1], windows[:, 1:]])
    return tuple(np.ascontiguousarray(a) for a in arrays)


def _byte_gru(sequence_length):
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="bytes")
    h = keras.layers.Embedding(256, 64)(inputs)
    h = keras.layers.GRU(128, return_sequences=True)(h)
    outputs = keras.layers.Dense(256, name="logits")(h)
    return keras.Model(inputs, outputs, name="stdlib_lm_gru")


def _stdlib_lm_task(quick):
    return _classification_task(
        "stdlib-lm",
        _copies(_stdlib_lm_splits(quick)),
        epochs=_LM_EPOCHS[quick],
        learning_rate=3e-3,
        description=(
            "Byte-level next-byte prediction on Python standard library "
            f"sources ({len(STDLIB_LM_TRAIN_FILES)} train / "
            f"{len(STDLIB_LM_VAL_FILES)} validation / "
            f"{len(STDLIB_LM_TEST_FILES)} test files, windows of "
            f"{_LM_SEQUENCE_LENGTH} bytes), Embedding(256, 64) - GRU(128) - "
            "Dense(256)."
        ),
        model_fn=functools.partial(_byte_gru, _LM_SEQUENCE_LENGTH),
    )


# ---------------------------------------------------------------------------
# Causal transformer byte language model on the standard library (the model:
# `keras_hybrid.bench.transformer`)
# ---------------------------------------------------------------------------


def _stdlib_gpt_task(quick):
    splits = _copies(_stdlib_lm_splits(quick))
    return Task(
        name="stdlib-gpt",
        **dict(zip(_SPLIT_NAMES, splits)),
        batch_size=_GPT_BATCH,
        epochs=_GPT_EPOCHS[quick],
        learning_rate=_GPT_LEARNING_RATE,
        loss=_classification_loss(),
        metrics=["accuracy"],
        description=(
            "Byte-level next-byte prediction on Python standard library "
            f"sources (the stdlib-lm splits: {len(splits[0])} training "
            f"windows of {_LM_SEQUENCE_LENGTH} bytes), a causal transformer: "
            f"{_GPT_BLOCKS} pre-norm blocks of width {_GPT_WIDTH}, "
            f"{_GPT_HEADS} heads, MLP {4 * _GPT_WIDTH}; AdamW (weight decay "
            f"{_GPT_WEIGHT_DECAY}), {_GPT_WARMUP_STEPS[quick]} warmup steps."
        ),
        model_fn=functools.partial(
            byte_transformer, _LM_SEQUENCE_LENGTH, width=_GPT_WIDTH,
            blocks=_GPT_BLOCKS, heads=_GPT_HEADS,
        ),
        warmup_steps=_GPT_WARMUP_STEPS[quick],
        optimizer="adamw",
        weight_decay=_GPT_WEIGHT_DECAY,
    )
