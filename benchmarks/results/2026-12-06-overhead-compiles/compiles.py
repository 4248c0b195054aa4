"""Where the cost rows' phase functions run eagerly or compile: inside the
timed windows of `keras-hybrid overhead` or before them.

`keras_hybrid.bench.overhead.measure_fit_overhead` (the one-step
TensorFlow MLP row: `--config default --task mnist1d-mlp --steps 400
--steps-per-execution 1`, with Keras' check) is run with every
`keras_hybrid.backends.LazilyCompiled` call timed and attributed to the
timed window (`WindowClock`, from its first batch to the end of `fit()`)
or outside it, with the compile rule as it is (`early`: compile once the
calls to come pay for the trace) and as it was (`threshold`: after 30 ms
of eager calls), each in a fresh process, alternated.

Usage: python compiles.py [--repetitions 2] [--out compiles.json]
(the runs kept were made with an earlier form of this script that printed
the same lines as it went)
"""

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "2026-12-06-outer-cnn-phase-end"))
import alternate  # noqa: E402
import early_compile  # noqa: E402
import phase_functions  # noqa: E402

ARMS = ["early", "threshold"]
# Timed repetitions of each `measure_fit_overhead` call.
TIMED = 7


def child(arm, timed):
    from keras_hybrid import backends
    from keras_hybrid.backends import LazilyCompiled
    from keras_hybrid.bench import overhead

    early_compile._patch(arm)
    where = {"window": False}
    ms = collections.defaultdict(float)
    counts = collections.defaultdict(int)
    call = LazilyCompiled.__call__

    def timed_call(self, *args):
        kind = phase_functions.call_kind(self)
        start = time.perf_counter()
        try:
            return call(self, *args)
        finally:
            key = ("in window " if where["window"] else "outside ") + (
                f"{kind} {self.name}")
            ms[key] += 1e3 * (time.perf_counter() - start)
            counts[key] += 1

    LazilyCompiled.__call__ = timed_call
    begin, end = (overhead.WindowClock.on_train_batch_begin,
                  overhead.WindowClock.on_train_end)

    def on_begin(self, batch, logs=None):
        begin(self, batch, logs)
        where["window"] = self.begin is not None

    def on_end(self, logs=None):
        where["window"] = False
        end(self, logs)

    overhead.WindowClock.on_train_batch_begin = on_begin
    overhead.WindowClock.on_train_end = on_end
    del backends
    result = overhead.measure_fit_overhead({
        "task": "mnist1d-mlp", "seed": 0, "config": {"preset": "default"},
        "repetitions": timed, "steps": 400, "steps_per_execution": 1,
        "keras_guard": True})
    print("RESULT " + json.dumps({
        "arm": arm, "ms": ms, "calls": counts,
        "ratio_median": result["ratio_median"],
        "guard_ratio_median": result["guard_ratio_median"],
        "cpu_ratio_median": result["cpu_ratio_median"],
        "guard_cpu_ratio_median": result["guard_cpu_ratio_median"]}))


def report(runs, repetitions):
    del repetitions
    for result in runs:
        print(f"run {result['repetition'] + 1} {result['arm']}: hybrid / "
              f"plain {result['ratio_median']:.3f} (CPU "
              f"{result['cpu_ratio_median']:.3f}), Keras' check "
              f"{result['guard_ratio_median']:.3f} (CPU "
              f"{result['guard_cpu_ratio_median']:.3f})")
        for key in sorted(result["ms"]):
            print(f"  {key:44s} {result['calls'][key]:4d} calls "
                  f"{result['ms'][key]:8.1f} ms")


if __name__ == "__main__":
    alternate.main(__file__, lambda arm: child(arm, TIMED), ARMS, 2, report)
