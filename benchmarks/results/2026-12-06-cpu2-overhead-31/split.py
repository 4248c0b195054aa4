"""Where the one-step TensorFlow MLP cost row's time goes, per step.

In one process, after a short `fit()` with the `default` preset (prediction
off), five train functions run on the same batches in blocks of 50 steps,
alternated (the order reversed every other round, 40 rounds): plain
`fit()`'s step, Keras' finite check (`LossScaleOptimizer`, scale 1),
keras-hybrid's guarded step alone (`HybridModel` without a runner), the
collecting step (the guard plus the running sums), and `HybridRunner.run`
(the collecting step plus the runner's host work: statistics, reads,
phase ends). Prints each one's median ms a step and its ratio to plain
(median and interquartile range of the 40 rounds).

Usage: python split.py
"""

import time

import keras
import numpy as np
import tensorflow as tf

import keras_hybrid as kh
from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task

ROUNDS, BLOCK = 40, 50


def setup():
    """The three models, trained briefly, the hybrid's runner, the batch
    iterator and the five arms (train functions of the iterator)."""
    task = resolve_task({"task": "mnist1d-mlp", "seed": 0})
    config = kh.HybridConfig.from_dict(
        {"preset": "default", "enable_prediction": False, "warmup_steps": 5})
    x, y, b = task.x_train, task.y_train, task.batch_size
    hybrid = kh.HybridModel.wrap(task.build_model(0))
    compile_model(hybrid, task, task.learning_rate)
    callback = kh.HybridPredictCallback(config, verbose=0)
    hybrid.fit(x[:b * 100], y[:b * 100], batch_size=b, epochs=1, verbose=0,
               callbacks=[callback])
    runner = callback.runner
    plain = compile_model(task.build_model(0), task, task.learning_rate)
    check = compile_model(task.build_model(0), task, task.learning_rate,
                          finite_check=True)
    for model in (plain, check):
        model.fit(x[:b * 10], y[:b * 10], batch_size=b, epochs=1, verbose=0)
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(
        b, drop_remainder=True).repeat())
    arms = {"plain": plain.train_function,
            "keras-check": check.train_function,
            "guard": hybrid._hybrid_plain_train,
            "collecting": runner.functions["full"],
            "runner.run": runner.run}
    return (hybrid, plain, check), runner, iterator, arms


def measure(models, iterator, arms):
    """Runs the arms alternated and prints their step times."""

    def block(function, steps=BLOCK):
        start = time.perf_counter()
        for _ in range(steps):
            function(iterator)
        for model in models:
            keras.ops.convert_to_numpy(model.trainable_variables[0])
        return (time.perf_counter() - start) / steps

    for function in arms.values():
        block(function, 20)
    times = {name: [] for name in arms}
    for index in range(ROUNDS):
        order = list(arms) if index % 2 == 0 else list(arms)[::-1]
        for name in order:
            times[name].append(block(arms[name]))
    base = np.array(times["plain"])
    for name in arms:
        ratios = np.array(times[name]) / base
        print(f"{name:12s} {1e3 * np.median(times[name]):.3f} ms/step  "
              f"/ plain median {np.median(ratios):.3f} IQR "
              f"{np.percentile(ratios, 25):.3f}-"
              f"{np.percentile(ratios, 75):.3f}")


def main():
    models, _, iterator, arms = setup()
    measure(models, iterator, arms)


if __name__ == "__main__":
    main()
