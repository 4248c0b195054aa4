"""Fine-tuning arms that run through the hybrid callback: a freeze schedule
(e.g. LP-FT in one `fit()`), the `finetune` preset's layer-wise freezing,
or a whole-model preset, on the tasks of `keras_hybrid.bench.finetune`.

Each arm has the same recipe, data order and evaluation as the plain-Keras
references of `keras_hybrid.bench.freeze_runs` (AdamW, linear warmup +
cosine decay over the budget, one seeded batch order), so their figures
compare directly. Backward work is counted from per-layer FLOPs
(`keras_hybrid.bench.flops`): a frozen prefix costs nothing, a frozen
layer with trainable layers below it its input gradient.
"""

import time

import keras
import numpy as np

import keras_hybrid as kh
from keras_hybrid.bench import backbone as backbone_lib
from keras_hybrid.bench import flops as flops_lib
from keras_hybrid.bench import freeze_runs
from keras_hybrid.bench import pretrain as pretrain_lib
from keras_hybrid.bench import schedules


def groups_of(model):
    """The task model's layer groups for the callback (the bench's own
    grouping: embeddings, each block, final norm + head)."""
    return backbone_lib.block_names(model)


def _flop_share(model, groups, events, budget, flops):
    """The run's backward FLOPs over full fine-tuning's, from the frozen
    depth of each stretch of steps (`events`: the report's freeze
    switches)."""
    share, depth, start = 0.0, 0, 0
    for event in sorted(events, key=lambda e: e["step"]):
        step = min(int(event["step"]), budget)
        frozen = [n for g in groups[:depth] for n in g]
        share += (step - start) * flops_lib.backward_share(
            model, frozen, flops)
        depth, start = int(event["frozen_groups"]), step
    frozen = [n for g in groups[:depth] for n in g]
    share += (budget - start) * flops_lib.backward_share(model, frozen, flops)
    return share / budget


def run_hybrid(task, seed, learning_rate, config="plain", freeze=None,
               steps=None):
    """Fine-tunes `task` once with `HybridPredictCallback(config,
    freeze=freeze)`; returns its figures like `freeze_runs.run_finetune`,
    plus the callback's report entries.

    Args:
        task: a `keras_hybrid.bench.finetune.FinetuneTask`.
        seed: seeds the new head's weights and the batch order.
        learning_rate: the peak learning rate.
        config: the callback's config (preset name, dict or
            `HybridConfig`); layer-wise freezing uses the task's groups.
        freeze: a `FreezeSchedule` over the task's groups, or `None`.
        steps: the budget (default: the task's epochs of steps).
    """
    budget = int(steps or freeze_runs.budget_steps(task))
    keras.backend.clear_session()
    inner = task.build_model(seed)
    groups = groups_of(inner)
    config = kh.HybridConfig.resolve(config)
    if config.layerwise.enabled and config.layerwise.groups == "auto":
        config.layerwise.groups = groups
    model = kh.HybridModel.wrap(inner)
    schedule = schedules.WarmupDecay(
        float(learning_rate), budget, schedules.warmup_steps(task, budget),
        decay="cosine")
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=task.weight_decay)
    model.compile(optimizer=optimizer, loss=task.loss)
    order = pretrain_lib.batch_order(len(task.x_train), budget,
                                     int(task.batch_size), seed)
    callback = kh.HybridPredictCallback(config, verbose=0, freeze=freeze)
    keras.utils.set_random_seed(int(seed))
    begin = time.perf_counter()
    model.fit(task.x_train[order], task.y_train[order],
              batch_size=int(task.batch_size), epochs=1, shuffle=False,
              verbose=0, callbacks=[callback])
    seconds = time.perf_counter() - begin
    report = callback.report()
    summary = report["training_summary"]
    freezing = report.get("freezing") or {"events": []}
    flops = flops_lib.forward_flops(inner)
    result = {
        "task": task.name, "seed": int(seed),
        "learning_rate": float(learning_rate), "steps": budget,
        "config": config.to_dict() if not callable(
            config.layerwise.groups) else None,
        "freeze": None if freeze is None else freeze.get_config(),
        "freeze_events": freezing["events"],
        "checks": freezing.get("checks"),
        "backward_share": _flop_share(inner, groups, freezing["events"],
                                      budget, flops)
        * summary["backward_passes"] / max(summary["total_steps"], 1),
        "backward_passes": summary["backward_passes"],
        "forward_passes": summary["forward_passes"],
        "train_seconds": seconds,
        "optimizer_iterations": int(keras.ops.convert_to_numpy(
            optimizer.iterations)),
        "backend": keras.backend.backend(),
    }
    result.update(freeze_runs.evaluate(model, freeze_runs._validators(task)))
    return result


