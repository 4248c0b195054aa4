"""`run_benchmark`: the side-by-side benchmark behind every speed claim.

For each task and seed it runs, back to back and each in its own fresh
subprocess (so peak memory is per arm and no arm shares another's caches):

1. `hybrid-<predictor>`: `HybridModel` + `HybridPredictCallback`, one arm per
   predictor type.
2. `baseline`: plain `keras.Model.fit` for the task's epochs, probed (see
   `arms.EvalClock`) at each hybrid arm's backward count.
3. `equal-budget-<predictor>`: plain `fit` stopped after exactly as many
   steps as that hybrid arm ran backward passes, with the task's recipe
   compressed to that budget (see `keras_hybrid.bench.schedules`).
4. `wsd-<predictor>`: plain `fit` for the same budget with the peak learning
   rate held, then a linear cooldown to zero over its last 20%.

Besides, `truncated-<predictor>` is the baseline read at that hybrid arm's
backward count (the baseline's own schedule, stopped early): a third
same-budget reference, derived from the baseline's probe, not run. A hybrid
arm only beats training for fewer steps if it beats all three references.
Every arm of a task trains with the same recipe (`schedule`: `"constant"`
or warmup + `"cosine"`).

All arms of a seed share the seed, the data order, the model, the optimizer
and the machine. A separate subprocess per task times the compiled step
functions (the overhead figures). See DESIGN.md section 6.
"""

import contextlib
import datetime
import importlib.metadata
import json
import multiprocessing
import os
import pickle
import platform
import shlex
import sys
import time

from keras_hybrid.bench import arms
from keras_hybrid.bench import child
from keras_hybrid.bench import child_output
from keras_hybrid.bench import figures
from keras_hybrid.bench import table
from keras_hybrid.bench import verdict
from keras_hybrid.serialization import clean_json
from keras_hybrid.weight_average import check_weight_average

SCHEMA_VERSION = 1
EVAL_POINTS_PER_EPOCH = 8
QUICK_EVAL_POINTS_PER_EPOCH = 4
PROFILE_CALLS = 30
BACKENDS = ("tensorflow", "jax", "torch")
TASK_ATTRIBUTES = (
    "name", "x_train", "y_train", "x_val", "y_val", "batch_size", "epochs",
    "learning_rate", "loss", "metrics", "build_model", "make_optimizer",
    "steps_per_epoch",
)


