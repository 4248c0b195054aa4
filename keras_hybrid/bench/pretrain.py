"""The pretrained start of the fine-tuning tasks, trained once and cached.

`pretrain(recipe)` trains the byte-level transformer of
`keras_hybrid.bench.backbone` as a next-byte language model on Python
standard library sources, with plain Keras `fit()` (AdamW, linear warmup and
cosine decay), and saves its weights (`lm.weights.h5`: the backbone and its
language-model head) in a cache folder named after a hash of everything that
decides them: the recipe (architecture, steps, batch size, learning rate,
warmup, weight decay, seed), the bytes of the training and validation files,
the file format and the Keras version. A second call with the same recipe
finds the folder and trains nothing. Nothing is downloaded.

The cache folder is, in order: the `cache_dir` argument, the
`KERAS_HYBRID_CACHE` environment variable, `$XDG_CACHE_HOME/keras-hybrid`,
`~/.cache/keras-hybrid`. Checkpoints go to its `pretrained/` subfolder.

Example:

```python
checkpoint = pretrain(PRETRAIN_RECIPES["full"], cache_dir="/tmp/kh")
model = load_language_model(checkpoint)
```
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np

from keras_hybrid.bench import backbone as backbone_lib
from keras_hybrid.bench import tasks as tasks_lib

CACHE_ENV = "KERAS_HYBRID_CACHE"
CHECKPOINT_FORMAT = 1  # Bump when the saved files change meaning.
WEIGHTS_FILE = "lm.weights.h5"
RECIPE_FILE = "recipe.json"


@dataclasses.dataclass(frozen=True)
class PretrainRecipe:
    """Everything that decides the pretrained weights.

    Attributes:
        name: a label, part of the folder name.
        backbone: the `BackboneConfig`.
        steps: optimizer steps.
        batch_size: windows per step.
        learning_rate: the peak learning rate.
        warmup_steps: linear warmup steps (then a cosine decay to 0).
        weight_decay: AdamW's decoupled weight decay.
        seed: seeds the initial weights and the order of the windows.
        train_files: standard library files trained on.
        val_files: standard library files validated on.
        max_val_windows: most validation windows kept.
    """

    name: str
    backbone: backbone_lib.BackboneConfig
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    seed: int = 0
    train_files: tuple = tasks_lib.STDLIB_LM_TRAIN_FILES
    val_files: tuple = tasks_lib.STDLIB_LM_VAL_FILES
    max_val_windows: int = 512

    def __post_init__(self):
        for field in ("steps", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or (
                value < 1
            ):
                raise ValueError(
                    f"`{field}` must be a positive integer. "
                    f"Received: {field}={value!r}"
                )
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(
                "`warmup_steps` must be in [0, steps). Received: "
                f"warmup_steps={self.warmup_steps!r}, steps={self.steps}"
            )
        if not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be > 0. "
                f"Received: learning_rate={self.learning_rate!r}"
            )

    def to_dict(self):
        """The recipe as plain JSON types."""
        out = dataclasses.asdict(self)
        out["train_files"] = list(self.train_files)
        out["val_files"] = list(self.val_files)
        return out

    def digest(self):
        """A hash of the recipe, the data's bytes, the format and Keras."""
        data = hashlib.sha256()
        for name in (*self.train_files, "--", *self.val_files):
            data.update(name.encode("utf-8") + b"\0")
        for content in tasks_lib._read_stdlib_files(
            self.train_files + self.val_files
        ):
            data.update(hashlib.sha256(content).digest())
        spec = {
            "recipe": self.to_dict(),
            "data_sha256": data.hexdigest(),
            "format": CHECKPOINT_FORMAT,
            "keras": keras.__version__,
        }
        return hashlib.sha256(
            json.dumps(spec, sort_keys=True).encode("utf-8")
        ).hexdigest()[:16]


