"""One fine-tuning run under a static freeze schedule, in plain Keras.

`run_finetune` trains a fine-tuning task (`keras_hybrid.bench.finetune`)
for an exact number of steps with AdamW and a linear warmup + cosine decay
over those steps, under one of these schedules:

- full fine-tuning (`depth=0`);
- the bottom `depth` layer groups frozen from step 0 (`freeze_at=0`);
- every layer trainable until `round(freeze_at * steps)`, then the bottom
  `depth` groups frozen for the rest. Plain Keras only applies `trainable`
  at `compile()`: the run fits to the freeze step, sets `trainable=False`,
  compiles again with the same optimizer object (which keeps its slots and
  its step count, so the schedule continues) and fits the rest. This works
  with TensorFlow and PyTorch; on JAX Keras' optimizer refuses a smaller
  variable list than it was built with;
- a linear probe (`probe=True`): only the task's head layers train;
- LoRA (`lora_rank=r`): Keras' `enable_lora(r)` on every `Dense` and
  `EinsumDense` below the head (the attention projections and the MLPs),
  every other layer below the head frozen, the head fully trainable. Keras
  adds the low-rank product to the frozen kernel inside the layer's call,
  so the backward pass still runs through every layer: it is counted at
  full fine-tuning's backward work;
- Keras' weight average (`ema_momentum=m`, with any schedule above): the
  optimizer keeps a moving average of the weights (`use_ema`), and `fit()`
  ends on it.

The batches are the same for every schedule of a seed: one seeded order of
the training windows, cut into consecutive batches. `time_steps` times the
steps of a frozen model against full fine-tuning, alternated in one process.
"""

import time

import keras
import numpy as np

from keras_hybrid.bench import arms
from keras_hybrid.bench import backbone as backbone_lib
from keras_hybrid.bench import flops as flops_lib
from keras_hybrid.bench import pretrain as pretrain_lib
from keras_hybrid.bench import schedules


def budget_steps(task):
    """The task's fine-tuning budget: its epochs of steps."""
    return int(task.epochs) * int(task.steps_per_epoch)


def frozen_layers(model, depth=0, probe=False, head_layers=("head",)):
    """The layer names a schedule freezes (the bottom `depth` groups of
    `block_names(model)`, or every layer but `head_layers` for a probe)."""
    groups = backbone_lib.block_names(model)
    if probe:
        return [n for g in groups for n in g if n not in head_layers]
    if isinstance(depth, bool) or not isinstance(depth, int) or not (
        0 <= depth <= len(groups)
    ):
        raise ValueError(
            f"`depth` must be an integer in [0, {len(groups)}]. "
            f"Received: depth={depth!r}"
        )
    return [n for g in groups[:depth] for n in g]


def backward_share(model, frozen, freeze_at=0.0):
    """The run's backward FLOPs over full fine-tuning's: all layers train
    for `freeze_at` of the steps, then `frozen` do not."""
    flops = flops_lib.forward_flops(model)
    frozen_share = flops_lib.backward_share(model, frozen, flops)
    return freeze_at + (1.0 - freeze_at) * frozen_share


def _set_trainable(model, frozen):
    frozen = set(frozen)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            layer.trainable = layer.name not in frozen


