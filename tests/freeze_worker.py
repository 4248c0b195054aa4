"""Worker process of the two-replica freeze test (run as a script: devices
must be configured before the backend starts).

Usage: python tests/freeze_worker.py KIND   (`mirrored` or `data_parallel`)

Trains with a freeze schedule (the bottom two groups, then one) on two
replicas and prints one JSON line: whether the frozen kernel stayed put,
the freeze events, the loss, and whether the replicas' copies agree.
"""

import json
import os, sys
KIND = sys.argv[1]
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

rng = np.random.default_rng(0)
x = rng.normal(size=(1024, 20)).astype("float32")
y = (x[:, 0] > 0).astype("int32")


def build():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(32, activation="relu", name="a"),
        keras.layers.Dense(32, activation="relu", name="b"),
        keras.layers.Dense(2, name="head"),
    ])
    m = kh.HybridModel.wrap(net)
    m.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
    return m


if KIND == "mirrored":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        m = build()
else:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    m = build()
a0 = keras.ops.convert_to_numpy(m.inner.get_layer("a").kernel).copy()
cb = kh.HybridPredictCallback(
    "plain", freeze=kh.FreezeSchedule([(0, 2), (20, 1)]))
m.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)
a1 = keras.ops.convert_to_numpy(m.inner.get_layer("a").kernel)
identical, compared = True, 0
if KIND == "mirrored":
    for v in list(m.variables) + list(m.optimizer.variables):
        values = getattr(v.value, "values", None)
        if values:
            compared += 1
            identical &= bool(np.array_equal(values[0].numpy(),
                                             values[1].numpy()))
print(json.dumps({
    "frozen_unchanged": bool(np.array_equal(a0, a1)),
    "events": cb.report()["freezing"]["events"],
    "loss": float(m.evaluate(x, y, verbose=0)),
    "replicas_identical": identical,
    "replica_variables_compared": compared,
}))
