"""The benchmark arms and the overhead profile, as run inside one process.

`keras_hybrid.bench.harness` runs each of these in its own fresh subprocess
(`child_main`), but they are ordinary functions: `run_arm(spec)` can be called
in-process (the tests do).

An arm spec is a dict:

- `task`: a task object (see `keras_hybrid.bench.tasks.Task`) or a task name
  (then `get_task(name, quick)` builds it).
- `quick`: bool, passed to `get_task` for a task name.
- `arm`: `"baseline"`, `"hybrid"` or `"equal-budget"`.
- `name`: the arm's label (`"hybrid-linear"`, ...).
- `seed`: the random seed.
- `epochs`: epochs to train (`"baseline"`, `"hybrid"`).
- `budget`: exact number of optimizer steps (`"equal-budget"`).
- `eval_every`: validation every this many steps (and at the end).
- `config`: the `HybridConfig` dict (`"hybrid"`; also used by the profile).
- `progress`: print one line per epoch; `label`: its prefix.
"""

import math
import resource
import sys
import time
import traceback

import keras
import numpy as np

ARM_KINDS = ("baseline", "hybrid", "equal-budget")
EVAL_BATCH_SIZE = 512


# ======================================================== task and setup
def resolve_task(spec):
    """The task object of a spec (built from its name if needed)."""
    task = spec["task"]
    if isinstance(task, str):
        from keras_hybrid.bench.tasks import get_task

        return get_task(task, quick=bool(spec.get("quick", False)))
    return task


def compile_model(model, task, learning_rate):
    """Compiles `model` with the task's optimizer, loss and metrics."""
    model.compile(
        optimizer=task.make_optimizer(learning_rate),
        loss=task.loss,
        metrics=list(task.metrics or []),
    )
    return model