def enable_lora(model, rank, head_layers=("head",)):
    """Keras LoRA on `model` below its head; returns the LoRA layer names.

    Every `Dense` and `EinsumDense` (searched through nested layers, e.g.
    the attention's projections) of a layer not in `head_layers` gets
    `enable_lora(rank)`, which freezes its kernel and adds two trainable
    low-rank factors; the other weights below the head (embeddings,
    normalizations, the biases of the LoRA layers) are frozen; the head
    layers stay fully trainable.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(
            f"`rank` must be a positive integer. Received: rank={rank!r}")
    adapted = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or (
            layer.name in head_layers
        ):
            continue
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            if isinstance(sub, (keras.layers.Dense,
                                keras.layers.EinsumDense)):
                sub.enable_lora(rank)
                adapted.append(sub.path if hasattr(sub, "path")
                               else sub.name)
            if not sub._layers:  # A leaf: freeze what LoRA did not add.
                for variable in sub._trainable_variables:
                    if "lora_kernel" not in variable.path:
                        variable.trainable = False
    if not adapted:
        raise ValueError(
            "`model` has no Dense or EinsumDense layer below its head for "
            f"LoRA. Received: a model with layers "
            f"{[layer.name for layer in model.layers]}"
        )
    return adapted


def _validators(task):
    batch = max(int(task.batch_size), arms.EVAL_BATCH_SIZE)
    out = {"val": arms.Validator(task.x_val, task.y_val, batch),
           "test": arms.Validator(task.x_test, task.y_test, batch)}
    if getattr(task, "x_source", None) is not None:
        out["source"] = arms.Validator(task.x_source, task.y_source, batch)
    return out


def evaluate(model, validators):
    """`{split}_loss` and `{split}_acc` of every validator."""
    out = {}
    for split, validator in validators.items():
        loss, acc = validator(model)
        out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
    return out


def evaluate_start(task, seed=0):
    """The figures of the task's model before fine-tuning (the pretrained
    language model; for a classifier, its new head is untrained)."""
    keras.backend.clear_session()
    model = task.build_model(seed)
    model.compile(loss=task.loss)
    return evaluate(model, _validators(task))


def run_finetune(task, seed, learning_rate, depth=0, freeze_at=0.0,
                 probe=False, steps=None, lora_rank=None, ema_momentum=None):
    """Fine-tunes `task` once; returns its figures.

    Args:
        task: a `keras_hybrid.bench.finetune.FinetuneTask`.
        seed: seeds the new head's weights and the batch order.
        learning_rate: the peak learning rate.
        depth: layer groups frozen from the bottom (0: none).
        freeze_at: the share of the steps trained with every layer before
            the bottom `depth` groups freeze (0: frozen from the start).
        probe: a linear probe (only `task.head_layers` train); `depth` and
            `freeze_at` must then be 0.
        steps: the budget (default: the task's epochs of steps).
        lora_rank: LoRA of this rank below the head (see `enable_lora`);
            `depth`, `freeze_at` and `probe` must then be left unset.
        ema_momentum: if set, the optimizer's weight average with this
            momentum (Keras' `use_ema`); `fit()` ends on the average.

    Returns:
        A dict of plain figures: the schedule, `steps`,
        `optimizer_iterations`, `freeze_step`, `iterations_at_freeze`,
        `train_seconds`, `seconds_per_segment`, `backward_share`, the final
        `val_loss`, `val_acc`, `test_loss`, `test_acc` (and `source_loss`
        for a task with held-out source) and `last_learning_rate`.
    """
    if not 0.0 <= freeze_at < 1.0:
        raise ValueError(
            f"`freeze_at` must be in [0, 1). Received: freeze_at={freeze_at!r}"
        )
    if probe and (depth or freeze_at):
        raise ValueError(
            "A linear probe freezes every layer but the head from the start."
            f" Received: probe=True, depth={depth!r}, freeze_at={freeze_at!r}"
        )
    if lora_rank is not None and (probe or depth or freeze_at):
        raise ValueError(
            "LoRA trains low-rank factors from the start and no layer "
            f"freezes. Received: lora_rank={lora_rank!r}, probe={probe!r}, "
            f"depth={depth!r}, freeze_at={freeze_at!r}"
        )
    if ema_momentum is not None and freeze_at:
        raise ValueError(
            "Keras' weight average replaces the weights at the end of each "
            "fit(), so it cannot span a freeze inside the run. Received: "
            f"ema_momentum={ema_momentum!r}, freeze_at={freeze_at!r}"
        )
    if ema_momentum is not None and not 0.0 < float(ema_momentum) < 1.0:
        raise ValueError(
            "`ema_momentum` must be in (0, 1). "
            f"Received: ema_momentum={ema_momentum!r}"
        )
    budget = int(steps or budget_steps(task))
    keras.backend.clear_session()
    model = task.build_model(seed)
    head_layers = tuple(getattr(task, "head_layers", ("head",)))
    frozen = frozen_layers(model, depth, probe, head_layers)
    lora_layers = (None if lora_rank is None
                   else enable_lora(model, lora_rank, head_layers))
    freeze_step = int(round(freeze_at * budget)) if frozen else 0
    segments = [(0, freeze_step, []), (freeze_step, budget, frozen)]
    segments = [s for s in segments if s[1] > s[0]]
    validators = _validators(task)
    result = {
        "task": task.name, "seed": int(seed),
        "learning_rate": float(learning_rate), "depth": int(depth),
        "freeze_at": float(freeze_at), "probe": bool(probe),
        "steps": budget, "freeze_step": freeze_step, "frozen": frozen,
        "backward_share": backward_share(
            model, frozen, freeze_step / budget),
        "backend": keras.backend.backend(),
        "lora_rank": lora_rank, "lora_layers": lora_layers,
        "lora_trainable_params": None if lora_rank is None else int(sum(
            np.prod(v.shape) for v in model.trainable_variables)),
        "ema_momentum": None if ema_momentum is None
        else float(ema_momentum),
    }
    schedule = schedules.WarmupDecay(
        float(learning_rate), budget, schedules.warmup_steps(task, budget),
        decay="cosine")
    average = {} if ema_momentum is None else {
        "use_ema": True, "ema_momentum": float(ema_momentum)}
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=task.weight_decay,
                                       **average)
    order = pretrain_lib.batch_order(len(task.x_train), budget,
                                     int(task.batch_size), seed)
    batch = int(task.batch_size)
    seconds = []
    iterations = []
    keras.utils.set_random_seed(int(seed))
    try:
        for first, last, frozen_now in segments:
            if lora_rank is None:  # (LoRA set its own trainable flags.)
                _set_trainable(model, frozen_now)
            # The same optimizer object: its slots and step count carry on.
            model.compile(optimizer=optimizer, loss=task.loss)
            index = order[first * batch: last * batch]
            begin = time.perf_counter()
            model.fit(task.x_train[index], task.y_train[index],
                      batch_size=batch, epochs=1, shuffle=False, verbose=0)
            seconds.append(time.perf_counter() - begin)
            iterations.append(int(keras.ops.convert_to_numpy(
                optimizer.iterations)))
        result.update(evaluate(model, validators))
    finally:
        if lora_rank is None:
            _set_trainable(model, [])  # As the user left it: all trainable.
    result["optimizer_iterations"] = iterations[-1]
    result["iterations_at_freeze"] = iterations[0] if len(segments) > 1 \
        else None
    result["seconds_per_segment"] = seconds
    result["train_seconds"] = float(sum(seconds))
    result["last_learning_rate"] = schedule.value(budget - 1)
    if result["optimizer_iterations"] != budget:
        raise RuntimeError(
            f"The run took {result['optimizer_iterations']} optimizer steps "
            f"instead of {budget}."
        )
    return result


def time_steps(task, depth, steps=20, repetitions=5, seed=0):
    """Seconds per step of the bottom `depth` groups frozen against full
    fine-tuning, measured side by side in this process.

    Both models are built and compiled once and warmed up; then each
    repetition fits `steps` steps with each (the order alternating between
    repetitions) on the same batches.

    Returns:
        A dict: `full_s` and `frozen_s` (seconds per step, one per
        repetition), `ratios` (frozen / full of the same repetition), and
        `backward_share` of the frozen model.
    """
    batch = int(task.batch_size)
    order = pretrain_lib.batch_order(len(task.x_train), steps, batch, seed)
    x, y = task.x_train[order], task.y_train[order]
    keras.backend.clear_session()
    models = {}
    for name, frozen_depth in (("full", 0), ("frozen", depth)):
        model = task.build_model(seed)
        frozen = frozen_layers(model, frozen_depth)
        _set_trainable(model, frozen)
        model.compile(optimizer=keras.optimizers.AdamW(
            1e-4, weight_decay=task.weight_decay), loss=task.loss)
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch,
                  epochs=1, shuffle=False, verbose=0)  # Traces.
        models[name] = (model, frozen)
    times = {"full": [], "frozen": []}
    for rep in range(repetitions):
        names = ("full", "frozen") if rep % 2 == 0 else ("frozen", "full")
        for name in names:
            model = models[name][0]
            begin = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False,
                      verbose=0)
            times[name].append((time.perf_counter() - begin) / steps)
    model, frozen = models["frozen"]
    return {
        "depth": int(depth), "steps": int(steps),
        "repetitions": int(repetitions), "frozen": frozen,
        "full_s": times["full"], "frozen_s": times["frozen"],
        "ratios": [f / g for f, g in zip(times["frozen"], times["full"])],
        "backward_share": backward_share(model, frozen),
        "backend": keras.backend.backend(),
    }


def median(values):
    """The median of the finite values, or `None`."""
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None
