"""What the `outer` preset costs in wall-clock on a small CNN.

A user-like small CNN on synthetic 16x16 images (2016 training images, batch
32, Adam 1e-3, 15 epochs: 945 steps, validation every epoch; `cnn16`) and
the bench's `mnist1d-cnn` (quick size: 8 epochs of 68 steps, batch 128).
Arms, each `fit()` in a fresh process (imports excluded, tracing included,
as a user sees it):

- `plain`: the Keras model, plain `fit()`;
- `outer`: `kh.HybridModel.wrap(model)` with `HybridPredictCallback("outer")`;
- `keras-check` (`--arms`): plain `fit()` with Keras' own finite check
  (the optimizer in a `LossScaleOptimizer` with its scale fixed at 1), the
  reference for what a guarded step costs;
- `wrapped` and `outer-off` may be named in `--arms` too;
- `outer-fullN` (`--arms`): `outer` with `full_steps: N` (its FULL phases
  are 30 steps; a phase end costs about the same however long the phase);
- with `--diagnostic`, also `wrapped` (the wrapper without the callback) and
  `outer-off` (`outer` with `enable_prediction: false`: the monitored FULL
  steps without the jumps; as nothing is predicted, most of its FULL phases
  are quiet ones, which fit nothing), to tell what the jumps and their
  phase ends cost from what the monitored step costs.

For each hybrid arm the runner's own figures are printed too (its report's
`phase_statistics.median_call_time_ms` per kind of call and
`predictor_overhead`: the phase-end work in ms per FULL phase and per
prediction, and its share of the step time).

The arms alternate within each repetition (the order reverses every other
repetition); the ratios are per repetition (`outer` / `plain` of the same
repetition), reported as median [min-max], next to the ratio of the median
wall-clocks. CPU time (user + system of the process during `fit()`) is
reported too: it varies less on a shared machine.

`--count` runs each arm once more with a counter of forward passes in the
model (a `tf.Variable` outside the model, incremented in the model's first
layer, TensorFlow only), to check that `outer` runs no more forward passes
in training than plain `fit()`.

Only the public API is used. Usage:

    python run.py [--repetitions 3] [--seed 1] [--tasks cnn16,mnist1d-cnn]
                  [--arms plain,outer,outer-full90] [--diagnostic] [--count]
                  [--out results.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------- child
def _synthetic_images(seed):
    """Ten noisy class prototypes of 16x16 images: 2016 training and 512
    validation images (the same for every seed)."""
    import numpy as np

    rng = np.random.default_rng(1234)
    prototypes = rng.normal(size=(10, 16, 16, 1)).astype("float32")
    draw = np.random.default_rng(99)

    def split(count):
        y = draw.integers(0, 10, size=count)
        noise = draw.normal(size=(count, 16, 16, 1)).astype("float32")
        return (prototypes[y] + 1.5 * noise).astype("float32"), y

    del seed
    return split(2016), split(512)


def _small_cnn(counter):
    import keras

    layers = [keras.Input((16, 16, 1))]
    if counter is not None:
        layers.append(counter)
    layers += [
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ]
    return keras.Sequential(layers)


def _counter_layer():
    """A layer that counts its calls in training and in inference in a
    `tf.Variable` the model does not track (so no snapshot, rollback or
    restore of the hybrid ever resets it)."""
    import keras
    import tensorflow as tf

    counts = tf.Variable([0, 0], dtype="int64", trainable=False)

    class CountForward(keras.layers.Layer):
        def call(self, inputs, training=None):
            index = 0 if training else 1
            counts.assign_add(tf.one_hot(index, 2, dtype="int64"))
            return inputs

    return CountForward(), counts


def child(arm, task_name, seed, count):
    import keras
    import numpy as np

    import keras_hybrid as kh

    counter, counts = (None, None)
    if count:
        counter, counts = _counter_layer()
    if task_name == "cnn16":
        (x, y), (xv, yv) = _synthetic_images(seed)
        keras.utils.set_random_seed(seed)
        model = _small_cnn(counter)
        batch_size, epochs = 32, 15
        optimizer = keras.optimizers.Adam(1e-3)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        from keras_hybrid.bench.tasks import get_task

        task = get_task(task_name, quick=True)
        x, y, xv, yv = task.x_train, task.y_train, task.x_val, task.y_val
        inner = task.build_model(seed)
        model = inner
        if counter is not None:
            model = keras.Sequential([keras.Input(inner.input_shape[1:]),
                                      counter, inner])
        batch_size, epochs = task.batch_size, task.epochs
        optimizer = task.make_optimizer()
        loss = task.loss
    callbacks = []
    if arm == "keras-check":
        # Keras' own in-graph finite check (the scale fixed at 1): what a
        # guarded step costs without keras-hybrid.
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1)
    elif arm != "plain":
        model = kh.HybridModel.wrap(model)
    if arm.startswith("outer"):
        config = {"preset": "outer"}
        if arm == "outer-off":
            config["enable_prediction"] = False
        elif arm.startswith("outer-full"):
            config["full_steps"] = int(arm[len("outer-full"):])
        callback = kh.HybridPredictCallback(config, verbose=0)
        callbacks.append(callback)
    model.compile(optimizer=optimizer, loss=loss)
    epoch_ends = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epoch_ends.append(time.perf_counter() - start)

    cpu = os.times()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs,
                        validation_data=(xv, yv),
                        callbacks=callbacks + [EpochClock()], verbose=0)
    wall = time.perf_counter() - start
    after = os.times()
    result = {
        "arm": arm, "task": task_name, "seed": seed,
        "wall_s": wall,
        "cpu_s": (after.user - cpu.user) + (after.system - cpu.system),
        "final_val_loss": float(history.history["val_loss"][-1]),
        "val_losses": [float(v) for v in history.history["val_loss"]],
        "epoch_end_s": epoch_ends,
        "steps": int(np.ceil(len(x) / batch_size)) * epochs,
        "validation_batches": int(np.ceil(len(xv) / batch_size)) * epochs,
    }
    if callbacks:
        report = callbacks[0].report()
        summary = report["training_summary"]
        result.update(
            backward_passes=summary["backward_passes"],
            forward_passes=summary["forward_passes"],
            jumps=len(report["jumps"]),
            jumps_accepted=sum(j["accepted_scale"] is not None
                               for j in report["jumps"]),
            median_call_time_ms=report["phase_statistics"][
                "median_call_time_ms"],
            predictor_overhead=report["predictor_overhead"],
            events=len(report["divergence_events"]),
            event_kinds=sorted(
                f"{e['signal']}: {str(e['outcome']).split(':')[0]}"
                for e in report["divergence_events"]),
        )
    if counts is not None:
        training, inference = (int(v) for v in counts.numpy())
        result.update(counted_training_forward=training,
                      counted_inference_forward=inference)
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- parent
def run_child(arm, task, seed, count=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, __file__, "--child", arm, task, str(seed)]
        + (["--count"] if count else []),
        capture_output=True, text=True, env=env, check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{arm} on {task} failed:\n{out.stderr[-3000:]}")


def _spread(values):
    return (f"{statistics.median(values):.3f} "
            f"[{min(values):.3f}-{max(values):.3f}]")


def loss_by(run, seconds):
    """The validation loss of the last epoch that ended by `seconds` of
    `fit()` (`None` before the first)."""
    done = [loss for t, loss in zip(run["epoch_end_s"], run["val_losses"])
            if t <= seconds]
    return done[-1] if done else None


def equal_wall_clock(runs, arm):
    """`arm`'s validation loss when the same repetition's plain `fit()`
    ended (the last epoch it had finished by then), next to plain's final
    one, per repetition."""
    return [(loss_by(r, p["wall_s"]), p["final_val_loss"])
            for r, p in zip(runs[arm], runs["plain"])]


def summarize(runs, arms):
    """Per arm: median [min-max] wall and CPU seconds; per hybrid arm its
    per-repetition ratio to `plain` and the ratio of the medians."""
    lines = []
    plain = runs["plain"]
    for arm in arms:
        walls = [r["wall_s"] for r in runs[arm]]
        cpus = [r["cpu_s"] for r in runs[arm]]
        row = {"arm": arm, "wall_s": walls, "cpu_s": cpus}
        text = f"{arm:10s} wall {_spread(walls)} s, CPU {_spread(cpus)} s"
        if arm != "plain":
            wall_ratios = [r["wall_s"] / p["wall_s"]
                           for r, p in zip(runs[arm], plain)]
            cpu_ratios = [r["cpu_s"] / p["cpu_s"]
                          for r, p in zip(runs[arm], plain)]
            of_medians = statistics.median(walls) / statistics.median(
                [p["wall_s"] for p in plain])
            row.update(wall_ratio=wall_ratios, cpu_ratio=cpu_ratios,
                       ratio_of_medians=of_medians)
            text += (f"; / plain: wall {_spread(wall_ratios)} (medians "
                     f"{of_medians:.3f}), CPU {_spread(cpu_ratios)}")
            losses = [float(statistics.median(
                [r["final_val_loss"] for r in runs[a]])) for a in (arm,
                                                                  "plain")]
            text += (f"; final val loss {losses[0]:.4f} against plain's "
                     f"{losses[1]:.4f}")
            same = [(a, b) for a, b in equal_wall_clock(runs, arm)
                    if a is not None]
            if same:
                text += ("; at plain's wall-clock "
                         f"{statistics.median([a for a, _ in same]):.4f} "
                         f"(each repetition: "
                         + ", ".join(f"{a:.4f}" for a, _ in same) + ")")
            row.update(equal_wall_clock=equal_wall_clock(runs, arm))
        lines.append((row, text))
    return lines


def runner_figures(arm, runs):
    """The runner's own figures of a hybrid arm, median over its runs."""
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    kinds = sorted({k for r in runs for k in r["median_call_time_ms"]})
    calls = ", ".join(
        f"{k} {median([r['median_call_time_ms'].get(k) for r in runs]):.2f}"
        for k in kinds)
    overhead = {k: median([r["predictor_overhead"].get(k) for r in runs])
                for k in ("update_ms", "predict_ms", "pct_of_step_time")}
    return (
        f"{arm:10s} runner: median call ms {calls}; phase ends "
        f"{overhead['update_ms']:.1f} ms per FULL phase, "
        f"{overhead['predict_ms']:.1f} ms per prediction, "
        f"{overhead['pct_of_step_time']:.1f}% of the step time; jumps "
        f"accepted {median([r['jumps_accepted'] for r in runs]):.0f} of "
        f"{median([r['jumps'] for r in runs]):.0f}; interventions "
        f"{median([r['events'] for r in runs]):.0f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("ARM", "TASK", "SEED"))
    parser.add_argument("--count", action="store_true")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks", default="cnn16")
    parser.add_argument("--diagnostic", action="store_true")
    parser.add_argument("--arms", default="plain,outer",
                        help="comma-separated: plain, outer, keras-check, "
                        "wrapped, outer-off, outer-fullN")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        arm, task, seed = args.child
        child(arm, task, int(seed), args.count)
        return
    arms = args.arms.split(",")
    if arms[0] != "plain":
        parser.error("the first arm must be plain (the reference)")
    if args.diagnostic:
        arms += ["wrapped", "outer-off"]
    tasks = args.tasks.split(",")
    results = {"arms": arms, "tasks": {}}
    for task in tasks:
        runs = {arm: [] for arm in arms}
        for index in range(args.repetitions):
            order = arms if index % 2 == 0 else arms[::-1]
            for arm in order:
                result = run_child(arm, task, args.seed)
                runs[arm].append(result)
                print(f"{task} rep {index + 1} {arm}: "
                      f"{result['wall_s']:.2f} s wall, "
                      f"{result['cpu_s']:.2f} s CPU, "
                      f"val loss {result['final_val_loss']:.4f}", flush=True)
        summary = summarize(runs, arms)
        print(f"\n{task}, {args.repetitions} alternated repetitions, "
              "median [min-max]:")
        for _, text in summary:
            print("  " + text)
        for arm in arms:
            reported = [r for r in runs[arm] if "median_call_time_ms" in r]
            if reported:
                print("  " + runner_figures(arm, reported))
        entry = {"runs": runs, "summary": [row for row, _ in summary]}
        if args.count:
            entry["count"] = {arm: run_child(arm, task, args.seed, True)
                              for arm in arms}
            for arm, result in entry["count"].items():
                print(f"  {arm:10s} forward passes counted in the model: "
                      f"training {result['counted_training_forward']}, "
                      f"inference {result['counted_inference_forward']} "
                      f"({result['steps']} steps, "
                      f"{result['validation_batches']} validation batches)")
        results["tasks"][task] = entry
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