def peak_memory_mb():
    """Peak resident memory of this process, in MiB (`ru_maxrss`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else (
        peak / 1024.0
    )


# ============================================================ callbacks
class EvalClock(keras.callbacks.Callback):
    """Training wall clock with paused periodic validation.

    Records the training wall clock at every batch end (`clock`), and
    evaluates the validation set at step 0, every `eval_every` steps and at
    the end of training (`evals`: dicts `step, time_s, val_loss, val_acc`).
    The clock is paused while evaluating, so `wall_clock_s` is training time
    only.

    Args:
        x_val, y_val: validation data.
        eval_every: validation interval in steps.
        batch_size: evaluation batch size.
        epochs: epochs of the fit (for the progress line).
        label: progress prefix; `None` prints nothing.
    """

    def __init__(self, x_val, y_val, eval_every, batch_size, epochs,
                 label=None):
        super().__init__()
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or (
            eval_every < 1
        ):
            raise ValueError(
                "`eval_every` must be a positive integer. "
                f"Received: eval_every={eval_every!r}"
            )
        self.x_val = x_val
        self.y_val = y_val
        self.eval_every = eval_every
        self.batch_size = batch_size
        self.epochs = epochs
        self.label = label
        self.clock = []
        self.evals = []
        self.step = 0
        self.wall_clock_s = None
        self._start = None
        self._paused = 0.0

    def elapsed(self):
        """Training seconds so far (evaluation excluded)."""
        return time.perf_counter() - self._start - self._paused

    def on_train_begin(self, logs=None):
        self.clock, self.evals, self.step = [], [], 0
        self._paused = 0.0
        self._start = time.perf_counter()
        self._evaluate()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.clock.append(self.elapsed())
        if self.step % self.eval_every == 0:
            self._evaluate()

    def on_epoch_end(self, epoch, logs=None):
        if self.label is None:
            return
        last = self.evals[-1]
        runner = getattr(self.model, "_hybrid_runner", None)
        extra = (
            f" backward {runner.stats.backward}" if runner is not None else ""
        )
        print(
            f"{self.label} epoch {epoch + 1}/{self.epochs} step {self.step}"
            f"{extra} train {self.elapsed():.1f}s "
            f"val_loss {_fmt(last['val_loss'])} (step {last['step']})",
            flush=True,
        )

    def on_train_end(self, logs=None):
        if not self.evals or self.evals[-1]["step"] != self.step:
            self._evaluate()
        self.wall_clock_s = self.clock[-1] if self.clock else 0.0

    def _evaluate(self):
        begin = time.perf_counter()
        at = begin - self._start - self._paused
        values = self.model.evaluate(
            self.x_val, self.y_val, batch_size=self.batch_size, verbose=0,
            return_dict=True,
        )
        self.evals.append({
            "step": self.step,
            "time_s": at,
            "val_loss": float(values["loss"]),
            "val_acc": _accuracy(values),
        })
        self._paused += time.perf_counter() - begin


class StopAfterSteps(keras.callbacks.Callback):
    """Stops `fit()` after exactly `steps` training steps.

    Args:
        steps: a positive integer.
    """

    def __init__(self, steps):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"`steps` must be a positive integer. Received: steps={steps!r}"
            )
        self.steps = steps
        self.count = 0

    def on_train_begin(self, logs=None):
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count >= self.steps:
            self.model.stop_training = True


def _accuracy(values):
    for key, value in values.items():
        if key != "loss" and "acc" in key:
            return float(value)
    return None


def _fmt(value):
    return "n/a" if value is None or not math.isfinite(value) else (
        f"{value:.4f}"
    )


# ================================================================= arms
def run_arm(spec):
    """Runs one arm and returns its raw result.

    Args:
        spec: an arm spec (see the module docstring).

    Returns:
        A dict: `arm`, `kind`, `seed`, `steps`, `optimizer_iterations`,
        `wall_clock_s`, `backward_passes`, `forward_passes`, `evals`,
        `clock`, `peak_memory_mb`, `backend`, and for the hybrid arm `report`
        (its training report), for the equal-budget arm `budget`.
    """
    kind = spec["arm"]
    if kind not in ARM_KINDS:
        raise ValueError(
            f"Unknown arm kind. Expected one of {ARM_KINDS}. "
            f"Received: arm={kind!r}"
        )
    task = resolve_task(spec)
    seed = int(spec["seed"])
    keras.utils.set_random_seed(seed)
    model = task.build_model(seed)
    callbacks = []
    learning_rate = task.learning_rate
    epochs = int(spec.get("epochs") or task.epochs)
    if kind == "hybrid":
        import keras_hybrid as kh

        model = kh.HybridModel.wrap(model)
        hybrid = kh.HybridPredictCallback(
            kh.HybridConfig.from_dict(spec["config"])
        )
        callbacks.append(hybrid)
    elif kind == "equal-budget":
        budget = _check_budget(spec.get("budget"))
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            task.learning_rate, decay_steps=budget, end_learning_rate=0.0,
            power=1.0,
        )
        epochs = math.ceil(budget / task.steps_per_epoch)
        callbacks.append(StopAfterSteps(budget))
    compile_model(model, task, learning_rate)
    clock = EvalClock(
        task.x_val, task.y_val, int(spec["eval_every"]),
        max(int(task.batch_size), EVAL_BATCH_SIZE), epochs,
        label=spec.get("label") if spec.get("progress", True) else None,
    )
    callbacks.append(clock)
    keras.utils.set_random_seed(seed)
    model.fit(
        task.x_train, task.y_train, batch_size=task.batch_size, epochs=epochs,
        callbacks=callbacks, shuffle=True, verbose=0,
    )
    result = {
        "arm": spec.get("name", kind),
        "kind": kind,
        "seed": seed,
        "epochs": epochs,
        "steps": clock.step,
        "optimizer_iterations": int(
            keras.ops.convert_to_numpy(model.optimizer.iterations)
        ),
        "wall_clock_s": clock.wall_clock_s,
        "backward_passes": clock.step,
        "forward_passes": clock.step,
        "evals": clock.evals,
        "clock": clock.clock,
        "peak_memory_mb": peak_memory_mb(),
        "backend": keras.backend.backend(),
    }
    if kind == "hybrid":
        report = hybrid.report()
        summary = report["training_summary"]
        result["backward_passes"] = summary["backward_passes"]
        result["forward_passes"] = summary["forward_passes"]
        result["report"] = {k: v for k, v in report.items() if k != "config"}
    elif kind == "equal-budget":
        result["budget"] = budget
    return result


def _check_budget(budget):
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or (
        budget < 1
    ):
        raise ValueError(
            "The equal-budget arm needs a positive integer `budget` (the "
            f"hybrid arm's backward passes). Received: budget={budget!r}"
        )
    return int(budget)


# ============================================================== profile
def make_iterator(x, y, batch_size):
    """An endless batch iterator that the compiled train functions accept.

    This is the only backend-specific piece of the profile.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        return iter(dataset.batch(batch_size).repeat())
    raise NotImplementedError(
        "The overhead profile supports the TensorFlow backend in this "
        f"version. Received: backend={backend!r}"
    )


