"""Fine-tuning tasks: a pretrained byte transformer on Python's own prose.

Both tasks start from the language model `keras_hybrid.bench.pretrain`
trains once on standard library sources and caches, and fine-tune it on the
English prose of the standard library's `pydoc_data/topics.py` (the topic
texts, read from the file as data; nothing is downloaded):

- `ft-docs`: the language model fine-tuned, as a language model, on the
  prose. Validation and test windows are held-out prose. `x_source` /
  `y_source` hold held-out standard library source (files used neither in
  pretraining's training nor its validation): its loss after fine-tuning
  measures forgetting.
- `ft-topics`: the backbone with a new head (the final hidden states
  averaged over positions, then `Dense(topics)`) predicts which pydoc topic
  a snippet of `sequence_length` bytes (128 at full size) comes from. Each
  topic's text is cut by position into a training part (the first 70%), a
  validation part (the next 15%) and a test part (the last 15%), so no
  validation or test snippet overlaps a training one.

Layers are named in input order (`keras_hybrid.bench.backbone.block_names`):
`[embedding, position_embedding], [block_0], ..., [block_3], [final_norm,
(pool,) head]`. The recipe is AdamW with a linear warmup; run it with the
cosine decay over the run's budget (`keras-hybrid bench --task ft-docs
--schedule cosine`).

Example:

```python
task = get_finetune_task("ft-topics", quick=True, cache_dir="/tmp/kh")
model = task.build_model(seed=0)  # pretrained backbone, new seeded head
block_names(model)
```
"""

import ast
import dataclasses
import functools
import os
import sysconfig

import keras
import numpy as np

from keras_hybrid.bench import backbone as backbone_lib
from keras_hybrid.bench import pretrain as pretrain_lib
from keras_hybrid.bench import tasks as tasks_lib
from keras_hybrid.bench.backbone import block_names  # noqa: F401 (re-export)

FINETUNE_TASK_NAMES = ("ft-docs", "ft-topics")

# Fine-tuning sizes. At full size a step (batch 16 of 128 bytes) takes
# about 0.2 s with TensorFlow on two CPU cores: one epoch of ft-docs and two
# of ft-topics take 1-2 minutes (see benchmarks/results/
# 2026-12-04-finetune-oracle).
_SIZES = {
    False: {
        "recipe": "full", "batch": 16, "docs_epochs": 1, "topics_epochs": 2,
        "docs_train_stride": 64, "docs_max_train": None, "docs_max_eval": 512,
        "source_max": 512, "topics_min_bytes": 4096,
        "topics_train_stride": 64, "topics_max_train": 192,
        "topics_max_eval": 16, "warmup": 20,
    },
    True: {
        "recipe": "quick", "batch": 8, "docs_epochs": 1, "topics_epochs": 1,
        "docs_train_stride": 256, "docs_max_train": 96, "docs_max_eval": 32,
        "source_max": 32, "topics_min_bytes": 8192,
        "topics_train_stride": 256, "topics_max_train": 8,
        "topics_max_eval": 2, "warmup": 2,
    },
}
_DOCS_SPLIT = (0.8, 0.1)  # train, val shares of each topic; test the rest
_TOPICS_SPLIT = (0.7, 0.15)
_LEARNING_RATE = {"ft-docs": 1e-3, "ft-topics": 1e-3}
_WEIGHT_DECAY = 0.01
_SPLIT_SEED = 77  # Seeds the subsampling of capped splits.


@dataclasses.dataclass(eq=False)
class FinetuneTask(tasks_lib.Task):
    """A `Task` that starts from the cached pretrained language model.

    Attributes:
        x_source: held-out standard library source windows (`ft-docs`:
            forgetting is measured on them), or `None`.
        y_source: their next-byte targets, or `None`.
        classes: the topic names (`ft-topics`), or `None`.
        checkpoint: the pretrained checkpoint's folder.
        pretrain: the pretraining recipe and log (seconds, losses,
            whether the cache was reused).
        head_layers: the names of the layers a linear probe trains.
    """

    x_source: np.ndarray = dataclasses.field(default=None, repr=False)
    y_source: np.ndarray = dataclasses.field(default=None, repr=False)
    classes: list = None
    checkpoint: str = None
    pretrain: dict = dataclasses.field(default=None, repr=False)
    head_layers: tuple = ("head",)


