"""Does the `outer` preset stop itself where its outer steps cost quality?

Three arms, on two tasks, public API only:

- `plain`: the Keras model, plain `fit()`;
- `outer-unguarded`: `HybridPredictCallback({"preset": "outer",
  "outer_patience": 0})`, the preset as it was before its guard;
- `outer`: `HybridPredictCallback("outer")` (its guard on,
  `outer_patience: 2`).

Tasks:

- `teacher`: a small teacher-student classifier, the case of issue 27. A
  random teacher MLP (20 -> 32 tanh -> 5) labels Gaussian inputs by
  sampling its softmax (irreducible noise); a student MLP (20 -> 128 relu ->
  128 relu -> 5) learns it from 2000 examples, 1000 held out; Adam 1e-3,
  batch 50, 12 epochs (480 steps). Plain training overfits after 2-3 epochs;
  `outer` overfits sooner.
- `cnn16`: the small CNN on synthetic 16x16 images of
  `../2026-12-04-outer-cnn-cost` (2016 images, batch 32, Adam 1e-3, 15
  epochs: 945 steps), where `outer` ends far below plain training.

Every run validates each epoch on the held-out set (`validation_data`);
`--no-validation` runs every arm without it, the `outer` arm with
`outer_check_batches: true` (the guard then judges the check-batch loss; off
in the preset). The final held-out loss is measured after `fit()`.
Each run is in its own process. Usage:

    python run.py [--tasks teacher,cnn16] [--seeds 4,5,6]
                  [--arms plain,outer-unguarded,outer] [--no-validation]
                  [--out results.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _teacher_data(seed):
    """Gaussian inputs labelled by a random teacher MLP (per seed)."""
    import numpy as np

    rng = np.random.default_rng(1000 + seed)
    d, hidden, classes = 20, 32, 5
    w1 = rng.normal(size=(d, hidden)) / np.sqrt(d)
    w2 = rng.normal(size=(hidden, classes)) * 3.0 / np.sqrt(hidden)

    def draw(n):
        x = rng.normal(size=(n, d)).astype("float32")
        logits = np.tanh(x @ w1) @ w2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        return x, y

    return draw(2000), draw(1000)


def _student():
    import keras

    return keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(5),
    ])


def _cnn16(seed):
    """The `cnn16` task of `../2026-12-04-outer-cnn-cost/run.py`."""
    sys.path.insert(0, os.path.join(HERE, "..", "2026-12-04-outer-cnn-cost"))
    import run as cnn_cost

    data = cnn_cost._synthetic_images(seed)
    return data, lambda: cnn_cost._small_cnn(None)


def child(arm, task, seed, validate):
    import keras

    import keras_hybrid as kh

    if task == "teacher":
        (x, y), (xv, yv) = _teacher_data(seed)
        build, batch_size, epochs = _student, 50, 12
    else:
        ((x, y), (xv, yv)), build = _cnn16(seed)
        batch_size, epochs = 32, 15
    keras.utils.set_random_seed(seed)
    model = build()
    callbacks = []
    if arm != "plain":
        model = kh.HybridModel.wrap(model)
        config = {"preset": "outer"}
        if arm == "outer-unguarded":
            config["outer_patience"] = 0
        elif not validate:
            config["outer_check_batches"] = True
        callbacks.append(kh.HybridPredictCallback(config, verbose=0))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=0,
        validation_data=(xv, yv) if validate else None, callbacks=callbacks,
    )
    final = model.evaluate(xv, yv, batch_size=256, verbose=0)
    result = {
        "arm": arm, "task": task, "seed": seed, "validation": validate,
        "final_val_loss": float(final),
        "val_losses": [float(v) for v in history.history.get("val_loss", [])],
    }
    if callbacks:
        report = callbacks[0].report()
        result["jumps_made"] = sum(j["accepted_scale"] is not None
                                   for j in report["jumps"])
        result["outer_guard"] = report["outer_guard"]
        result["steps"] = report["training_summary"]["total_steps"]
    print("RESULT " + json.dumps(result))


def run_child(arm, task, seed, validate):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, __file__, "--child", arm, task, str(seed)]
    if not validate:
        command.append("--no-validation")
    out = subprocess.run(command, capture_output=True, text=True, env=env,
                         check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{arm} {task} {seed} failed:\n{out.stderr[-3000:]}")


def summarize(results, tasks, arms):
    """Per task and arm: the final held-out loss per seed, its median and
    range, and the ratio to plain's of the same seed (median [min-max])."""
    table = {}
    for task in tasks:
        plain = {r["seed"]: r["final_val_loss"] for r in results
                 if r["task"] == task and r["arm"] == "plain"}
        for arm in arms:
            runs = [r for r in results
                    if r["task"] == task and r["arm"] == arm]
            losses = [r["final_val_loss"] for r in runs]
            ratios = [r["final_val_loss"] / plain[r["seed"]] for r in runs
                      if r["seed"] in plain]
            row = {
                "final_val_loss": dict(
                    zip([str(r["seed"]) for r in runs], losses)),
                "median": statistics.median(losses),
                "min": min(losses), "max": max(losses),
            }
            if ratios:
                row["ratio_to_plain"] = {"median": statistics.median(ratios),
                                         "min": min(ratios),
                                         "max": max(ratios)}
            stops = [r["outer_guard"]["stop_step"] for r in runs
                     if r.get("outer_guard") and r["outer_guard"]["stopped"]]
            if "outer_guard" in (runs[0] if runs else {}):
                row["guard_stopped"] = f"{len(stops)} of {len(runs)}"
                row["stop_steps"] = stops
            table[f"{task}/{arm}"] = row
    return table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="teacher,cnn16")
    parser.add_argument("--seeds", default="4,5,6")
    parser.add_argument("--arms", default="plain,outer-unguarded,outer")
    parser.add_argument("--no-validation", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    tasks, arms = args.tasks.split(","), args.arms.split(",")
    results = []
    for task in tasks:
        for seed in (int(s) for s in args.seeds.split(",")):
            for arm in arms:
                r = run_child(arm, task, seed, not args.no_validation)
                results.append(r)
                guard = r.get("outer_guard") or {}
                print(f"{task} seed {seed} {arm}: final val loss "
                      f"{r['final_val_loss']:.4f}, jumps {r.get('jumps_made')}"
                      f", guard stopped at {guard.get('stop_step')}",
                      flush=True)
    summary = summarize(results, tasks, arms)
    for key, row in summary.items():
        ratio = row.get("ratio_to_plain")
        print(f"{key}: median {row['median']:.4f} [{row['min']:.4f}-"
              f"{row['max']:.4f}]" + (
                  f", / plain {ratio['median']:.3f} [{ratio['min']:.3f}-"
                  f"{ratio['max']:.3f}]" if ratio else "")
              + (f", stopped {row['guard_stopped']}"
                 if "guard_stopped" in row else ""))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"command": " ".join(["python", "run.py"] + sys.argv[1:]),
                   "summary": summary, "runs": results}, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]),
              "--no-validation" not in sys.argv)
    else:
        main()
