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

With `keras_guard`, a third arm joins the alternation: plain `fit()` of the
same model with Keras' own finite check (`LossScaleOptimizer`, scale fixed
at 1). On steps of a millisecond or two that check alone costs a tenth of
the step on a CPU, so it is the fair reference for a callback that also
refuses non-finite updates: `verdict` judges the hybrid against it there,
and against plain `fit()` on steps of `LONG_STEP_MS` or more.
"""

import math
import time

import keras
import numpy as np

from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task

DEFAULT_REPETITIONS = 3
DEFAULT_STEPS = 200
QUICK_STEPS = 60
# The bar: on steps of at least LONG_STEP_MS, hybrid / plain at most
# LONG_STEP_BAR; on shorter steps, at most Keras' finite check / plain plus
# SHORT_STEP_MARGIN (per-pair medians).
LONG_STEP_MS = 10.0
LONG_STEP_BAR = 1.02
SHORT_STEP_MARGIN = 0.05
# The least coverage of the median's interval the verdict reports.
MEDIAN_LEVEL = 0.9


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


def median_interval(values, level=MEDIAN_LEVEL):
    """A distribution-free interval for the median of `values`: the order
    statistics `k` and `n - k + 1` (1-based) with `k` the largest for which
    the binomial tail `P(Binomial(n, 1/2) < k)` is at most `(1 - level) /
    2`, so that the interval holds the median with probability at least
    `level` (the smallest and largest value where `n` is too small).

    Returns:
        `(low, high, coverage)`: the bounds and their exact coverage.
    """
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if not n:
        raise ValueError(f"`values` must not be empty. Received: {values!r}")
    tail = (1.0 - level) / 2.0
    # `below` is P(B <= k - 1): the chance that the median lies below the
    # k-th value (and, by symmetry, above the (n - k + 1)-th).
    k, below = 1, 1.0 / 2.0 ** n
    while k < (n + 1) // 2 and below + math.comb(n, k) / 2.0 ** n <= tail:
        below += math.comb(n, k) / 2.0 ** n
        k += 1
    return ordered[k - 1], ordered[n - k], 1.0 - 2.0 * below


def verdict(result):
    """The measured overhead against its bar, in words.

    The per-pair median is judged against the bar; its interval
    (`median_interval` of the per-pair ratios) says whether that judgement
    holds at the measurement's noise: `resolved` where the whole interval
    lies on one side of the bar (the bar's own noise, Keras' check's, is
    not counted in).

    Args:
        result: `measure_fit_overhead()`'s dict.

    Returns:
        A dict: `bar` (the largest hybrid / plain per-pair median allowed),
        `reference` (`"plain"` on steps of `LONG_STEP_MS` or more,
        `"keras_guard"` below), `within` (bool: the median at most the
        bar), `interval` (`[low, high]` of the median, where the per-pair
        ratios are known), `coverage`, `resolved` and `text`; `None` for a
        short step measured without the Keras arm.
    """
    step_ms = result["plain_step_ms"]
    measured = result["ratio_median"]
    if step_ms >= LONG_STEP_MS:
        bar, reference = LONG_STEP_BAR, "plain"
        against = f"at most {LONG_STEP_BAR:.2f}x plain fit()"
    elif "guard_ratio_median" in result:
        bar = result["guard_ratio_median"] + SHORT_STEP_MARGIN
        reference = "keras_guard"
        against = (f"at most Keras' finite check "
                   f"({result['guard_ratio_median']:.3f}) + "
                   f"{SHORT_STEP_MARGIN:.2f}")
    else:
        return None
    within = measured <= bar
    text = (f"{'within' if within else 'over'} the bar on "
            f"{step_ms:.1f} ms steps: {measured:.3f} against {against}")
    judged = {"bar": float(bar), "reference": reference,
              "within": bool(within)}
    ratios = result.get("ratios")
    if ratios:
        low, high, coverage = median_interval(ratios)
        resolved = high <= bar or low > bar
        judged.update(interval=[low, high], coverage=coverage,
                      resolved=bool(resolved))
        text += (f" (the median's {100 * coverage:.0f}% interval "
                 f"[{low:.3f}-{high:.3f}] "
                 + ("lies on one side of the bar)" if resolved else
                    "holds the bar: not resolved at this noise)"))
    judged["text"] = text
    return judged


def measure_fit_overhead(spec):
    """Times plain `fit()` against the hybrid with prediction disabled.

    Args:
        spec: an arm spec with `task`, `seed`, `config` (a config dict; its
            `enable_prediction` is set to False), optional `repetitions`
            (3), `steps` (timed steps per repetition; 200, 60 quick),
            `jit_compile` and `steps_per_execution` (`compile()`'s, for
            every arm; `"auto"` and 1) and `keras_guard` (False: also time
            plain `fit()` with Keras' finite check, alternated with the
            other two).

    Returns:
        `summarize()`'s dict plus `plain_step_ms`, `steps`,
        `window_start`, `repetitions`, `batch_size`, `jit_compile`,
        `steps_per_execution`, `backend`, `seed`; with `keras_guard`, the
        Keras arm's figures against plain as `guard_s`, `guard_min_s`,
        `guard_ratio_of_min`, `guard_ratios`, `guard_ratio_median`,
        `guard_ratio_min`, `guard_ratio_max` (and `guard_cpu_ratio_of_min`);
        and `verdict` (see `verdict()`).
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
    arms = {"plain": plain, "hybrid": hybrid}
    if spec.get("keras_guard"):
        keras.utils.set_random_seed(seed)
        arms["guard"] = compile_model(task.build_model(seed), task,
                                      task.learning_rate, finite_check=True,
                                      **compiled)

    def timed(name):
        clock = WindowClock(start)
        callbacks = [clock]
        if name == "hybrid":
            callbacks.insert(0, kh.HybridPredictCallback(config))
        arms[name].fit(x, y, batch_size=batch, epochs=1, verbose=0,
                       shuffle=False, callbacks=callbacks)
        return clock.seconds, clock.cpu_seconds

    # One untimed call each builds and traces what persists across fits.
    for name in arms:
        timed(name)
    times = {name: [] for name in arms}
    for index in range(repetitions):
        # Alternate the order, so a drift of the machine's speed within a
        # repetition does not favour one arm.
        order = list(arms)
        if index % 2:
            order.reverse()
        for name in order:
            times[name].append(timed(name))
    wall = {k: [t[0] for t in v] for k, v in times.items()}
    cpu = {k: [t[1] for t in v] for k, v in times.items()}
    result = summarize(wall["plain"], wall["hybrid"], cpu["plain"],
                       cpu["hybrid"])
    if "guard" in arms:
        guard = summarize(wall["plain"], wall["guard"], cpu["plain"],
                          cpu["guard"])
        result.update({
            _guard_key(key): value for key, value in guard.items()
            if "plain" not in key
        })
    result["plain_step_ms"] = 1000.0 * result["plain_min_s"] / steps
    result["verdict"] = verdict(result)
    return {
        **result,
        "steps": steps,
        "window_start": start,
        "repetitions": repetitions,
        "batch_size": batch,
        "jit_compile": bool(plain.jit_compile),
        "steps_per_execution": compiled["steps_per_execution"],
        "backend": keras.backend.backend(),
        "seed": seed,
    }


def _guard_key(key):
    """`summarize()`'s key for the hybrid arm, renamed for the Keras arm
    (`hybrid_s` -> `guard_s`, `cpu_ratio_of_min` -> `guard_cpu_ratio_of_min`,
    `ratios` -> `guard_ratios`)."""
    return "guard_" + key.replace("hybrid_", "")


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
        + (
            "\n  Keras' finite check (LossScaleOptimizer, scale 1) / plain: "
            f"{result['guard_ratio_of_min']:.3f} of the minima; per pair "
            f"median {result['guard_ratio_median']:.3f} "
            f"[{result['guard_ratio_min']:.3f}-"
            f"{result['guard_ratio_max']:.3f}]"
            if "guard_ratio_median" in result else ""
        )
        + (f"\n  {result['verdict']['text']}" if result.get("verdict")
           else "")
    )
