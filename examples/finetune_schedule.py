"""The Keras transfer-learning guide's two-stage recipe in one `fit()`.

The guide trains a new head on a frozen pretrained backbone, then sets
`base_model.trainable = True`, compiles again (a new optimizer: the head's
optimizer state, the callbacks' state and the logs start over) and fits a
second time at a low learning rate. Here the same two stages run in one
`fit()`: `FreezeSchedule.head_first` trains only the head for the first
epochs (a frozen backbone runs no backward pass), then everything, with the
head's optimizer state kept. The two stages share one learning rate
(schedule), as one optimizer does; use a schedule such as warmup + cosine
if the second stage wants a lower rate.

The "pretrained" backbone is trained here on one synthetic task and reused
on a related one, so the example runs offline in about a minute on a CPU.

Run: python examples/finetune_schedule.py
"""

import keras
import numpy as np

import keras_hybrid as kh


def make_task(seed, n=2000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)).astype("float32")
    w = np.random.default_rng(0).normal(size=(32, 8))  # shared features
    features = np.tanh(x @ w)
    y = np.argmax(features @ rng.normal(size=(8, 4)), axis=1)
    return x, y.astype("int32")


def pretrained_backbone():
    """A backbone trained on the source task (its own head discarded)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))
    h = keras.layers.Dense(64, activation="relu", name="block_1")(inputs)
    h = keras.layers.BatchNormalization(name="norm_1")(h)
    h = keras.layers.Dense(64, activation="relu", name="block_2")(h)
    h = keras.layers.Dense(64, activation="relu", name="block_3")(h)
    source = keras.Model(inputs, keras.layers.Dense(4)(h))
    source.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = make_task(seed=1)
    source.fit(x, y, batch_size=64, epochs=5, verbose=0)
    return keras.Model(inputs, h, name="backbone")


def main():
    backbone = pretrained_backbone()
    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(4, name="new_head")(backbone(inputs))
    model = kh.HybridModel.wrap(keras.Model(inputs, outputs))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = make_task(seed=2)
    # Groups: the backbone (named by its model's name) and the new head.
    schedule = kh.FreezeSchedule.head_first(
        epochs=2, groups=["backbone", "new_head"]
    )
    callback = kh.HybridPredictCallback("plain", freeze=schedule)
    history = model.fit(x[:1600], y[:1600], batch_size=64, epochs=6,
                        validation_data=(x[1600:], y[1600:]),
                        callbacks=[callback], verbose=2)
    print("frozen groups per epoch:", history.history["frozen_groups"])
    freezing = callback.report()["freezing"]
    print("groups:", freezing["groups"])
    print("switches:", freezing["events"])
    print("backward work saved: "
          f"{freezing['backward_work_saved_pct']:.1f}% (estimated from "
          "the layers' sizes)")
    # Afterwards the model is a normal Keras model again.
    assert all(layer.trainable for layer in backbone.layers)


if __name__ == "__main__":
    main()
