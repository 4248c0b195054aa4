"""Whether the collecting step's running sums can be made cheaper, per step.

After the same short `fit()` as `../2026-12-06-cpu2-overhead-31/split.py`
(the `default` preset, prediction off), eight train functions run on the
same batches in blocks of 50 steps, alternated over 40 rounds: plain
`fit()`'s step, Keras' finite check (`LossScaleOptimizer`, scale 1),
keras-hybrid's guarded step alone, the collecting step with its flag on and
off (the sums under `tf.cond`, as the runner runs them), and three other
ways to write the sums (always added with no flag; multiplied by a float
flag, no conditional; the additions grouped under one conditional). Prints
each one's median ms a step and its ratio to plain (median and IQR).

Usage: python sums.py (from this folder)
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "2026-12-06-cpu2-overhead-31"))
import tensorflow as tf  # noqa: E402

import split as earlier  # noqa: E402


def main():
    models, runner, iterator, arms = earlier.setup()
    hybrid = models[0]
    accs = runner.calls.trajectory.accumulators
    full, collect = runner.functions["full"], runner.functions["collect"]
    flag = tf.Variable(True, trainable=False)
    flagf = tf.Variable(1.0, trainable=False)

    def always(data):
        logs = hybrid.train_step(data)
        for a, v in zip(accs, hybrid.trainable_variables):
            a.assign_add(v)
        return logs

    def select(data):
        logs = hybrid.train_step(data)
        for a, v in zip(accs, hybrid.trainable_variables):
            a.assign_add(v * flagf)
        return logs

    def grouped(data):
        logs = hybrid.train_step(data)
        def add():
            ops = [a.assign_add(v) for a, v in zip(accs, hybrid.trainable_variables)]
            with tf.control_dependencies(ops):
                return tf.constant(True)
        tf.cond(flag, add, lambda: tf.constant(False))
        return logs

    def flagged(value):
        def step(data):
            collect(value)
            return full(data)
        return step

    arms = {"plain": arms["plain"], "keras-check": arms["keras-check"],
            "guard": arms["guard"],
            "cond-on": flagged(True), "cond-off": flagged(False),
            "always": hybrid._make_function(always),
            "select": hybrid._make_function(select),
            "grouped": hybrid._make_function(grouped)}
    earlier.measure(models, iterator, arms)


if __name__ == "__main__":
    main()
