"""What the hybrid machinery costs when it predicts nothing, as a user sees
it: wall-clock of plain `fit()` against `fit()` of the same model wrapped
with a `HybridPredictCallback` whose prediction is disabled
(`enable_prediction=False`: every step runs its backward pass; statistics,
monitor, predictor fitting, shadow checks all run as usual).

Both arms train on the same batches, alternated in one process (plain,
hybrid, plain, hybrid, ...), each repetition a fresh `fit()` call. Each call
is timed from the first step after every compiled function has been traced
(past the warmup and two FULL phases) to the end of `fit()`, with a host
read of a weight at both ends so that asynchronous dispatch is inside the
window. The process's CPU time over the same window is recorded too: on a
shared machine it moves far less with the other load than wall-clock does
(on the CPU, where TensorFlow and JAX execute eagerly anyway, it captures the
extra work, though not a lost overlap of host and device). Run by
`keras_hybrid.bench.harness` in its own subprocess, once per task.
"""

import time

import keras
import numpy as np

from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task

DEFAULT_REPETITIONS = 3
DEFAULT_STEPS = 200
QUICK_STEPS = 60


class WindowClock(keras.callbacks.Callback):
    """Seconds (wall-clock and process CPU) from the start of batch `start`
    to the end of `fit()`.

    Args:
        start: the batch (0-based, within the single epoch) the window
            starts at.
    """

    def __init__(self, start):
        super().__init__()
        self.start = start
        self.begin = None
        self.cpu_begin = None
        self.seconds = None
        self.cpu_seconds = None

    def _sync(self):
        keras.ops.convert_to_numpy(self.model.trainable_variables[0])

    def on_train_batch_begin(self, batch, logs=None):
        # With `steps_per_execution > 1` Keras reports only the first batch
        # of each call: start at the first call that reaches `start`.
        if batch >= self.start and self.begin is None:
            self._sync()
            self.begin = time.perf_counter()
            self.cpu_begin = time.process_time()

    def on_train_end(self, logs=None):
        self._sync()
        if self.begin is not None:
            self.seconds = time.perf_counter() - self.begin
            self.cpu_seconds = time.process_time() - self.cpu_begin


def window_start(config):
    """The first step after which every compiled function is traced: the
    warmup, two FULL phases (the second end runs the shadow check) and one
    more step."""
    return int(config.warmup_steps) + 2 * int(config.full_steps) + 1


def summarize(plain, hybrid, plain_cpu=None, hybrid_cpu=None):
    """Ratio figures of paired timings.

    Args:
        plain: seconds of the plain arm, one per repetition.
        hybrid: seconds of the hybrid arm, same repetitions.
        plain_cpu, hybrid_cpu: the same repetitions' CPU seconds, if known.

    Returns:
        A dict: `ratio_of_min` (min hybrid / min plain, the headline),
        `ratios` (per repetition pair), `ratio_median`, `ratio_min`,
        `ratio_max`, both arms' seconds with their min; with CPU times, the
        same figures prefixed `cpu_`.
    """
    if len(plain) != len(hybrid) or not plain:
        raise ValueError(
            "`plain` and `hybrid` must be non-empty and of equal length. "
            f"Received: {len(plain)} and {len(hybrid)} timings"
        )
    result = _ratio_figures(plain, hybrid)
    if plain_cpu is not None and hybrid_cpu is not None:
        cpu = _ratio_figures(plain_cpu, hybrid_cpu)
        result.update({f"cpu_{k}": v for k, v in cpu.items()})
    return result


def _ratio_figures(plain, hybrid):
    ratios = [h / p for p, h in zip(plain, hybrid)]
    return {
        "plain_s": [float(t) for t in plain],
        "hybrid_s": [float(t) for t in hybrid],
        "plain_min_s": float(min(plain)),
        "hybrid_min_s": float(min(hybrid)),
        "ratio_of_min": float(min(hybrid) / min(plain)),
        "ratios": [float(r) for r in ratios],
        "ratio_median": float(np.median(ratios)),
        "ratio_min": float(min(ratios)),
        "ratio_max": float(max(ratios)),
    }