def run_benchmark(tasks, seeds=3, config="balanced", quick=False,
                  out_dir="bench_out", backend=None, predictors=None,
                  progress=True, epochs=None, profile_calls=PROFILE_CALLS,
                  overhead_repetitions=3, overhead_steps=None,
                  schedule="constant", first_seed=0, weight_average=None,
                  profile=False):
    """Runs the benchmark and writes `bench.json` and one PNG per task.

    Args:
        tasks: a task name, `"all"`, a task object, or a list of names and
            task objects (objects need the interface of
            `keras_hybrid.bench.tasks.Task`).
        seeds: number of seeds (seeds `0 .. seeds - 1`).
        config: the hybrid config: preset name, YAML path, dict or
            `HybridConfig`. Its `predictor.type` is replaced per hybrid arm.
        quick: build named tasks at their quick sizes and validate less often.
        out_dir: where `bench.json` and `<task>.png` go.
        backend: `"tensorflow"`, `"jax"` or `"torch"` for the arm
            subprocesses (`KERAS_BACKEND`); `None` inherits this process's
            environment.
        predictors: predictor types to run a hybrid arm for; `None` runs all
            of `keras_hybrid.dynamics.AVAILABLE`.
        progress: print progress lines.
        epochs: if set, overrides every task's number of epochs.
        profile_calls: timed calls per function in the overhead profile.
        overhead_repetitions: alternated repetitions of the `fit()`
            overhead measurement (plain `fit` against the hybrid with
            prediction disabled; see `keras_hybrid.bench.overhead`); 0 skips
            it.
        overhead_steps: timed steps per repetition of that measurement
            (`None`: 200, 60 with `quick`).
        schedule: the learning-rate recipe of every arm, `"constant"` or
            `"cosine"` (warmup + cosine decay).
        first_seed: the first seed (seeds `first_seed .. first_seed +
            seeds - 1`): tune on seeds other than those reported.
        weight_average: `None`, or a momentum in (0, 1): every arm's
            optimizer keeps Keras' moving average of the weights
            (`use_ema`), and each arm's final validation loss is that of
            the average `fit()` ends on.
        profile: also print the step-time checks against the project's
            internal targets (hybrid FULL step / plain, jump skip step /
            FULL step, predictor overhead); `bench.json` holds them either
            way.

    Returns:
        The `bench.json` content as a dict.
    """
    from keras_hybrid.bench import schedules
    from keras_hybrid.config import HybridConfig

    schedules.check_schedule(schedule)
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or (
        first_seed < 0
    ):
        raise ValueError(
            "`first_seed` must be a non-negative integer. "
            f"Received: first_seed={first_seed!r}"
        )
    task_list = _resolve_tasks(tasks, quick)
    n_seeds = _check_positive_int("seeds", seeds)
    if epochs is not None:
        _check_positive_int("epochs", epochs)
    _check_positive_int("profile_calls", profile_calls)
    overhead = _check_overhead(overhead_repetitions, overhead_steps)
    base = HybridConfig.resolve(config)
    predictors = _check_predictors(predictors)
    backend = _check_backend(backend)
    weight_average = check_weight_average(
        weight_average, backend or os.environ.get("KERAS_BACKEND")
    )
    log = _printer(progress)
    os.makedirs(out_dir, exist_ok=True)
    result = {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command_line": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "versions": package_versions(),
        "backend": backend or os.environ.get("KERAS_BACKEND", "tensorflow"),
        "config": base.to_dict(),
        "config_source": config if isinstance(config, str) else None,
        "quick": bool(quick),
        "seeds": list(range(first_seed, first_seed + n_seeds)),
        "schedule": schedule,
        "weight_average": weight_average,
        "predictors": list(predictors),
        "tasks": {},
    }
    start = time.perf_counter()
    for task, payload in task_list:
        entry = _run_task(task, payload, n_seeds, base, predictors, quick,
                          backend, epochs, profile_calls, log, overhead,
                          schedule=schedule, first_seed=first_seed,
                          weight_average=weight_average)
        result["tasks"][task.name] = entry
        result["backend"] = entry.get("backend") or result["backend"]
        result["elapsed_s"] = time.perf_counter() - start
        _write_json(result, os.path.join(out_dir, "bench.json"))
        entry["plot"] = _plot(task.name, entry, out_dir)
        if progress:
            print(table.format_task(task.name, entry, n_seeds, profile),
                  flush=True)
            print("\n" + "\n".join(verdict.lines(entry, out_dir, profile)),
                  flush=True)
    result = clean_json(result)
    _write_json(result, os.path.join(out_dir, "bench.json"))
    log(f"wrote {os.path.join(out_dir, 'bench.json')} "
        f"({time.perf_counter() - start:.0f}s)")
    return result


# =============================================================== per task
def _run_task(task, payload, n_seeds, base, predictors, quick, backend,
              epochs, profile_calls, log, overhead=None,
              schedule="constant", first_seed=0, weight_average=None):
    common = arm_common(task, payload, quick, epochs, schedule)
    common["weight_average"] = weight_average
    epochs, eval_every = common["epochs"], common["eval_every"]
    configs = {p: _with_predictor(base, p) for p in predictors}
    log(f"[{task.name}] profiling step functions (seed {first_seed})")
    profile = _run_isolated("profile_task", {
        **common, "seed": first_seed, "config": configs[predictors[0]],
        "calls": profile_calls,
    }, backend, f"[{task.name}] profile")
    fit_overhead = None
    if overhead and overhead["repetitions"]:
        log(f"[{task.name}] fit() overhead, prediction disabled "
            f"(seed {first_seed})")
        fit_overhead = _run_isolated("measure_fit_overhead", {
            **common, **overhead, "seed": first_seed,
            "config": configs[predictors[0]],
        }, backend, f"[{task.name}] fit overhead")
    per_seed = []
    for index in range(n_seeds):
        raw = _run_seed(task.name, common, index, n_seeds, configs, backend,
                        log, seed=first_seed + index)
        per_seed.append(_seed_entry(first_seed + index, raw))
    aggregate = figures.aggregate_seeds(
        [{n: a["figures"] for n, a in s["arms"].items()} for s in per_seed]
    )
    predictor_stats = {
        p: {"pct": aggregate[f"hybrid-{p}"]["predictor_overhead_pct"],
            "memory_mb": aggregate[f"hybrid-{p}"]["predictor_memory_mb"]}
        for p in predictors
    }
    return {
        "description": getattr(task, "description", None),
        "backend": profile.get("backend"),
        "settings": _settings(task, epochs, eval_every, schedule),
        "per_seed": per_seed,
        "aggregate": aggregate,
        "ratios": figures.aggregate_seeds([s["ratios"] for s in per_seed]),
        "overhead": figures.overhead_figures(
            task.name, profile, predictor_stats
        ),
        "fit_overhead": fit_overhead,
    }