def get_finetune_task(name, quick=False, cache_dir=None, progress=True):
    """Builds a fine-tuning task, pretraining its start first if needed.

    Args:
        name: `"ft-docs"` or `"ft-topics"`.
        quick: a tiny backbone and a few steps (tests and smoke runs).
        cache_dir: the checkpoint cache folder; `None` for
            `$KERAS_HYBRID_CACHE` or `~/.cache/keras-hybrid` (see
            `keras_hybrid.bench.pretrain.cache_dir`).
        progress: print a line while pretraining.

    Returns:
        A `FinetuneTask`.
    """
    if name not in FINETUNE_TASK_NAMES:
        raise ValueError(
            f"`name` must be one of {FINETUNE_TASK_NAMES}. "
            f"Received: name={name!r}"
        )
    quick = bool(quick)
    sizes = _SIZES[quick]
    checkpoint = pretrain_lib.pretrain(sizes["recipe"], cache=cache_dir,
                                       progress=progress)
    config = checkpoint.recipe.backbone
    common = {
        "batch_size": sizes["batch"],
        "learning_rate": _LEARNING_RATE[name],
        "loss": pretrain_lib.lm_loss(),
        "metrics": ["accuracy"],
        "warmup_steps": sizes["warmup"],
        "optimizer": "adamw",
        "weight_decay": _WEIGHT_DECAY,
        "checkpoint": checkpoint.path,
        "pretrain": {"recipe": checkpoint.recipe.to_dict(),
                     "digest": checkpoint.digest, "log": checkpoint.log,
                     "reused": checkpoint.reused},
    }
    shape = (f"{config.blocks} blocks of width {config.width}, "
             f"{config.heads} heads")
    if name == "ft-docs":
        splits, source = _docs_splits(config.sequence_length, quick)
        return FinetuneTask(
            name=name, **splits, **source, **common,
            epochs=sizes["docs_epochs"],
            description=(
                "Continued next-byte language modelling on the prose of "
                "pydoc_data/topics.py (each topic split by position: 80% "
                f"train / 10% val / 10% test; windows of "
                f"{config.sequence_length} bytes) from a byte transformer "
                f"({shape}) pretrained on stdlib source; x_source: held-out "
                "source (forgetting)."
            ),
            model_fn=functools.partial(
                _language_model, config.to_dict(), checkpoint.path),
        )
    splits, classes = _topics_splits(config.sequence_length, quick)
    return FinetuneTask(
        name=name, **splits, **common, classes=classes,
        epochs=sizes["topics_epochs"],
        description=(
            f"Which of {len(classes)} pydoc topics a "
            f"{config.sequence_length}-byte snippet comes from (each topic "
            "split by position: 70% train / 15% val / 15% test), a byte "
            f"transformer ({shape}) pretrained on stdlib source with a new "
            "head (mean over positions, Dense)."
        ),
        model_fn=functools.partial(
            _classifier, config.to_dict(), checkpoint.path, len(classes)),
    )


# ================================================================== models
def _checkpoint_lm(config, checkpoint_path):
    config = backbone_lib.BackboneConfig(**config)
    model = backbone_lib.language_model(config)
    model.load_weights(os.path.join(checkpoint_path,
                                    pretrain_lib.WEIGHTS_FILE))
    return config, model


def _language_model(config, checkpoint_path):
    """The pretrained language model (every weight from the checkpoint)."""
    return _checkpoint_lm(config, checkpoint_path)[1]


def _classifier(config, checkpoint_path, classes):
    """The pretrained backbone with a new classification head (its
    initial weights drawn from the seed `Task.build_model` set)."""
    config, lm = _checkpoint_lm(config, checkpoint_path)
    return backbone_lib.classifier(config, classes, source=lm,
                                   name="topic_classifier")


# ==================================================================== data
def pydoc_topics():
    """The pydoc topic texts, `{topic: bytes}` (UTF-8), read from the
    standard library's `pydoc_data/topics.py` as a literal (not imported,
    not executed)."""
    return dict(_pydoc_topics())


