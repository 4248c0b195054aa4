"""What the compiled training step itself costs, without `fit()`'s loop or
the callback's host work: each arm's train function called in a tight loop
on its own `tf.data` iterator, alternated over 5 repetitions (TensorFlow).

Arms: `plain` (Keras' step), `keras-check` (Keras' `LossScaleOptimizer`,
scale fixed at 1), `hybrid` (the hybrid's FULL step without a runner: the
gradient norm, the finite check and the conditional apply) and
`hybrid-collect` (the same plus the trajectory's running sums, as the
runner compiles it).

Usage: python step_graph.py TASK CALLS STEPS_PER_EXECUTION
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_hybrid as kh
from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task


def main(task_name, calls, spe):
    task = resolve_task({"task": task_name, "quick": False, "seed": 0})

    def batches():
        data = tf.data.Dataset.from_tensor_slices(
            (task.x_train.astype("float32"), task.y_train))
        return iter(data.batch(task.batch_size, drop_remainder=True)
                    .repeat())

    def compiled(model, **kwargs):
        return compile_model(model, task, task.learning_rate,
                             steps_per_execution=spe, **kwargs)

    arms = {}
    plain = compiled(task.build_model(0))
    plain.make_train_function()
    arms["plain"] = (plain, plain.train_function)
    check = compiled(task.build_model(0), finite_check=True)
    check.make_train_function()
    arms["keras-check"] = (check, check.train_function)
    hybrid = compiled(kh.HybridModel.wrap(task.build_model(0)))
    # Without a runner attached, the train function is the FULL step.
    hybrid.make_train_function()
    arms["hybrid"] = (hybrid, hybrid.train_function)
    collect = compiled(kh.HybridModel.wrap(task.build_model(0)))
    collect.make_train_function()
    collect.train_function(batches())  # builds the weights
    sums = [tf.Variable(tf.zeros_like(v.value))
            for v in collect.trainable_variables]

    def full_collect(data):
        logs = collect.train_step(data)
        for total, variable in zip(sums, collect.trainable_variables):
            total.assign_add(variable)
        return logs

    arms["hybrid-collect"] = (collect, collect._make_function(full_collect))
    iterators = {name: batches() for name in arms}
    for name, (_, function) in arms.items():
        for _ in range(50):
            function(iterators[name])
    times = {name: [] for name in arms}
    for repetition in range(5):
        order = list(arms) if repetition % 2 == 0 else list(arms)[::-1]
        for name in order:
            model, function = arms[name]
            keras.ops.convert_to_numpy(model.trainable_variables[0])
            start = time.perf_counter()
            for _ in range(calls):
                function(iterators[name])
            keras.ops.convert_to_numpy(model.trainable_variables[0])
            times[name].append((time.perf_counter() - start) / calls)
    base = min(times["plain"])
    print(f"{task_name}, {spe} steps per call, {calls} calls x 5 "
          f"repetitions (per call: min, median; min / plain's min)")
    for name, values in times.items():
        print(f"  {name:15s} {1e6 * min(values):8.0f} us "
              f"{1e6 * np.median(values):8.0f} us  {min(values) / base:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