# Measured with TensorFlow on two CPU cores (see
# benchmarks/results/2026-12-04-finetune-oracle): "full" trains in about
# 6-8 minutes, "quick" in a few seconds.
PRETRAIN_RECIPES = {
    "full": PretrainRecipe(
        name="byte-lm-full",
        backbone=backbone_lib.BackboneConfig(
            sequence_length=128, width=128, blocks=4, heads=4),
        steps=1000, batch_size=32, learning_rate=2e-3, warmup_steps=100,
        weight_decay=0.1,
    ),
    "quick": PretrainRecipe(
        name="byte-lm-quick",
        backbone=backbone_lib.BackboneConfig(
            sequence_length=32, width=32, blocks=4, heads=2),
        steps=24, batch_size=8, learning_rate=3e-3, warmup_steps=4,
        weight_decay=0.1, train_files=tasks_lib.STDLIB_LM_TRAIN_FILES[:4],
        val_files=tasks_lib.STDLIB_LM_VAL_FILES[:1], max_val_windows=64,
    ),
}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A pretrained language model in the cache.

    Attributes:
        path: the folder holding `lm.weights.h5` and `recipe.json`.
        recipe: the `PretrainRecipe`.
        digest: the recipe's hash (the folder name's suffix).
        log: what `pretrain` recorded: `train_seconds`, `total_seconds`,
            `val_loss`, `train_loss_mean` (over the run), `backend`, ...
        reused: whether this call found the checkpoint in the cache.
    """

    path: str
    recipe: PretrainRecipe
    digest: str
    log: dict
    reused: bool

    @property
    def weights_path(self):
        """The `.weights.h5` file."""
        return os.path.join(self.path, WEIGHTS_FILE)


def cache_dir(path=None):
    """The cache folder: `path`, else `$KERAS_HYBRID_CACHE`, else
    `$XDG_CACHE_HOME/keras-hybrid` or `~/.cache/keras-hybrid`."""
    if path:
        return os.path.abspath(os.path.expanduser(path))
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "keras-hybrid")


def checkpoint_dir(recipe, cache=None):
    """Where `recipe`'s checkpoint lives (whether or not it exists)."""
    return os.path.join(cache_dir(cache), "pretrained",
                        f"{recipe.name}-{recipe.digest()}")


def source_windows(file_names, length, stride, max_windows=None, seed=0):
    """Windows of `length` bytes from standard library files.

    Windows start every `stride` bytes and never cross a file boundary. If
    there are more than `max_windows`, an evenly spread, seeded subset is
    kept (in corpus order).

    Returns:
        An int32 array `(windows, length)`.
    """
    out = []
    for content in tasks_lib._read_stdlib_files(tuple(file_names)):
        out.append(byte_windows(content, length, stride))
    windows = np.concatenate(out, axis=0)
    if max_windows is not None and len(windows) > max_windows:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(windows), max_windows, replace=False))
        windows = windows[keep]
    return windows


def byte_windows(data, length, stride):
    """All windows of `length` bytes starting every `stride` bytes of
    `data` (bytes); an int32 array `(windows, length)`."""
    array = np.frombuffer(bytes(data), dtype=np.uint8)
    if len(array) < length:
        return np.zeros((0, length), dtype="int32")
    starts = np.arange(0, len(array) - length + 1, stride)
    return array[starts[:, None] + np.arange(length)[None, :]].astype("int32")