def time_frozen_steps(task, depth, steps=20, repetitions=5, seed=0):
    """Seconds per step under the callback with the bottom `depth` groups
    frozen (a `FreezeSchedule.bottom`) against the callback with nothing
    frozen (the `plain` preset), side by side in this process, alternated.

    Returns:
        A dict like `freeze_runs.time_steps`: `full_s`, `frozen_s`, and
        `ratios` (frozen / full, per repetition).
    """
    batch = int(task.batch_size)
    order = pretrain_lib.batch_order(len(task.x_train), steps, batch, seed)
    x, y = task.x_train[order], task.y_train[order]
    keras.backend.clear_session()
    arms = {}
    for name, frozen_depth in (("full", 0), ("frozen", depth)):
        inner = task.build_model(seed)
        groups = groups_of(inner)
        model = kh.HybridModel.wrap(inner)
        model.compile(optimizer=keras.optimizers.AdamW(
            1e-4, weight_decay=task.weight_decay), loss=task.loss)
        freeze = None if not frozen_depth else kh.FreezeSchedule.bottom(
            frozen_depth, groups=groups)

        def fit(model=model, freeze=freeze):
            model.fit(x, y, batch_size=batch, epochs=1,
                      shuffle=False, verbose=0, callbacks=[
                          kh.HybridPredictCallback("plain", verbose=0,
                                                   freeze=freeze)])

        fit()  # traces (the step of each frozen depth) ...
        fit()  # ... and any retrace of a second fit()
        arms[name] = fit
    times = {"full": [], "frozen": []}
    for rep in range(repetitions):
        names = ("full", "frozen") if rep % 2 == 0 else ("frozen", "full")
        for name in names:
            begin = time.perf_counter()
            arms[name]()
            times[name].append((time.perf_counter() - begin) / steps)
    return {
        "depth": int(depth), "steps": int(steps),
        "repetitions": int(repetitions),
        "full_s": times["full"], "frozen_s": times["frozen"],
        "ratios": [f / g for f, g in zip(times["frozen"], times["full"])],
        "median_ratio": float(np.median(
            [f / g for f, g in zip(times["frozen"], times["full"])])),
        "backend": keras.backend.backend(),
    }


ALPHAS = (1.0, 1.5, 2.0, 3.0, 5.0)


def run_extrapolation(task, seed, learning_rate, fraction=0.25,
                      alphas=ALPHAS, steps=None):
    """Forward-only extrapolation from the pretrained start (as in ExPO):
    the first `fraction` of full fine-tuning (its recipe over the whole
    budget), then `theta_pre + alpha * (theta - theta_pre)` with `alpha`
    picked by the validation loss; reported on the test split (and the
    validation loss of the picked point).

    Returns:
        A dict like `run_hybrid`'s: `alpha`, `val_loss` / `test_loss` of
        the picked point, `alpha_val_losses`, and `backward_share`
        (`fraction`: the extrapolation itself runs forward passes only).
    """
    budget = int(steps or freeze_runs.budget_steps(task))
    trained = max(1, int(round(fraction * budget)))
    keras.backend.clear_session()
    model = task.build_model(seed)
    start = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    schedule = schedules.WarmupDecay(
        float(learning_rate), budget, schedules.warmup_steps(task, budget),
        decay="cosine")
    optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                       weight_decay=task.weight_decay)
    model.compile(optimizer=optimizer, loss=task.loss)
    order = pretrain_lib.batch_order(len(task.x_train), budget,
                                     int(task.batch_size), seed)
    batch = int(task.batch_size)
    keras.utils.set_random_seed(int(seed))
    begin = time.perf_counter()
    model.fit(task.x_train[order[: trained * batch]],
              task.y_train[order[: trained * batch]], batch_size=batch,
              epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - begin
    reached = [keras.ops.convert_to_numpy(v)
               for v in model.trainable_variables]
    validators = freeze_runs._validators(task)
    losses = {}
    for alpha in alphas:
        for variable, a, b in zip(model.trainable_variables, start, reached):
            variable.assign(a + alpha * (b - a))
        losses[alpha] = validators["val"](model)[0]
    best = min(losses, key=losses.get)
    for variable, a, b in zip(model.trainable_variables, start, reached):
        variable.assign(a + best * (b - a))
    result = {
        "task": task.name, "seed": int(seed),
        "learning_rate": float(learning_rate), "steps": budget,
        "trained_steps": trained, "alpha": float(best),
        "alpha_val_losses": {str(k): float(v) for k, v in losses.items()},
        "backward_share": trained / budget,
        "train_seconds": seconds, "backend": keras.backend.backend(),
    }
    result.update(freeze_runs.evaluate(model, validators))
    return result
