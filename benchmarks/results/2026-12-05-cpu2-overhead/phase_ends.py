"""Where the hybrid's time goes at its phase ends, with prediction off:
one `fit()` of the task timed per phase end (a fitting FULL phase's end,
a quiet one's) and per piece of work they do, after two untimed fits (so
that the compiled functions exist). TensorFlow.

Usage: python phase_ends.py TASK CONFIG STEPS
"""

import collections
import sys
import time

import numpy as np

import keras_hybrid as kh
from keras_hybrid import cycle
from keras_hybrid import recovery
from keras_hybrid import shadow
from keras_hybrid import trajectory
from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task

TIMES = collections.defaultdict(list)


def timed(owner, name, label, suffix=None):
    function = getattr(owner, name)

    def wrapper(self, *args, **kwargs):
        key = label if suffix is None else label + suffix(self)
        start = time.perf_counter()
        try:
            return function(self, *args, **kwargs)
        finally:
            TIMES[key].append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def main(task_name, config, steps):
    task = resolve_task({"task": task_name, "quick": False, "seed": 0})
    config = kh.HybridConfig.from_dict(dict(
        kh.HybridConfig.resolve(config).to_dict(), enable_prediction=False))
    count = task.batch_size * steps
    reps = -(-count // len(task.x_train))
    x = np.concatenate([task.x_train] * reps)[:count]
    y = np.concatenate([task.y_train] * reps)[:count]
    model = kh.HybridModel.wrap(task.build_model(0))
    compile_model(model, task, task.learning_rate)
    timed(cycle.PhaseCycle, "_end_full", "FULL phase end",
          lambda c: ", quiet" if c.quiet.quiet else ", fitting")
    timed(cycle.PhaseCycle, "start_full", "FULL phase start")
    timed(recovery.Recovery, "save_good_point", "rollback point")
    timed(trajectory.WeightTrajectory, "finish_phase", "trajectory close")
    timed(shadow.ShadowScoring, "predict", "shadow prediction")
    for _ in range(3):
        TIMES.clear()
        model.fit(x, y, batch_size=task.batch_size, epochs=1, verbose=0,
                  shuffle=False, callbacks=[kh.HybridPredictCallback(config)])
    print(f"{task_name}, {sys.argv[2]}, {steps} steps, the "
          "third fit (calls, median, total):")
    for key, values in sorted(TIMES.items()):
        print(f"  {key:26s} {len(values):4d} {1e6 * np.median(values):7.0f} us"
              f" {1e3 * sum(values):7.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
