"""`HybridTensorBoard`: the hybrid's per-step scalars and interventions in
TensorBoard.

Written with `tf.summary.write` (TensorFlow's own summary op, tagged for
TensorBoard's Scalars and Text plugins), so it needs TensorFlow installed
(under any Keras backend), not the `tensorboard` package; viewing the logs
does.
"""

import math
import os

import keras

from keras_hybrid.dependencies import require
from keras_hybrid.messages import describe
from keras_hybrid.phases import Phase

SCALARS = ("phase", "predicting", "confidence", "backward_reduction",
           "predicted_loss", "loss", "interventions")


class HybridTensorBoard(keras.callbacks.Callback):
    """Writes the hybrid's scalars per training step for TensorBoard.

    Under `log_dir/hybrid` (next to the `train` and `validation` runs of
    Keras' `TensorBoard(log_dir)`), tags `hybrid/...`, one point per
    `update_freq` steps:

    - `phase` (0 WARMUP, 1 FULL, 2 PREDICT, 3 CORRECT) and `predicting` (1
      during a PREDICT phase, else 0: the PREDICT phases as blocks),
    - `confidence`, `backward_reduction` (fraction of steps so far without a
      backward pass), `predicted_loss` (when there is a forecast), `loss`
      (the training loss as the progress bar shows it, at the steps that
      trained),
    - `interventions`: the count of interventions so far, at the step of
      each one, with its description as text (`hybrid/intervention`, in
      TensorBoard's Text tab).

    Use it with a `HybridPredictCallback` in the same `fit()`; the order of
    the two in the list does not matter.

    Args:
        log_dir: the TensorBoard log directory.
        update_freq: write the scalars every this many steps (interventions
            are always written).

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        kh.HybridPredictCallback("balanced"),
        kh.HybridTensorBoard("logs"),
        keras.callbacks.TensorBoard("logs"),
    ])
    # tensorboard --logdir logs
    ```
    """

    def __init__(self, log_dir="logs", update_freq=1):
        super().__init__()
        if isinstance(update_freq, bool) or not isinstance(update_freq, int) \
                or update_freq < 1:
            raise ValueError(
                "`update_freq` must be an integer >= 1. "
                f"Received: update_freq={update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._tf = None
        self._writer = None
        self._last_step = None
        self._events_seen = 0
        self._backward_seen = None

    def on_train_begin(self, logs=None):
        self._tf = require("tensorflow", "HybridTensorBoard")
        self._writer = self._tf.summary.create_file_writer(
            os.path.join(self.log_dir, "hybrid")
        )
        self._last_step = None
        self._events_seen = 0
        self._backward_seen = None

    def _runner(self):
        # `_model`, not `model`: on JAX the property syncs the whole state
        # into the variables, which a per-step callback must not cost.
        return getattr(self._model, "_hybrid_runner", None)

    def on_train_batch_end(self, batch, logs=None):
        runner = self._runner()
        if runner is None or self._writer is None:
            return
        step = int(runner.controller.step)
        self._write_events(runner)
        if self._last_step is not None and (
            step - self._last_step < self.update_freq
        ):
            return
        self._last_step = step
        phase = int(runner.controller.phase)
        values = {
            "phase": phase,
            "predicting": float(phase == Phase.PREDICT),
            "confidence": float(runner.confidence),
            "backward_reduction": float(runner.stats.backward_reduction()),
        }
        if runner.predicted_loss is not None:
            values["predicted_loss"] = float(runner.predicted_loss)
        backward = runner.stats.backward
        if logs and "loss" in logs and backward != self._backward_seen:
            # Only steps that trained: a PREDICT step's logs are not a loss
            # the weights had.
            values["loss"] = float(keras.ops.convert_to_numpy(logs["loss"]))
        self._backward_seen = backward
        with self._writer.as_default(step=step):
            for name, value in values.items():
                if math.isfinite(value):
                    self._write(f"hybrid/{name}", float(value), "scalars")

    def _write_events(self, runner):
        events = runner.stats.events
        if len(events) < self._events_seen:
            self._events_seen = 0
        for index in range(self._events_seen, len(events)):
            event = events[index]
            kind, message = describe(event)
            with self._writer.as_default(step=int(event["step"])):
                self._write("hybrid/interventions", float(index + 1),
                            "scalars")
                self._write("hybrid/intervention", f"{kind}: {message}",
                            "text")
        self._events_seen = len(events)

    def _write(self, tag, value, plugin):
        """One summary for TensorBoard's `plugin` ("scalars" or "text")."""
        tf = self._tf
        metadata = tf.compat.v1.SummaryMetadata()
        metadata.plugin_data.plugin_name = plugin
        # SummaryMetadata.DataClass: 1 scalar, 2 tensor (how TensorBoard
        # reads the tensor).
        metadata.data_class = 1 if plugin == "scalars" else 2
        tensor = tf.constant(value, dtype=tf.float32 if plugin == "scalars"
                             else tf.string)
        tf.summary.write(tag, tensor, metadata=metadata.SerializeToString())

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is None:
            return
        runner = self._runner() or getattr(
            self.model, "_hybrid_last_runner", None
        )
        if runner is not None:
            self._write_events(runner)
        self._writer.close()
        self._writer = None


def read_scalars(directory):
    """Reads the scalars of the event files in `directory` (one run).

    Args:
        directory: e.g. `log_dir/hybrid`.

    Returns:
        A dict `tag -> [(step, value), ...]` sorted by step; text summaries
        are returned as strings under their tag.
    """
    tf = require("tensorflow", "Reading TensorBoard event files")
    series = {}
    for name in sorted(os.listdir(directory)):
        if not name.startswith("events."):
            continue
        for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                item = (array.item().decode() if array.dtype == object
                        else float(array))
                series.setdefault(value.tag, []).append((event.step, item))
    return {tag: sorted(points, key=lambda p: p[0])
            for tag, points in series.items()}
