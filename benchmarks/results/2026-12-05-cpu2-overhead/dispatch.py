"""What one compiled phase-end call costs on TensorFlow, and how much of it
is `tf.function`'s dispatch: the trajectory's phase close (`finish_phase`,
5 arguments holding 27 tensors for a 6-variable model) timed as the runner
calls it, then its `tf.function` called directly, through its concrete
function, through the concrete function's flat call (no argument matching
at all) and through `keras_hybrid.backends.ConcreteCalls` (the flat call
with its key), which the runner uses where it exists.

Usage: python dispatch.py [TASK]   (default: mnist1d-mlp)
"""

import sys
import time

import keras
import tensorflow as tf

from keras_hybrid import trajectory
from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task

CALLS = 200


def per_call(function):
    start = time.perf_counter()
    for _ in range(CALLS):
        function()
    return 1e6 * (time.perf_counter() - start) / CALLS


def main(task_name):
    task = resolve_task({"task": task_name, "quick": False, "seed": 0})
    model = compile_model(task.build_model(0), task, task.learning_rate)
    model.fit(task.x_train[:640], task.y_train[:640], verbose=0)
    path = trajectory.WeightTrajectory(model.trainable_variables)
    path.start_phase()
    path.count = 10
    path.close_half()

    def finish():
        path.count = 10
        path.finish_phase(None)
        path.first_mean = path.second_mean

    for _ in range(40):  # past its eager calls: compiled from here on
        finish()
    scalar = trajectory.scalar_tensor
    args = (scalar(10.0), path.first_mean, scalar(10.0),
            list(path.first_mean),
            (path.first_mean, path.first_mean, scalar(1.0)))
    compiled = path._finish.compiled
    function = getattr(compiled, "function", compiled)
    concrete = function.get_concrete_function(*args)
    flat = tf.nest.flatten(args)
    def flat_call():
        concrete._call_flat(flat, concrete.captured_inputs)

    print(f"{task_name}: {len(model.trainable_variables)} variables, "
          f"{len(flat)} tensor arguments; per call:")
    print(f"  finish_phase as the runner calls it  {per_call(finish):6.0f} us")
    print(f"  scalar_tensor (one eager conversion)  "
          f"{per_call(lambda: scalar(1.0)):6.0f} us")
    print(f"  the tf.function                       "
          f"{per_call(lambda: function(*args)):6.0f} us")
    print(f"  its concrete function                 "
          f"{per_call(lambda: concrete(*args)):6.0f} us")
    print(f"  its flat call (no argument matching)  "
          f"{per_call(flat_call):6.0f} us")
    if compiled is not function:
        print(f"  ConcreteCalls (key + flat call)       "
              f"{per_call(lambda: compiled(*args)):6.0f} us")
    keras.ops.convert_to_numpy(path.second_mean[0])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist1d-mlp")
