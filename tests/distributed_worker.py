"""Worker process of the distribution tests (run as a script: devices must
be configured before the backend starts).

Usage: python tests/distributed_worker.py KIND PREDICT_MODE
(PREDICT_MODE `jump-rejected`: jumps that are rejected)

KIND: `mirrored` (TensorFlow MirroredStrategy on 2 logical CPUs) or
`data_parallel` (JAX keras.distribution.DataParallel on 2 host devices).
Trains a HybridModel with prediction, a poisoned batch (rollback) and
forced corrections, then prints one JSON line: the report summary, the
loss on the clean part of the data,
replica count and the largest difference between replicas of any variable.
"""

import json
import os
import sys

KIND, PREDICT_MODE = sys.argv[1], sys.argv[2]
if KIND == "mirrored":
    os.environ["KERAS_BACKEND"] = "tensorflow"
else:
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402
from tests.helpers import build_mlp  # noqa: E402
from tests.helpers import compile_model  # noqa: E402
from tests.helpers import eager_config  # noqa: E402


def dataset():
    """64-sample batches; NumPy NaNs are refused up front, a dataset is not
    scanned."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 20)).astype("float32")
    w = rng.normal(size=(20, 10)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(2048, 10)), axis=1)
    x[20 * 64:20 * 64 + 8] = np.nan  # one poisoned batch: a rollback
    return tf.data.Dataset.from_tensor_slices((x, y.astype("int32"))).batch(64)


def config():
    if PREDICT_MODE == "jump-rejected":
        # Jumps that overshoot: rejected, their check batches retrained.
        return eager_config(predict_mode="jump", correction_interval=0,
                            divergence_threshold=50.0, loss_tolerance=0.0,
                            predictor={"jump_scales": [10.0, 9.0]})
    return eager_config(predict_mode=PREDICT_MODE, correction_interval=3,
                        divergence_threshold=50.0)


def replica_values_mirrored(variable):
    return [np.array(v) for v in variable.value.values]


def replica_values_jax(variable):
    return [np.array(s.data) for s in variable.value.addressable_shards]


def run_mirrored():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(config())
    model.fit(dataset(), epochs=2, verbose=0, callbacks=[callback])
    return model, callback, strategy.num_replicas_in_sync, (
        replica_values_mirrored
    )


def run_data_parallel():
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(config())
    model.fit(dataset(), epochs=2, verbose=0, callbacks=[callback])
    return model, callback, len(devices), replica_values_jax


def main():
    run = run_mirrored if KIND == "mirrored" else run_data_parallel
    model, callback, replicas, values_of = run()
    report = callback.report()
    spread = 0.0
    finite = True
    variables = list(model.variables) + list(model.optimizer.variables)
    for variable in variables:
        values = values_of(variable)
        finite = finite and all(np.isfinite(v).all() for v in values)
        for other in values[1:]:
            spread = max(spread, float(np.max(np.abs(other - values[0]))))
    clean = dataset().unbatch().skip(21 * 64).batch(64)
    eval_loss = model.evaluate(clean, verbose=0, return_dict=True)["loss"]
    print(json.dumps({
        "eval_loss": float(eval_loss),
        "replicas": replicas,
        "copies": len(values_of(model.trainable_variables[0])),
        "max_replica_difference": spread,
        "finite": bool(finite),
        "summary": report["training_summary"],
        "events": [e["outcome"] for e in report["divergence_events"]],
    }))


if __name__ == "__main__":
    main()
