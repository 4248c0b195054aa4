"""Wrap a model you already have, with a YAML config.

Run: python examples/wrap_existing_model.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs",
                      "balanced.yaml")


def main():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8192, 32)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")

    existing = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(2),
    ])
    model = kh.HybridModel.wrap(existing)  # trains existing's own weights
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    config = kh.HybridConfig.from_yaml(CONFIG)
    config.warmup_steps = 40
    callback = kh.HybridPredictCallback(config)
    model.fit(x, y, batch_size=64, epochs=3, callbacks=[callback], verbose=2)
    print(model.statistics())
    # The original model holds the trained weights and can be used directly.
    print("accuracy of the original model object:",
          float(np.mean(np.argmax(existing.predict(x, verbose=0), 1) == y)))


if __name__ == "__main__":
    main()