def measure_fit_overhead(spec):
    """Times plain `fit()` against the hybrid with prediction disabled.

    Args:
        spec: an arm spec with `task`, `seed`, `config` (a config dict; its
            `enable_prediction` is set to False), optional `repetitions`
            (3), `steps` (timed steps per repetition; 200, 60 quick),
            `jit_compile` and `steps_per_execution` (`compile()`'s, for
            both arms; `"auto"` and 1).

    Returns:
        `summarize()`'s dict plus `steps`, `window_start`, `repetitions`,
        `batch_size`, `jit_compile`, `steps_per_execution`, `backend`,
        `seed`.
    """
    import keras_hybrid as kh

    task = resolve_task(spec)
    seed = int(spec["seed"])
    repetitions = int(spec.get("repetitions", DEFAULT_REPETITIONS))
    quick = bool(spec.get("quick"))
    steps = int(spec.get("steps") or (QUICK_STEPS if quick else DEFAULT_STEPS))
    config = kh.HybridConfig.from_dict(
        dict(spec["config"], enable_prediction=False)
    )
    start = window_start(config)
    batch = int(task.batch_size)
    count = batch * (start + steps)
    reps = -(-count // len(task.x_train))
    x = np.concatenate([task.x_train] * reps)[:count]
    y = np.concatenate([task.y_train] * reps)[:count]

    compiled = {"jit_compile": spec.get("jit_compile", "auto"),
                "steps_per_execution": int(
                    spec.get("steps_per_execution") or 1)}
    keras.utils.set_random_seed(seed)
    plain = compile_model(task.build_model(seed), task, task.learning_rate,
                          **compiled)
    keras.utils.set_random_seed(seed)
    hybrid = kh.HybridModel.wrap(task.build_model(seed))
    compile_model(hybrid, task, task.learning_rate, **compiled)

    def timed(model, with_hybrid):
        clock = WindowClock(start)
        callbacks = [clock]
        if with_hybrid:
            callbacks.insert(0, kh.HybridPredictCallback(config))
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0,
                  shuffle=False, callbacks=callbacks)
        return clock.seconds, clock.cpu_seconds

    # One untimed call each builds and traces what persists across fits.
    timed(plain, False)
    timed(hybrid, True)
    times = {False: [], True: []}
    for index in range(repetitions):
        # Alternate which arm goes first, so a drift of the machine's speed
        # within a pair does not favour one arm.
        order = [(plain, False), (hybrid, True)]
        if index % 2:
            order.reverse()
        for model, with_hybrid in order:
            times[with_hybrid].append(timed(model, with_hybrid))
    wall = {k: [t[0] for t in v] for k, v in times.items()}
    cpu = {k: [t[1] for t in v] for k, v in times.items()}
    return {
        **summarize(wall[False], wall[True], cpu[False], cpu[True]),
        "steps": steps,
        "window_start": start,
        "repetitions": repetitions,
        "batch_size": batch,
        "jit_compile": bool(plain.jit_compile),
        "steps_per_execution": compiled["steps_per_execution"],
        "backend": keras.backend.backend(),
        "seed": seed,
    }


def format_fit_overhead(result):
    """One line for the printed table."""
    return (
        "fit() overhead, prediction disabled (hybrid / plain wall-clock over "
        f"{result['steps']} steps"
        + (", XLA" if result.get("jit_compile") else "")
        + (f", {result['steps_per_execution']} steps per execution"
           if result.get("steps_per_execution", 1) > 1 else "")
        + f", {result['repetitions']} alternated "
        f"repetitions): {result['ratio_of_min']:.3f} of the minima; per pair "
        f"median {result['ratio_median']:.3f} "
        f"[{result['ratio_min']:.3f}-{result['ratio_max']:.3f}]"
        + (
            f"; CPU time {result['cpu_ratio_of_min']:.3f} of the minima"
            if "cpu_ratio_of_min" in result else ""
        )
    )
