"""Worker process of the cross-backend layer-wise test (run as a script
with KERAS_BACKEND set: the backend is fixed per process).

Usage: KERAS_BACKEND=jax python tests/layerwise_worker.py

Builds a small 'pretrained backbone + new head' network with weights drawn
by NumPy (the same on every backend), pretrains it with plain `fit()`,
fine-tunes it under the `finetune` preset on the same batches in the same
order, and prints one JSON line: every settle check's decision, the freeze
events, and the final loss.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(400, 12)).astype("float32")
y = ((x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1)).astype(
    "int32")

net = keras.Sequential([
    keras.Input((12,)),
    keras.layers.Dense(24, activation="relu", name="d0"),
    keras.layers.Dense(24, activation="relu", name="d1"),
    keras.layers.Dense(24, activation="relu", name="d2"),
    keras.layers.Dense(3, name="head"),
], name="net")
for variable in net.weights:  # NumPy's draws: the same on every backend.
    shape = tuple(variable.shape)
    if len(shape) == 2:
        value = rng.normal(size=shape) / np.sqrt(shape[0])
    else:
        value = np.zeros(shape)
    variable.assign(value.astype("float32"))
model = kh.HybridModel.wrap(net)
model.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))
model.fit(x, y, batch_size=20, epochs=3, shuffle=False, verbose=0)
config = kh.HybridConfig.preset("finetune")
config.layerwise.window = 5
config.layerwise.check_batches = 2
config.layerwise.patience = 1
config.layerwise.tolerance = 0.02
config.layerwise.start_fraction = 0.0
callback = kh.HybridPredictCallback(config, verbose=0)
history = model.fit(x, y, batch_size=20, epochs=3, shuffle=False,
                    verbose=0, callbacks=[callback])
freezing = callback.report()["freezing"]
print(json.dumps({
    "backend": keras.backend.backend(),
    "decisions": [[c["step"], c["group"], c["settled"]]
                  for c in freezing["checks"]],
    "margins": [c["loss_reverted"] / c["loss"] - 1.0
                for c in freezing["checks"]],
    "events": [[e["step"], e["frozen_groups"]] for e in freezing["events"]],
    "final_loss": float(history.history["loss"][-1]),
}))
