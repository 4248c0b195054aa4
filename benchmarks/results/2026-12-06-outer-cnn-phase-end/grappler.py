"""What Grappler costs a phase function on TensorFlow: the phase-end
function (`trajectory._second_mean_and_drift`, as a compiled update of the
`cnn16` model's 8 weight shapes) traced, then called the first time (which
instantiates and optimizes its graph) and 5 x 50 times more, with Grappler's
rewrites on and off, each in a fresh `tf.function`, alternated.

Usage: python grappler.py [--repetitions 2]
"""

import argparse
import contextlib
import os
import statistics
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from keras_hybrid import backends  # noqa: E402
from keras_hybrid import trajectory  # noqa: E402

SHAPES = [(3, 3, 1, 16), (16,), (3, 3, 16, 32), (32,), (512, 64), (64,),
          (64, 10), (10,)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=2)
    args = parser.parse_args()
    variables = [keras.Variable(tf.random.normal(s)) for s in SHAPES]

    def update(*arguments):
        values = [ops.convert_to_tensor(v) for v in variables]
        new, out = trajectory._second_mean_and_drift(values, *arguments)
        for variable, value in zip(variables, new):
            variable.assign(value)
        return out

    def tensors():
        return [ops.ones(s) for s in SHAPES]

    arguments = (trajectory.scalar_tensor(3.0), tensors(),
                 trajectory.scalar_tensor(2.0), tensors(),
                 (tensors(), tensors(), trajectory.scalar_tensor(1.0)))
    flat = tf.nest.flatten(arguments)
    arms = {"grappler": contextlib.nullcontext,
            "unoptimized": backends._unoptimized}
    results = {arm: [] for arm in arms}
    for r in range(args.repetitions):
        for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            context = arms[arm]
            start = time.perf_counter()
            concrete = tf.function(update, autograph=False
                                   ).get_concrete_function(*arguments)
            trace = time.perf_counter() - start

            def call():
                with context():
                    concrete._call_flat(flat, concrete.captured_inputs)

            start = time.perf_counter()
            call()
            first = time.perf_counter() - start
            calls = [timeit.timeit(call, number=50) / 50 for _ in range(5)]
            ops_count = len(concrete.graph.get_operations())
            results[arm].append((trace, first, statistics.median(calls)))
            print(f"{arm:12s} trace {1e3 * trace:6.1f} ms, first call "
                  f"{1e3 * first:6.1f} ms, later calls median "
                  f"{1e3 * statistics.median(calls):.3f} ms "
                  f"[{1e3 * min(calls):.3f}-{1e3 * max(calls):.3f}] "
                  f"({ops_count} ops)")


if __name__ == "__main__":
    main()