def _to_host(outputs):
    if outputs is None:
        return None
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def _time_calls(functions, make_it, warmup, calls, rounds=3):
    """Median ms per call of each function, interleaved in `rounds`."""
    iterators = {name: make_it() for name in functions}
    for name, function in functions.items():
        for _ in range(warmup):
            _to_host(function(iterators[name]))
    times = {name: [] for name in functions}
    per_round = max(1, math.ceil(calls / rounds))
    for _ in range(rounds):
        for name, function in functions.items():
            for _ in range(per_round):
                begin = time.perf_counter()
                _to_host(function(iterators[name]))
                times[name].append(time.perf_counter() - begin)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def profile_task(spec):
    """Times each compiled step function on the same batches.

    Builds a plain model and a hybrid model of the task (same seed), runs
    two steps of `fit()` on each to build everything, then times `calls`
    calls (after `warmup` calls) of: the plain Keras train function, the
    hybrid `full` and `full_collect` functions, the forward-only `predict`
    function, and a jump skip step (`next_batch` plus the iterations
    increment, as the runner does). Each call's outputs are forced to host.

    Args:
        spec: an arm spec with `task`, `seed`, `config`, optional `calls`
            (30) and `warmup` (5).

    Returns:
        A dict of median milliseconds: `plain_ms`, `full_ms`,
        `full_collect_ms`, `predict_ms`, `skip_ms`, plus `calls`, `warmup`,
        `batch_size`, `backend`.
    """
    import keras_hybrid as kh

    task = resolve_task(spec)
    seed = int(spec["seed"])
    calls = int(spec.get("calls", 30))
    warmup = int(spec.get("warmup", 5))
    batch = int(task.batch_size)
    n = batch * 2
    x, y = task.x_train[:n], task.y_train[:n]

    keras.utils.set_random_seed(seed)
    plain = compile_model(task.build_model(seed), task, task.learning_rate)
    plain.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    plain.make_train_function()
    plain_function = plain.train_function

    keras.utils.set_random_seed(seed)
    hybrid = kh.HybridModel.wrap(task.build_model(seed))
    compile_model(hybrid, task, task.learning_rate)
    callback = kh.HybridPredictCallback(
        kh.HybridConfig.from_dict(spec["config"])
    )
    hybrid.fit(x, y, batch_size=batch, epochs=1, verbose=0,
               callbacks=[callback])
    runner = callback.runner
    iterations = hybrid.optimizer.iterations

    def skip(iterator):
        runner.backend.next_batch(iterator)
        iterations.assign_add(1)

    count = batch * (warmup + calls)
    reps = math.ceil(count / len(task.x_train))
    xs = np.concatenate([task.x_train] * reps)[:count]
    ys = np.concatenate([task.y_train] * reps)[:count]
    times = _time_calls(
        {
            "plain_ms": plain_function,
            "full_ms": runner.functions["full"],
            "full_collect_ms": runner.functions["full_collect"],
            "predict_ms": runner.functions["predict"],
            "skip_ms": skip,
        },
        lambda: make_iterator(xs, ys, batch),
        warmup,
        calls,
    )
    return {**times, "calls": calls, "warmup": warmup, "batch_size": batch,
            "backend": keras.backend.backend(), "seed": seed}


# ============================================================ subprocess
def child_main(connection, function_name, spec):
    """Entry point of a benchmark subprocess.

    Runs `run_arm` or `profile_task` and sends `("ok", result)` or
    `("error", traceback text)` through `connection`.
    """
    functions = {"run_arm": run_arm, "profile_task": profile_task}
    try:
        result = functions[function_name](spec)
        connection.send(("ok", result))
    except BaseException:  # noqa: BLE001 - reported to the parent.
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()

