"""`run_overhead`: the fit() overhead measurement alone, per task, each in
its own subprocess (`keras-hybrid overhead`).

It answers "what does the callback cost on this machine when it predicts
nothing?" without running the benchmark's training arms; `keras-hybrid
bench` runs the same measurement for every task it benchmarks.
"""

import datetime
import json
import os
import time

from keras_hybrid.bench import harness
from keras_hybrid.bench import overhead
from keras_hybrid.serialization import clean_json


def run_overhead(tasks, config="default", quick=False, out_dir="overhead_out",
                 backend=None, repetitions=overhead.DEFAULT_REPETITIONS,
                 steps=None, progress=True, jit_compile="auto",
                 steps_per_execution=1, keras_guard=True):
    """Measures plain `fit()` against the hybrid with prediction disabled
    for each task; writes `overhead.json`.

    Each task's entry also holds Keras' own finite check against plain
    `fit()` (with `keras_guard`) and the verdict against the bar (see
    `keras_hybrid.bench.overhead.verdict`).

    Args:
        tasks: a task name, `"all"`, a task object or a list of them.
        config: the hybrid config (preset name, YAML path, dict or
            `HybridConfig`); its prediction is disabled.
        quick: build named tasks at their quick sizes.
        out_dir: where `overhead.json` goes.
        backend: Keras backend of the subprocesses (`None`: inherited).
        repetitions: alternated repetitions per task (at least 1).
        steps: timed steps per repetition (`None`: 200, 60 with `quick`).
        progress: print a line per task.
        jit_compile: `compile()`'s `jit_compile` for both arms (`"auto"`,
            True or False).
        steps_per_execution: `compile()`'s `steps_per_execution` for every
            arm (batches per train-function call).
        keras_guard: also time plain `fit()` with Keras' finite check
            (`LossScaleOptimizer`, scale 1), alternated with the other two.

    Returns:
        The `overhead.json` content as a dict.
    """
    from keras_hybrid.config import HybridConfig

    task_list = harness._resolve_tasks(tasks, quick)
    harness._check_positive_int("repetitions", repetitions)
    if steps is not None:
        harness._check_positive_int("steps", steps)
    harness._check_positive_int("steps_per_execution", steps_per_execution)
    backend = harness._check_backend(backend)
    base = HybridConfig.resolve(config)
    os.makedirs(out_dir, exist_ok=True)
    result = {
        "kind": "overhead",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": harness.machine_info(),
        "versions": harness.package_versions(),
        "backend": backend or os.environ.get("KERAS_BACKEND", "tensorflow"),
        "config": base.to_dict(),
        "quick": bool(quick),
        "jit_compile": jit_compile,
        "steps_per_execution": steps_per_execution,
        "keras_guard": bool(keras_guard),
        "tasks": {},
    }
    start = time.perf_counter()
    for task, payload in task_list:
        spec = {"task": payload, "quick": bool(quick), "seed": 0,
                "config": base.to_dict(), "repetitions": repetitions,
                "steps": steps, "jit_compile": jit_compile,
                "steps_per_execution": steps_per_execution,
                "keras_guard": bool(keras_guard)}
        entry = harness._run_isolated("measure_fit_overhead", spec, backend,
                                      f"[{task.name}] fit overhead")
        result["tasks"][task.name] = entry
        result["backend"] = entry.get("backend") or result["backend"]
        if progress:
            print(f"[{task.name}] ({entry['backend']}) "
                  f"{overhead.format_fit_overhead(entry)}", flush=True)
    result["elapsed_s"] = time.perf_counter() - start
    result = clean_json(result)
    path = os.path.join(out_dir, "overhead.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if progress:
        print(f"wrote {path}")
    return result