def batch_order(count, steps, batch_size, seed):
    """Indices of `steps * batch_size` examples: seeded permutations of
    `range(count)`, one after the other (every example once per pass)."""
    rng = np.random.default_rng(seed)
    total = steps * batch_size
    passes = -(-total // count)
    return np.concatenate([rng.permutation(count) for _ in range(passes)])[
        :total
    ]


def lm_loss():
    """Next-byte cross-entropy on logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def pretrain(recipe="full", cache=None, progress=True):
    """Pretrains the backbone once; later calls reuse the cached weights.

    Args:
        recipe: a `PretrainRecipe`, or a key of `PRETRAIN_RECIPES`.
        cache: the cache folder (see `cache_dir`); `None` for the default.
        progress: print a line when training starts and ends.

    Returns:
        A `Checkpoint`.
    """
    recipe = resolve_recipe(recipe)
    path = checkpoint_dir(recipe, cache)
    found = _read_checkpoint(path, recipe)
    if found is not None:
        return found
    if progress:
        print(f"pretraining {recipe.name} ({recipe.steps} steps) into "
              f"{path}", flush=True)
    log = _train(recipe, progress)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=parent)
    try:
        log["model"].save_weights(os.path.join(staging, WEIGHTS_FILE))
        del log["model"]
        with open(os.path.join(staging, RECIPE_FILE), "w") as f:
            json.dump({"recipe": recipe.to_dict(), "digest": recipe.digest(),
                       "log": log}, f, indent=1, sort_keys=True)
        try:
            os.rename(staging, path)  # Atomic: never a half-written folder.
        except OSError:
            if _read_checkpoint(path, recipe) is None:  # Not a racing twin.
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress:
        print(f"pretrained {recipe.name}: {log['train_seconds']:.0f}s of "
              f"training, validation loss {log['val_loss']:.4f}", flush=True)
    return Checkpoint(path, recipe, recipe.digest(), log, reused=False)


def resolve_recipe(recipe):
    """A `PretrainRecipe` from itself or its `PRETRAIN_RECIPES` key."""
    if isinstance(recipe, PretrainRecipe):
        return recipe
    if recipe not in PRETRAIN_RECIPES:
        raise ValueError(
            f"`recipe` must be a PretrainRecipe or one of "
            f"{sorted(PRETRAIN_RECIPES)}. Received: recipe={recipe!r}"
        )
    return PRETRAIN_RECIPES[recipe]


def load_language_model(checkpoint):
    """A new language model holding a checkpoint's weights.

    Args:
        checkpoint: a `Checkpoint`.

    Returns:
        An uncompiled `keras.Model` (see
        `keras_hybrid.bench.backbone.language_model`).
    """
    model = backbone_lib.language_model(checkpoint.recipe.backbone)
    model.load_weights(checkpoint.weights_path)
    return model


def _read_checkpoint(path, recipe):
    try:
        with open(os.path.join(path, RECIPE_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if saved.get("digest") != recipe.digest() or not os.path.isfile(
        os.path.join(path, WEIGHTS_FILE)
    ):
        return None
    return Checkpoint(path, recipe, recipe.digest(), saved.get("log", {}),
                      reused=True)


def _train(recipe, progress):
    """Trains the language model with plain `fit()`; returns its log (and
    the model, under `"model"`)."""
    from keras_hybrid.bench.schedules import WarmupDecay

    begin = time.perf_counter()
    length = recipe.backbone.sequence_length
    train = source_windows(recipe.train_files, length + 1, length)
    val = source_windows(recipe.val_files, length + 1, length,
                         recipe.max_val_windows, seed=recipe.seed)
    order = batch_order(len(train), recipe.steps, recipe.batch_size,
                        recipe.seed)
    keras.utils.set_random_seed(recipe.seed)
    model = backbone_lib.language_model(recipe.backbone)
    schedule = WarmupDecay(recipe.learning_rate, recipe.steps,
                           recipe.warmup_steps, decay="cosine")
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=recipe.weight_decay),
        loss=lm_loss(),
    )
    x = train[order]
    start = time.perf_counter()
    history = model.fit(x[:, :-1], x[:, 1:], batch_size=recipe.batch_size,
                        epochs=1, shuffle=False, verbose=0)
    train_seconds = time.perf_counter() - start
    val_loss = float(model.evaluate(val[:, :-1], val[:, 1:], batch_size=256,
                                    verbose=0))
    return {
        "model": model,
        "backend": keras.backend.backend(),
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - begin,
        "train_loss_mean": float(history.history["loss"][-1]),
        "val_loss": val_loss,
        "train_windows": int(len(train)),
        "val_windows": int(len(val)),
        "optimizer_iterations": int(
            keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "parameters": int(model.count_params()),
    }
