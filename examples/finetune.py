"""Transfer learning with the `finetune` preset: freeze settled layers.

A Keras transfer-learning workflow: a backbone pretrained on a source task,
a new head for the target task, a small learning rate. The `finetune`
preset splits the model into layer groups (`"auto"`: groups of similar
parameter count, from the input) and, every `layerwise.window` steps,
checks whether the lowest trainable group's recent movement still lowers
the loss of fresh batches. Once it clearly does not (beyond the batches'
noise, twice in a row), that group is frozen where it is: its backward pass
stops, and the next group up is checked. The head always trains.

The script fine-tunes the same pretrained model twice, with plain `fit()`
and with the preset, and prints both validation losses and what the
preset froze: judge it by these numbers on your own model. On the
library's own fine-tuning benchmarks the preset froze little and saved
little (the best static freeze within 1% of full fine-tuning saved at most
6% of the backward work there; see benchmarks/README.md, "Fine-tuning").

The "pretrained" backbone is trained here on a synthetic task and reused
on a related one, so the example runs offline in about a minute on a CPU.

Run: python examples/finetune.py
"""

import keras
import numpy as np

import keras_hybrid as kh


def make_task(seed, n=3000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)).astype("float32")
    w = np.random.default_rng(0).normal(size=(32, 16))  # shared features
    features = np.tanh(x @ w)
    y = np.argmax(features @ rng.normal(size=(16, 5)), axis=1)
    return x, y.astype("int32")


def pretrained_backbone():
    """Four dense blocks trained on the source task (its head discarded)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))
    h = inputs
    for i in range(4):
        h = keras.layers.Dense(128, activation="relu", name=f"block_{i}")(h)
    source = keras.Model(inputs, keras.layers.Dense(5)(h))
    source.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = make_task(seed=1)
    source.fit(x, y, batch_size=64, epochs=8, verbose=0)
    return keras.Model(inputs, h, name="backbone")


def fine_tune(backbone_weights, callbacks):
    backbone = pretrained_backbone()
    backbone.set_weights(backbone_weights)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(5, name="new_head")(backbone(inputs))
    model = kh.HybridModel.wrap(keras.Model(inputs, outputs))
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = make_task(seed=2)
    history = model.fit(x[:2400], y[:2400], batch_size=32, epochs=8,
                        validation_data=(x[2400:], y[2400:]),
                        callbacks=callbacks, verbose=0)
    return history.history["val_loss"][-1]


def main():
    weights = pretrained_backbone().get_weights()
    plain = fine_tune(weights, callbacks=[])
    # verbose=1 prints each freeze as it happens.
    callback = kh.HybridPredictCallback("finetune", verbose=1)
    hybrid = fine_tune(weights, callbacks=[callback])
    report = callback.report()
    freezing = report["freezing"]
    print(f"validation loss: plain fit() {plain:.4f}, finetune preset "
          f"{hybrid:.4f} ({hybrid / plain - 1:+.1%})")
    print("layer groups:", freezing["groups"])
    for check in freezing["checks"]:
        print(f"  step {check['step']}: group {check['group']} "
              f"{'settled' if check['settled'] else 'still learning'} "
              f"(undoing its last window costs at most "
              f"{check['bound']:+.2%})")
    print("freezes:", [(e["step"], e["frozen_groups"])
                       for e in freezing["events"]])
    print("backward work saved: "
          f"{report['training_summary']['backward_work_saved_pct']:.1f}%")


if __name__ == "__main__":
    main()