def arm_common(task, payload, quick, epochs, schedule="constant"):
    """The spec entries every arm of a task shares: `task`, `quick`,
    `epochs` (the task's unless overridden), `eval_every` and `schedule`."""
    points = QUICK_EVAL_POINTS_PER_EPOCH if quick else EVAL_POINTS_PER_EPOCH
    return {
        "task": payload,
        "quick": bool(quick),
        "epochs": epochs or int(task.epochs),
        "eval_every": max(1, int(task.steps_per_epoch) // points),
        "schedule": schedule,
    }


def _run_seed(name, common, index, n_seeds, configs, backend, log,
              seed=None):
    """Runs every arm of one seed back to back; returns `arm -> result`."""
    seed = index if seed is None else seed

    def run(arm_name, **spec):
        label = f"[{name}] {arm_name} seed {seed} ({index + 1}/{n_seeds})"
        log(f"{label} start")
        begin = time.perf_counter()
        result = _run_isolated("run_arm", {
            **common, **spec, "name": arm_name, "seed": seed,
            "label": label, "progress": log.enabled,
        }, backend, label)
        last = result["evals"][-1]["val_loss"] if result["evals"] else None
        log(f"{label} done: train {result['wall_clock_s']:.1f}s, backward "
            f"{result['backward_passes']}, final val_loss "
            f"{table.fmt(last, '.4f')} "
            f"(process {time.perf_counter() - begin:.1f}s)")
        return result

    # The hybrids run first: the baseline is probed at their backward counts.
    hybrids = {
        f"hybrid-{predictor}": run(
            f"hybrid-{predictor}", arm="hybrid", config=config
        )
        for predictor, config in configs.items()
    }
    probes = sorted({h["backward_passes"] for h in hybrids.values()})
    results = {"baseline": run("baseline", arm="baseline",
                               probe_steps=probes)}
    results.update(hybrids)
    for predictor in configs:
        budget = results[f"hybrid-{predictor}"]["backward_passes"]
        for kind in ("equal-budget", "wsd"):
            results[f"{kind}-{predictor}"] = run(
                f"{kind}-{predictor}", arm=kind, budget=budget
            )
    return results


def _seed_entry(seed, raw):
    """Figures, curves and phases of one seed."""
    target = figures.target_loss(
        raw["baseline"]["evals"][-1]["val_loss"]
        if raw["baseline"]["evals"] else None
    )
    entry_arms = {}
    for name, result in raw.items():
        arm = {
            "figures": figures.arm_figures(result, target),
            "epochs": result["epochs"],
            "optimizer_iterations": result["optimizer_iterations"],
            "evals": result["evals"],
        }
        if "budget" in result:
            arm["budget"] = result["budget"]
        report = result.get("report")
        if report is not None:
            report = dict(report)
            arm["phases"] = figures.phases_in_time(
                report.pop("phases"), result["clock"]
            )
            arm["report"] = report
        entry_arms[name] = arm
    for name in raw:
        if name.startswith("hybrid-"):
            predictor = name[len("hybrid-"):]
            budget = raw[name]["backward_passes"]
            entry_arms[f"truncated-{predictor}"] = {
                "figures": figures.truncated_figures(
                    raw["baseline"], budget, target
                ),
                "derived_from": "baseline",
                "budget": budget,
                "evals": [],
            }
    return {
        "seed": seed,
        "target_val_loss": target,
        "arms": entry_arms,
        "ratios": figures.seed_ratios(
            {n: a["figures"] for n, a in entry_arms.items()}
        ),
    }


def _settings(task, epochs, eval_every, schedule="constant"):
    def describe(value):
        if isinstance(value, (str, int, float)) or value is None:
            return value
        return getattr(value, "name", None) or type(value).__name__

    return {
        "batch_size": int(task.batch_size),
        "epochs": epochs,
        "learning_rate": float(task.learning_rate),
        "schedule": schedule,
        "warmup_steps": int(getattr(task, "warmup_steps", 0) or 0),
        "steps_per_epoch": int(task.steps_per_epoch),
        "eval_every": eval_every,
        "n_train": len(task.x_train),
        "n_val": len(task.x_val),
        "n_test": None if getattr(task, "x_test", None) is None
        else len(task.x_test),
        "loss": describe(task.loss),
        "metrics": [describe(m) for m in (task.metrics or [])],
    }


def _with_predictor(base, predictor):
    from keras_hybrid.config import HybridConfig

    config = base.to_dict()
    config["predictor"]["type"] = predictor
    return HybridConfig.from_dict(config).to_dict()


def _plot(name, entry, out_dir):
    from keras_hybrid.bench.plot import plot_task

    seed = entry["per_seed"][0]
    path = os.path.join(out_dir, f"{name}.png")
    written = plot_task(name, seed, path, target=seed["target_val_loss"])
    return None if written is None else os.path.basename(written)


# ============================================================ subprocesses
def _run_isolated(function_name, spec, backend, label):
    """Runs `child.FUNCTIONS[function_name](spec)` in a fresh spawned
    subprocess."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=child.child_main, args=(sender, function_name, spec)
    )
    with _child_environment(backend), \
            child_output.filtered_stderr_for_children():
        process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(
            f"{label}: the benchmark subprocess exited with code "
            f"{process.exitcode} without a result (its error, if any, is "
            "printed above)."
        ) from None
    finally:
        receiver.close()
        if process.is_alive():
            process.join(timeout=60)
        if process.is_alive():
            process.terminate()
    if status != "ok":
        raise RuntimeError(f"{label} failed in its subprocess:\n{payload}")
    return payload


@contextlib.contextmanager
def _child_environment(backend):
    """Sets the children's environment (spawn copies it at start): the
    backend, and TensorFlow's C++ logging at warnings and above unless the
    user chose a level."""
    values = {} if backend is None else {"KERAS_BACKEND": backend}
    values.setdefault(
        "TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    )
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ============================================================== arguments
def _resolve_tasks(tasks, quick):
    """Returns `[(task object, payload sent to the children)]`."""
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, (list, tuple)):
        tasks = [tasks]
    if not tasks:
        raise ValueError(f"`tasks` must not be empty. Received: tasks={tasks!r}")
    resolved = []
    for task in tasks:
        if isinstance(task, str):
            from keras_hybrid.bench.tasks import TASK_NAMES
            from keras_hybrid.bench.tasks import get_task

            names = TASK_NAMES if task == "all" else [task]
            for name in names:
                obj = get_task(name, quick=quick)
                resolved.append((obj, _payload(obj, name)))
        else:
            missing = [a for a in TASK_ATTRIBUTES if not hasattr(task, a)]
            if missing:
                raise ValueError(
                    "A task object must have the attributes of "
                    f"`keras_hybrid.bench.tasks.Task`; missing {missing}. "
                    f"Received: task={task!r}"
                )
            resolved.append((task, _payload(task, None)))
    names = [t.name for t, _ in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique. Received: {names}")
    return resolved


def _payload(task, name):
    """The task itself if it pickles (children skip rebuilding the data),
    else its name."""
    try:
        pickle.dumps(task)
        return task
    except Exception:  # noqa: BLE001 - any pickling failure.
        if name is None:
            raise ValueError(
                "A task object must be picklable to be sent to the arm "
                f"subprocesses. Received: task={task!r}"
            ) from None
        return name


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return value


def _check_overhead(repetitions, steps):
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or (
        repetitions < 0
    ):
        raise ValueError(
            "`overhead_repetitions` must be a non-negative integer. "
            f"Received: overhead_repetitions={repetitions!r}"
        )
    if steps is not None:
        _check_positive_int("overhead_steps", steps)
    return {"repetitions": repetitions, "steps": steps}


def _check_predictors(predictors):
    from keras_hybrid import dynamics

    if predictors is None:
        return tuple(dynamics.AVAILABLE)
    if isinstance(predictors, str):
        predictors = [predictors]
    predictors = tuple(predictors)
    unknown = [p for p in predictors if p not in dynamics.AVAILABLE]
    if not predictors or unknown:
        raise ValueError(
            "`predictors` must be a non-empty list of available predictor "
            f"types {dynamics.AVAILABLE}. Received: predictors={predictors!r}"
        )
    return tuple(dict.fromkeys(predictors))


def _check_backend(backend):
    if backend is not None and backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {BACKENDS} or None. "
            f"Received: backend={backend!r}"
        )
    return backend


# ================================================================= output
def _printer(enabled):
    def log(message):
        if enabled:
            print(message, flush=True)

    log.enabled = bool(enabled)
    return log


def _write_json(result, path):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(clean_json(result), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def machine_info():
    """Platform, processor, CPU count and Python version."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def package_versions():
    """Versions of keras, tensorflow, numpy, keras_hybrid (and jax, torch
    when installed)."""
    import keras_hybrid

    versions = {"keras_hybrid": keras_hybrid.__version__}
    for name, dists in (
        ("keras", ("keras",)),
        ("tensorflow", ("tensorflow", "tensorflow-cpu")),
        ("numpy", ("numpy",)),
        ("jax", ("jax",)),
        ("torch", ("torch",)),
        ("matplotlib", ("matplotlib",)),
    ):
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions
