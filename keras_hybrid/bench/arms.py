"""The benchmark arms, as run inside one process.

`keras_hybrid.bench.harness` runs each of these in its own fresh subprocess
(through `keras_hybrid.bench.child`), but they are ordinary functions:
`run_arm(spec)` can be called in-process (the tests do).

An arm spec is a dict:

- `task`: a task object (see `keras_hybrid.bench.tasks.Task`) or a task name
  (then `get_task(name, quick)` builds it).
- `quick`: bool, passed to `get_task` for a task name.
- `arm`: `"baseline"`, `"hybrid"`, `"equal-budget"` or `"wsd"`.
- `schedule`: the task's recipe, `"constant"` (default) or `"cosine"` (see
  `keras_hybrid.bench.schedules`).
- `name`: the arm's label (`"hybrid-linear"`, ...).
- `seed`: the random seed.
- `epochs`: epochs to train (`"baseline"`, `"hybrid"`).
- `budget`: exact number of optimizer steps (`"equal-budget"`: the recipe
  compressed to it; `"wsd"`: the peak learning rate held, then a linear
  cooldown to 0 over its last 20%).
- `probe_steps`: steps at which the `"baseline"` arm is also validated (and
  tested) without touching its curve: the baseline read at a hybrid arm's
  backward count is the "truncated" reference (its schedule not shortened).
- `eval_every`: validation every this many steps (and at the end).
- `weight_average`: `None`, or a momentum in (0, 1): the optimizer keeps
  Keras' moving average of the weights (`use_ema`), `fit()` ends on it, and
  the final validation and the probes are of the average (the curve before
  the end is of the weights being trained).
- `config`: the `HybridConfig` dict (`"hybrid"`; also used by
  `keras_hybrid.bench.profile.profile_task`).
- `progress`: print one line per epoch; `label`: its prefix.
"""

import math
import resource
import sys
import time

import keras
import numpy as np

from keras_hybrid import weight_average as averaging

ARM_KINDS = ("baseline", "hybrid", "equal-budget", "wsd")
EVAL_BATCH_SIZE = 512


# ======================================================== task and setup
def resolve_task(spec):
    """The task object of a spec (built from its name if needed)."""
    task = spec["task"]
    if isinstance(task, str):
        from keras_hybrid.bench.tasks import get_task

        return get_task(task, quick=bool(spec.get("quick", False)))
    return task


def compile_model(model, task, learning_rate, jit_compile="auto",
                  steps_per_execution=1, weight_average=None,
                  finite_check=False):
    """Compiles `model` with the task's optimizer, loss and metrics; with
    `weight_average` (a momentum in (0, 1)), the optimizer keeps Keras'
    moving average of the weights (`use_ema`) and `fit()` ends on it. With
    `finite_check`, the optimizer is wrapped in Keras' `LossScaleOptimizer`
    with its scale fixed at 1: Keras' own in-graph check that refuses a
    non-finite update, and nothing else that changes the result."""
    optimizer = task.make_optimizer(learning_rate)
    if weight_average is not None:
        averaging.turn_on(optimizer, weight_average)
    if finite_check:
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1
        )
    model.compile(
        optimizer=optimizer,
        loss=task.loss,
        metrics=list(task.metrics or []),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
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
class Validator:
    """Validation loss and accuracy on fixed, pre-converted batches.

    Uses the model's compiled loss (`compute_loss`) on the outputs of
    `predict_on_batch`; accuracy is the share of `argmax(y_pred) == y` (for
    integer labels with one class axis more in `y_pred`), else `None`. The
    batches are converted to tensors once, so a validation leaves no dataset
    or iterator behind to be torn down during training time.

    Args:
        x, y: validation inputs (array or nested structure) and labels.
        batch_size: evaluation batch size.
    """

    def __init__(self, x, y, batch_size):
        total = len(keras.tree.flatten(x)[0])
        self.batches = []
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            xb = keras.tree.map_structure(
                lambda a: keras.ops.convert_to_tensor(a[start:stop]), x
            )
            self.batches.append(
                (xb, keras.ops.convert_to_tensor(y[start:stop]), y[start:stop])
            )
        self.count = total

    def __call__(self, model):
        """Returns `(val_loss, val_acc)` of `model` (inference mode)."""
        loss_sum, correct, scored = 0.0, 0, 0
        for x, y, y_host in self.batches:
            y_pred = model.predict_on_batch(x)
            loss = model.compute_loss(
                x=x, y=y, y_pred=keras.ops.convert_to_tensor(y_pred),
            )
            n = len(y_host)
            loss_sum += n * float(keras.ops.convert_to_numpy(loss))
            hits = _hits(y_host, y_pred)
            if hits is not None:
                correct += hits
                scored += n
        accuracy = correct / scored if scored == len(self) else None
        return loss_sum / self.count, accuracy

    def __len__(self):
        return self.count


def _hits(y_true, y_pred):
    """Correct predictions in a batch (per-sample mean over any sequence
    axis), or `None` if accuracy does not apply."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim < 2 or y_pred.shape[-1] < 2:
        return None
    if y_true.shape == y_pred.shape:  # one-hot labels
        y_true = np.argmax(y_true, axis=-1)
    elif y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_true.shape != y_pred.shape[:-1] or not (
        np.issubdtype(y_true.dtype, np.integer)
        or np.all(np.mod(y_true, 1) == 0)
    ):
        return None
    matches = np.argmax(y_pred, axis=-1) == y_true
    return float(matches.reshape(len(y_true), -1).mean(axis=1).sum())


class EvalClock(keras.callbacks.Callback):
    """Training wall clock with paused periodic validation.

    Records the training wall clock at every batch end (`clock`), and
    validates at step 0, every `eval_every` steps and at the end of training
    (`evals`: dicts `step, time_s, val_loss, val_acc`). The clock is paused
    while validating, so `wall_clock_s` is training time only.

    At each of `probe_steps` it also records a probe (`probes`: dicts `step,
    time_s, val_loss, val_acc, test_loss`), kept apart from `evals` so the
    curve and its figures are the same with or without probes. Validation
    runs in inference mode and draws no random numbers, so probing does not
    change the training run. If the optimizer keeps a weight average
    (`use_ema`), a probe validates the average, as a run stopped there
    would end, and so does the final validation.

    Args:
        validator: a `Validator`.
        eval_every: validation interval in steps.
        epochs: epochs of the fit (for the progress line).
        label: progress prefix; `None` prints nothing.
        probe_steps: steps to probe (positive integers).
        test_validator: a `Validator` on held-out test data for the probes,
            or `None`.
    """

    def __init__(self, validator, eval_every, epochs, label=None,
                 probe_steps=(), test_validator=None):
        super().__init__()
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or (
            eval_every < 1
        ):
            raise ValueError(
                "`eval_every` must be a positive integer. "
                f"Received: eval_every={eval_every!r}"
            )
        self.validator = validator
        self.eval_every = eval_every
        self.probe_steps = _check_probe_steps(probe_steps)
        self.test_validator = test_validator
        self.probes = []
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
        self.probes = []
        self._paused = 0.0
        self._start = time.perf_counter()
        self._evaluate()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.clock.append(self.elapsed())
        if self.step % self.eval_every == 0:
            self._evaluate()
        if self.step in self.probe_steps:
            self._probe()

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = epoch + 1 >= self.epochs or self.model.stop_training
        if last_epoch and self.evals[-1]["step"] != self.step:
            self._evaluate()
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
        if self.evals and self.evals[-1]["step"] == self.step and (
            averaging.uses_weight_average(self.model)
        ):
            # fit() has just put the weight average in place: the final
            # figure is the model fit() returns.
            self.evals.pop()
        if not self.evals or self.evals[-1]["step"] != self.step:
            self._evaluate()
        self.wall_clock_s = self.clock[-1] if self.clock else 0.0

    def _evaluate(self):
        begin = time.perf_counter()
        # Validation runs at a batch end: it belongs to that batch's time.
        at = self.clock[-1] if self.clock else 0.0
        loss, accuracy = self.validator(self.model)
        self.evals.append({
            "step": self.step, "time_s": at, "val_loss": loss,
            "val_acc": accuracy, "backward": self._backward(),
        })
        self._paused += time.perf_counter() - begin

    def _backward(self):
        """Backward passes run so far (the hybrid's own count, else one
        per step)."""
        runner = getattr(self.model, "_hybrid_runner", None)
        stats = getattr(runner, "stats", None)
        return self.step if stats is None else int(stats.backward)

    def _probe(self):
        begin = time.perf_counter()
        last = self.evals[-1] if self.evals else None
        averaged = averaging.uses_weight_average(self.model)
        with averaging.in_place(self.model):
            # A run stopped here ends on its weight average, if it keeps one.
            if last is not None and last["step"] == self.step and (
                not averaged
            ):
                # Validated at this very step already.
                loss, accuracy = last["val_loss"], last["val_acc"]
            else:
                loss, accuracy = self.validator(self.model)
            test = (
                None if self.test_validator is None
                else self.test_validator(self.model)[0]
            )
        self.probes.append({
            "step": self.step, "time_s": self.clock[-1], "val_loss": loss,
            "val_acc": accuracy, "test_loss": test,
            "backward": self._backward(),
        })
        self._paused += time.perf_counter() - begin


def _check_probe_steps(steps):
    steps = list(steps or ())
    if any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
        for s in steps
    ):
        raise ValueError(
            "`probe_steps` must be positive integers. "
            f"Received: probe_steps={steps!r}"
        )
    return frozenset(int(s) for s in steps)


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
        `clock`, `peak_memory_mb`, `backend`, `final_test_loss`, `probes`
        (see `EvalClock`), and for the hybrid arm `report`
        (its training report), for the equal-budget arm `budget`.
    """
    kind = spec["arm"]
    if kind not in ARM_KINDS:
        raise ValueError(
            f"Unknown arm kind. Expected one of {ARM_KINDS}. "
            f"Received: arm={kind!r}"
        )
    probe_steps = spec.get("probe_steps") or ()
    if probe_steps and kind != "baseline":
        raise ValueError(
            "`probe_steps` applies to the baseline arm only. "
            f"Received: arm={kind!r}, probe_steps={probe_steps!r}"
        )
    from keras_hybrid.bench import schedules

    task = resolve_task(spec)
    schedule = schedules.check_schedule(spec.get("schedule", "constant"))
    seed = int(spec["seed"])
    keras.utils.set_random_seed(seed)
    model = task.build_model(seed)
    callbacks = []
    epochs = int(spec.get("epochs") or task.epochs)
    learning_rate = schedules.recipe_learning_rate(
        task, schedule, epochs * int(task.steps_per_epoch)
    )
    if kind == "hybrid":
        import keras_hybrid as kh

        model = kh.HybridModel.wrap(model)
        hybrid = kh.HybridPredictCallback(
            kh.HybridConfig.from_dict(spec["config"])
        )
        callbacks.append(hybrid)
    elif kind in ("equal-budget", "wsd"):
        budget = _check_budget(spec.get("budget"), kind)
        learning_rate = (
            schedules.equal_budget_learning_rate(task, schedule, budget)
            if kind == "equal-budget"
            else schedules.wsd_learning_rate(task, budget)
        )
        epochs = math.ceil(budget / task.steps_per_epoch)
        callbacks.append(StopAfterSteps(budget))
    compile_model(model, task, learning_rate,
                  weight_average=averaging.check_weight_average(
                      spec.get("weight_average"), keras.backend.backend()))
    eval_batch = max(int(task.batch_size), EVAL_BATCH_SIZE)
    validator = Validator(task.x_val, task.y_val, eval_batch)
    tester = None
    if getattr(task, "x_test", None) is not None:
        tester = Validator(task.x_test, task.y_test, eval_batch)
    clock = EvalClock(
        validator, int(spec["eval_every"]), epochs,
        label=spec.get("label") if spec.get("progress", True) else None,
        probe_steps=probe_steps, test_validator=tester,
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
        "schedule": schedule,
        "seed": seed,
        "epochs": epochs,
        "steps": clock.step,
        "optimizer_iterations": int(model.optimizer.iterations.numpy()),
        "wall_clock_s": clock.wall_clock_s,
        "backward_passes": clock.step,
        "forward_passes": clock.step,
        "evals": clock.evals,
        "clock": clock.clock,
        "peak_memory_mb": peak_memory_mb(),
        "backend": keras.backend.backend(),
        "final_test_loss": None,
        "probes": clock.probes,
    }
    if tester is not None:
        # Held out: no setting of the project was chosen by this figure.
        result["final_test_loss"] = tester(model)[0]
    if kind == "hybrid":
        report = hybrid.report()
        summary = report["training_summary"]
        result["backward_passes"] = summary["backward_passes"]
        result["forward_passes"] = summary["forward_passes"]
        result["report"] = {k: v for k, v in report.items() if k != "config"}
    elif kind in ("equal-budget", "wsd"):
        result["budget"] = budget
    result["learning_rate"] = _describe_learning_rate(
        learning_rate, result["optimizer_iterations"]
    )
    return result


def _describe_learning_rate(learning_rate, iterations):
    """The arm's schedule (its config) and the rate of its last step."""
    if isinstance(learning_rate, (int, float)):
        return {"schedule": None, "last_step": float(learning_rate)}
    last = max(int(iterations) - 1, 0)
    return {
        "schedule": learning_rate.get_config(),
        "last_step": float(keras.ops.convert_to_numpy(learning_rate(last))),
    }


def _check_budget(budget, kind="equal-budget"):
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or (
        budget < 1
    ):
        raise ValueError(
            f"The {kind} arm needs a positive integer `budget` (the "
            f"hybrid arm's backward passes). Received: budget={budget!r}"
        )
    return int(budget)
