"""The overhead profile: median call time of each compiled step function.

Run by `keras_hybrid.bench.harness` in its own subprocess, once per task.
"""

import itertools
import math
import time

import keras
import numpy as np

from keras_hybrid.bench.arms import compile_model
from keras_hybrid.bench.arms import resolve_task


def make_iterator(x, y, batch_size):
    """An endless iterator of batches as the backend's fit loop feeds them
    (a `tf.data` iterator on TensorFlow; backend tensors elsewhere)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        return iter(dataset.batch(batch_size).repeat())
    batches = [
        (keras.ops.convert_to_tensor(x[i:i + batch_size]),
         keras.ops.convert_to_tensor(y[i:i + batch_size]))
        for i in range(0, len(x) - batch_size + 1, batch_size)
    ]
    return itertools.cycle(batches)


def as_fit_loop_calls(model, functions):
    """Adapts train functions to be called with an iterator.

    TensorFlow's and JAX's fit loops pass the iterator itself; PyTorch's
    passes a one-batch list. Keras' own JAX train function also takes and
    returns the state, which is kept here between calls as the fit loop
    keeps it.
    """
    backend = keras.backend.backend()
    adapted = {}
    for name, function in functions.items():
        if backend == "torch":
            adapted[name] = _batch_list_call(function)
        else:
            adapted[name] = function
    if backend == "jax":
        adapted["plain_ms"] = _stateful_call(model, functions["plain_ms"])
    return adapted


def _batch_list_call(function):
    return lambda iterator: function([next(iterator)])


def _stateful_call(model, function):
    state = [model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True,
        optimizer_variables=True, metrics_variables=True,
    )]

    def call(iterator):
        logs, state[0] = function(state[0], iterator)
        return logs

    return call


def _to_host(outputs):
    if outputs is None:
        return None
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def _time_calls(functions, make_it, warmup, calls, rounds=5):
    """Median ms per call of each function, interleaved in `rounds`."""
    iterators = {name: make_it() for name in functions}
    for name, function in functions.items():
        for _ in range(warmup):
            _to_host(function(iterators[name]))
    times = {name: [] for name in functions}
    per_round = max(1, math.ceil(calls / rounds))
    for _ in range(rounds):
        for name, function in functions.items():
            for _ in range(per_round):
                begin = time.perf_counter()
                _to_host(function(iterators[name]))
                times[name].append(time.perf_counter() - begin)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def profile_task(spec):
    """Times each compiled step function on the same batches.

    Builds a plain model and a hybrid model of the task (same seed), runs
    two steps of `fit()` on each to build everything, then times `calls`
    calls (after `warmup` calls) of: the plain Keras train function, the
    hybrid `full` function (which also adds the weights to the trajectory
    sums), the forward-only `predict`
    function, and a jump skip step (`next_batch`, as the runner
    does). Each call's outputs are forced to host.

    Args:
        spec: an arm spec with `task`, `seed`, `config`, optional `calls`
            (30) and `warmup` (5).

    Returns:
        A dict of median milliseconds: `plain_ms`, `full_ms`,
        `predict_ms`, `skip_ms`, plus `calls`, `warmup`,
        `batch_size`, `backend`.
    """
    import keras_hybrid as kh

    task = resolve_task(spec)
    seed = int(spec["seed"])
    calls = int(spec.get("calls", 30))
    warmup = int(spec.get("warmup", 5))
    batch = int(task.batch_size)
    n = batch * 2
    x, y = task.x_train[:n], task.y_train[:n]

    keras.utils.set_random_seed(seed)
    plain = compile_model(task.build_model(seed), task, task.learning_rate)
    plain.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    plain.make_train_function()
    plain_function = plain.train_function

    keras.utils.set_random_seed(seed)
    hybrid = kh.HybridModel.wrap(task.build_model(seed))
    compile_model(hybrid, task, task.learning_rate)
    callback = kh.HybridPredictCallback(
        kh.HybridConfig.from_dict(spec["config"])
    )
    hybrid.fit(x, y, batch_size=batch, epochs=1, verbose=0,
               callbacks=[callback])
    runner = callback.runner

    def skip(iterator):
        # What the runner does per skipped batch (the optimizer's step
        # counter is advanced once per phase, not per batch).
        runner.backend.next_batch(iterator)

    count = batch * (warmup + calls)
    reps = math.ceil(count / len(task.x_train))
    xs = np.concatenate([task.x_train] * reps)[:count]
    ys = np.concatenate([task.y_train] * reps)[:count]
    times = _time_calls(
        as_fit_loop_calls(plain, {
            "plain_ms": plain_function,
            "full_ms": runner.functions["full"],
            "predict_ms": runner.functions["predict"],
            "skip_ms": skip,
        }),
        lambda: make_iterator(xs, ys, batch),
        warmup,
        calls,
    )
    return {**times, "calls": calls, "warmup": warmup, "batch_size": batch,
            "backend": keras.backend.backend(), "seed": seed}
