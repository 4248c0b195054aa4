"""What Keras' own in-graph finite check costs on a task's step.

Plain `fit()` against the same model compiled with Keras'
`LossScaleOptimizer` (scale fixed at 1, never grown: its finite check and
conditional apply, and nothing else that changes the result), alternated in
one process over the same batches, timed with the overhead measurement's
window clock. Usage: python keras_guard.py TASK STEPS REPETITIONS [SPE]
"""

import json
import sys

import keras
import numpy as np

from keras_hybrid.bench.arms import resolve_task
from keras_hybrid.bench.overhead import WindowClock
from keras_hybrid.bench.overhead import summarize


def main(task_name, steps, repetitions, spe=1):
    task = resolve_task({"task": task_name, "quick": False, "seed": 0})
    start = 60
    batch = int(task.batch_size)
    count = batch * (start + steps)
    reps = -(-count // len(task.x_train))
    x = np.concatenate([task.x_train] * reps)[:count]
    y = np.concatenate([task.y_train] * reps)[:count]

    def build(guarded):
        keras.utils.set_random_seed(0)
        model = task.build_model(0)
        optimizer = task.make_optimizer(task.learning_rate)
        if guarded:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=1.0, dynamic_growth_steps=10**9)
        model.compile(optimizer=optimizer, loss=task.loss,
                      metrics=list(task.metrics or []),
                      steps_per_execution=spe)
        return model

    models = {False: build(False), True: build(True)}

    def timed(guarded):
        clock = WindowClock(start)
        models[guarded].fit(x, y, batch_size=batch, epochs=1, verbose=0,
                            shuffle=False, callbacks=[clock])
        return clock.seconds, clock.cpu_seconds

    timed(False)
    timed(True)
    times = {False: [], True: []}
    for index in range(repetitions):
        order = [False, True] if index % 2 == 0 else [True, False]
        for guarded in order:
            times[guarded].append(timed(guarded))
    wall = {k: [t[0] for t in v] for k, v in times.items()}
    cpu = {k: [t[1] for t in v] for k, v in times.items()}
    result = summarize(wall[False], wall[True], cpu[False], cpu[True])
    result.update(task=task_name, steps=steps, repetitions=repetitions,
                  steps_per_execution=spe, backend=keras.backend.backend(),
                  plain_step_ms=1000 * min(wall[False]) / steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
         int(sys.argv[4]) if len(sys.argv) > 4 else 1)