@functools.lru_cache(maxsize=None)
def _pydoc_topics():
    path = os.path.join(sysconfig.get_paths()["stdlib"], "pydoc_data",
                        "topics.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The fine-tuning tasks read pydoc_data/topics.py, which is "
            f"missing from the standard library at {os.path.dirname(path)}."
        )
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        targets = getattr(node, "targets", None) or [
            getattr(node, "target", None)
        ]
        if any(isinstance(t, ast.Name) and t.id == "topics" for t in targets):
            topics = ast.literal_eval(node.value)
            return tuple(
                (key, topics[key].encode("utf-8")) for key in sorted(topics)
            )
    raise ValueError(f"No `topics = {{...}}` literal found in {path}.")


def _cut(text, shares):
    """Splits `text` by position into len(shares) + 1 parts."""
    bounds = [0]
    for share in shares:
        bounds.append(bounds[-1] + int(round(share * len(text))))
    bounds.append(len(text))
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _spread(windows, count):
    """At most `count` windows, evenly spread (all if `count` is None)."""
    if count is None or len(windows) <= count:
        return windows
    keep = np.round(np.linspace(0, len(windows) - 1, count)).astype(int)
    return windows[keep]


def _subsample(windows, count, seed):
    if count is None or len(windows) <= count:
        return windows
    rng = np.random.default_rng(seed)
    return windows[np.sort(rng.choice(len(windows), count, replace=False))]


def _lm_split(windows):
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(
        windows[:, 1:])


@functools.lru_cache(maxsize=None)
def _docs_arrays(length, quick):
    sizes = _SIZES[quick]
    parts = {"train": [], "val": [], "test": []}
    for _, text in _pydoc_topics():
        train, val, test = _cut(text, _DOCS_SPLIT)
        parts["train"].append(pretrain_lib.byte_windows(
            train, length + 1, sizes["docs_train_stride"]))
        parts["val"].append(pretrain_lib.byte_windows(val, length + 1,
                                                      length))
        parts["test"].append(pretrain_lib.byte_windows(test, length + 1,
                                                       length))
    caps = {"train": sizes["docs_max_train"], "val": sizes["docs_max_eval"],
            "test": sizes["docs_max_eval"]}
    out = {}
    for offset, split in enumerate(("train", "val", "test")):
        windows = _subsample(np.concatenate(parts[split]), caps[split],
                             _SPLIT_SEED + offset)
        out[f"x_{split}"], out[f"y_{split}"] = _lm_split(windows)
    source = pretrain_lib.source_windows(
        tasks_lib.STDLIB_LM_TEST_FILES, length + 1, length,
        sizes["source_max"], seed=_SPLIT_SEED + 3)
    out["x_source"], out["y_source"] = _lm_split(source)
    return tuple(out.items())


def _docs_splits(length, quick):
    arrays = {k: np.array(v, copy=True) for k, v in _docs_arrays(length,
                                                                 quick)}
    source = {k: arrays.pop(k) for k in ("x_source", "y_source")}
    return arrays, source


@functools.lru_cache(maxsize=None)
def _topics_arrays(length, quick):
    sizes = _SIZES[quick]
    chosen = [(k, t) for k, t in _pydoc_topics()
              if len(t) >= sizes["topics_min_bytes"]]
    xs = {"train": [], "val": [], "test": []}
    ys = {"train": [], "val": [], "test": []}
    for label, (_, text) in enumerate(chosen):
        train, val, test = _cut(text, _TOPICS_SPLIT)
        windows = {
            "train": _spread(pretrain_lib.byte_windows(
                train, length, sizes["topics_train_stride"]),
                sizes["topics_max_train"]),
            "val": _spread(pretrain_lib.byte_windows(val, length, length),
                           sizes["topics_max_eval"]),
            "test": _spread(pretrain_lib.byte_windows(test, length, length),
                            sizes["topics_max_eval"]),
        }
        for split, w in windows.items():
            xs[split].append(w)
            ys[split].append(np.full(len(w), label, dtype="int32"))
    out = []
    for split in ("train", "val", "test"):
        out.append((f"x_{split}", np.concatenate(xs[split])))
        out.append((f"y_{split}", np.concatenate(ys[split])))
    return tuple(out), tuple(k for k, _ in chosen)


def _topics_splits(length, quick):
    arrays, classes = _topics_arrays(length, quick)
    return {k: np.array(v, copy=True) for k, v in arrays}, list(classes)
