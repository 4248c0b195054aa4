"""How cheap could `outer` be with its phase end inside the compiled step?

A feasibility measurement, not the package's code: `cnn16` (as in
`../2026-12-04-outer-cnn-cost/run.py`) trained by a Keras model whose
`train_step` (TensorFlow) runs Keras' own step and then, in the same graph,
`outer`'s arithmetic for a constant learning rate: the running sums of a
30-step FULL phase, its two half averages, the drift, the outer momentum
buffer (`mu = 0.5`), and at the phase end a jump of `eta * mu * buffer`
over 20 steps of learning-rate time (`eta = 2`, a 2-step phase at jump
scale 10), applied only if finite; the 4 steps after a jump (its 2 trained
batches and 2 CORRECT steps) are not collected. No monitor, no rollback
point, no report, no warmup or schedule gates: the floor of what an
in-graph `outer` step would cost, next to plain `fit()` and the package's
`outer`, each `fit()` in a fresh process, alternated.

Usage: python in_graph.py [--repetitions 5] [--out in_graph.json]
"""

import json
import os
import statistics
import sys
import time

import alternate

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "2026-12-04-outer-cnn-cost")
FULL, SKIP, MU, ETA, UNITS = 30, 4, 0.5, 2.0, 20.0
ARMS = ["plain", "in-graph", "outer"]


def _in_graph_model(inner, learning_rate, guarded=False, phase_end=True):
    """`inner` in a model whose `train_step` adds `outer`'s arithmetic.

    Args:
        guarded: run keras-hybrid's guarded step (`HybridModel`, no
            callback) instead of Keras' own.
        phase_end: `False` keeps only the running sums (no phase end).
    """
    import keras
    import tensorflow as tf

    from keras_hybrid.model import WrappedHybridModel

    class InGraphOuter(WrappedHybridModel if guarded else keras.Model):
        def __init__(self, inner):
            if guarded:
                super().__init__(inner)
            else:
                super().__init__()
                self.inner = inner

        def call(self, x, training=False):
            return self.inner(x, training=training)

        def build_outer(self):
            self.k = tf.Variable(0, dtype=tf.int32, trainable=False)
            zeros = [tf.zeros_like(v) for v in self.trainable_variables]
            self.sums = [tf.Variable(z, trainable=False) for z in zeros]
            self.first = [tf.Variable(z, trainable=False) for z in zeros]
            self.buffer = [tf.Variable(z, trainable=False) for z in zeros]
            self.started = tf.Variable(False, trainable=False)
            self.jumps = tf.Variable(0, dtype=tf.int32, trainable=False)

        def train_step(self, data):
            logs = super().train_step(data)
            weights = [v.value for v in self.trainable_variables]
            k = self.k.assign_add(1)

            def add():
                for s, w in zip(self.sums, weights):
                    s.assign_add(w)
                return tf.constant(0)

            tf.cond(k > 0, add, lambda: tf.constant(0))
            if not phase_end:
                tf.cond(tf.equal(k, FULL), lambda: self.k.assign(0),
                        lambda: self.k)
                return logs

            def close_half():
                for f, s in zip(self.first, self.sums):
                    f.assign(s / (FULL // 2))
                    s.assign(tf.zeros_like(s))
                return tf.constant(0)

            def end_phase():
                drift = [(s / (FULL - FULL // 2) - f) / (FULL / 2.0)
                         for s, f in zip(self.sums, self.first)]
                per_rate = [d / learning_rate for d in drift]
                new = [tf.where(self.started, MU * b + s, s)
                       for b, s in zip(self.buffer, per_rate)]
                for b, n in zip(self.buffer, new):
                    b.assign(n)
                moved = [w + ETA * MU * learning_rate * UNITS * n
                         for w, n in zip(weights, new)]
                finite = tf.reduce_all(
                    [tf.reduce_all(tf.math.is_finite(m)) for m in moved])
                jump = tf.logical_and(finite, self.started)
                for v, m, w in zip(self.trainable_variables, moved, weights):
                    v.assign(tf.where(jump, m, w))
                self.jumps.assign_add(tf.cast(jump, tf.int32))
                self.started.assign(True)
                for s in self.sums:
                    s.assign(tf.zeros_like(s))
                self.k.assign(-SKIP)
                return tf.constant(0)

            tf.cond(tf.equal(k, FULL // 2), close_half,
                    lambda: tf.constant(0))
            tf.cond(tf.equal(k, FULL), end_phase, lambda: tf.constant(0))
            return logs

    return InGraphOuter(inner)


def child(arm, build=None):
    """One arm's `fit()`; `build(arm, model) -> (model, optimizer or None)`
    makes the arms this script does not know (`floor.py`)."""
    sys.path.insert(0, RUN)
    import keras

    import keras_hybrid as kh
    import run

    (x, y), (xv, yv) = run._synthetic_images(1)
    keras.utils.set_random_seed(1)
    model = run._small_cnn(None)
    callbacks = []
    optimizer = None
    if build is not None:
        model, optimizer = build(arm, model)
    elif arm == "in-graph":
        model = _in_graph_model(model, 1e-3)
        model.build_outer()
    elif arm == "outer":
        model = kh.HybridModel.wrap(model)
        callbacks = [kh.HybridPredictCallback("outer", verbose=0)]
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    cpu = os.times()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=32, epochs=15,
                        validation_data=(xv, yv), callbacks=callbacks,
                        verbose=0)
    wall = time.perf_counter() - start
    after = os.times()
    result = {"arm": arm, "wall_s": wall,
              "cpu_s": after.user - cpu.user + after.system - cpu.system,
              "final_val_loss": float(history.history["val_loss"][-1])}
    if hasattr(model, "jumps"):
        result["jumps"] = int(model.jumps.numpy())
    print("RESULT " + json.dumps(result))


def report(runs, repetitions):
    arms = ARMS

    def of(arm, r, key):
        return next(x[key] for x in runs
                    if x["arm"] == arm and x["repetition"] == r)

    for arm in arms[1:]:
        for key in ("wall_s", "cpu_s"):
            ratios = [of(arm, r, key) / of("plain", r, key)
                      for r in range(repetitions)]
            print(f"{arm} / plain, {key[:-2]}: median "
                  f"{statistics.median(ratios):.3f} "
                  f"[{min(ratios):.3f}-{max(ratios):.3f}]")
        losses = [x["final_val_loss"] for x in runs if x["arm"] == arm]
        print(f"{arm} final val loss: {statistics.median(losses):.4f}")


if __name__ == "__main__":
    alternate.main(__file__, child, ARMS, 5, report)
