"""The hybrid callback's fine-tuning arms on ft-topics and ft-docs, next to
the plain references and the freeze oracle of
../2026-12-04-finetune-oracle (same tasks, recipe, data order, seeds and
tuned learning rate).

Arms (reported seeds 0-2, full fine-tuning's learning rate as tuned by the
oracle on seeds 100-101):
- `finetune`: the preset (layer-wise freezing by measurement), its default
  settings, chosen before any run;
- `lp-ft`: LP-FT in one fit(): the head alone for the first quarter of the
  budget, then everything (`FreezeSchedule.head_first`; the quarter is a
  fixed choice, not tuned);
- `extrapolate`: the first quarter of full fine-tuning, then
  `theta_pre + alpha * (theta - theta_pre)`, alpha picked on the
  validation split (compare its test loss);
- `balanced`, `outer`: the whole-model presets (seed 0 only, for time);
and the step time with the bottom half of the groups frozen under the
callback against nothing frozen, alternated in one process.

Run from the repository root (TensorFlow CPU):
    python benchmarks/results/2026-12-04-finetune-hybrid/run.py [TASK ...]
Every run is written to runs/<task>/<arm>-seed<seed>.json as it ends and
read back instead of run again.
"""

import glob
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402
from keras_hybrid.bench import finetune  # noqa: E402
from keras_hybrid.bench import finetune_arms  # noqa: E402
from keras_hybrid.bench import freeze_runs  # noqa: E402
from keras_hybrid.serialization import clean_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(HERE, "..", "2026-12-04-finetune-oracle", "runs")
SEEDS = (0, 1, 2)
TUNE_SEEDS = (100, 101)


def tuned_rate(task_name, wait=True):
    """Full fine-tuning's rate with the lowest mean validation loss over
    the oracle's tuning seeds (waits for the oracle's tuning runs)."""
    while True:
        by_rate = {}
        for path in glob.glob(os.path.join(ORACLE, task_name, "full-lr*")):
            with open(path) as f:
                run = json.load(f)
            if run["seed"] in TUNE_SEEDS:
                by_rate.setdefault(run["learning_rate"], []).append(
                    run["val_loss"])
        complete = {r: v for r, v in by_rate.items()
                    if len(v) == len(TUNE_SEEDS)}
        if len(complete) >= 3:
            return min(complete, key=lambda r: np.mean(complete[r]))
        if not wait:
            return None
        time.sleep(60)


def run_or_read(path, make):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    result = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(clean_json(result), f, indent=1)
    return result


def main(task_names):
    for name in task_names:
        rate = tuned_rate(name)
        print(f"[{name}] tuned full fine-tuning rate {rate:g}", flush=True)
        task = finetune.get_finetune_task(name, progress=False)
        groups = finetune_arms.groups_of(task.build_model(0))
        budget = freeze_runs.budget_steps(task)
        out = os.path.join(HERE, "runs", name)
        for seed in SEEDS:
            arms = {
                "finetune": lambda: finetune_arms.run_hybrid(
                    task, seed, rate, "finetune"),
                "lp-ft": lambda: finetune_arms.run_hybrid(
                    task, seed, rate, "plain",
                    freeze=kh.FreezeSchedule.head_first(
                        steps=budget // 4, groups=groups)),
            }
            arms["extrapolate"] = lambda: finetune_arms.run_extrapolation(
                task, seed, rate)
            if seed == 0:
                for preset in ("balanced", "outer"):
                    arms[preset] = (lambda preset=preset:
                                    finetune_arms.run_hybrid(
                                        task, seed, rate, preset))
            for arm, make in arms.items():
                begin = time.perf_counter()
                result = run_or_read(
                    os.path.join(out, f"{arm}-seed{seed}.json"), make)
                print(f"[{name}] {arm} seed {seed}: val_loss "
                      f"{result['val_loss']:.4f} backward share "
                      f"{result['backward_share']:.3f} "
                      f"({time.perf_counter() - begin:.0f} s)", flush=True)
        depth = len(groups) // 2
        timing = run_or_read(
            os.path.join(out, f"timing-depth{depth}.json"),
            lambda: finetune_arms.time_frozen_steps(
                task, depth, steps=20, repetitions=5))
        print(f"[{name}] step time, bottom {depth} of {len(groups)} groups "
              f"frozen / none: median {timing['median_ratio']:.3f} "
              f"(per repetition {[round(r, 3) for r in timing['ratios']]})",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ft-topics", "ft-docs"])
