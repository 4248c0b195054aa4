"""Quick start: subclass HybridModel and train with the balanced preset.

Run: python examples/quickstart.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hybrid as kh  # noqa: E402


class Classifier(kh.HybridModel):
    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(128, activation="relu")
        self.out = keras.layers.Dense(classes)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8192, 32)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(32, 10)), axis=1)
    model = Classifier()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = kh.HybridPredictCallback(
        kh.HybridConfig.preset("balanced").to_dict() | {"warmup_steps": 40}
    )
    model.fit(x, y, batch_size=64, epochs=4, validation_split=0.1,
              callbacks=[callback], verbose=2)
    summary = callback.report()["training_summary"]
    print(f"backward passes skipped: {summary['backward_reduction_pct']:.1f}% "
          f"({summary['predictions_accepted']} of "
          f"{summary['predictions_attempted']} predictions accepted)")
    callback.save_report("hybrid_report.json")


if __name__ == "__main__":
    main()
