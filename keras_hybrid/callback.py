"""`HybridPredictCallback`: attaches the hybrid runner to `fit()`."""

import time

import keras
import numpy as np

from keras_hybrid import backends
from keras_hybrid import checkpoint
from keras_hybrid.config import HybridConfig
from keras_hybrid.report import build_report
from keras_hybrid.report import save_report


class HybridPredictCallback(keras.callbacks.Callback):
    """Runs the WARMUP -> FULL -> PREDICT -> CORRECT cycle during `fit()`.

    The model must be a `HybridModel` (subclass it or use
    `HybridModel.wrap`). The callback can be reused: its state is reset in
    `on_train_begin`.

    Args:
        config: a `HybridConfig`, a dict, a preset name (`"default"`,
            `"conservative"`, `"balanced"`, `"aggressive"`) or a YAML path.
            `None` uses the model's `hybrid_config` if it has one, else the
            defaults. Validated here, before training starts.

    Example:

    ```python
    callback = HybridPredictCallback("balanced")
    model.fit(x, y, epochs=10, callbacks=[callback])
    callback.save_report("report.json")
    ```
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = None if config is None else HybridConfig.resolve(config)
        if self.config is not None:
            backends.get()  # an unsupported backend fails here
        self.runner = None
        self._resume_metrics = None
        self._next_save = None

    def on_train_begin(self, logs=None):
        from keras_hybrid.model import HybridModel
        from keras_hybrid.runner import HybridRunner

        model = self.model
        if not isinstance(model, HybridModel):
            raise ValueError(
                "HybridPredictCallback needs a HybridModel; wrap yours with "
                "`keras_hybrid.HybridModel.wrap(model)` and compile the "
                f"wrapper. Received: model of type {type(model).__name__}"
            )
        if type(model).train_step is not HybridModel.train_step:
            raise ValueError(
                "HybridPredictCallback needs the HybridModel's own "
                "`train_step`: PREDICT phases skip the backward pass, so a "
                "custom training step would silently not run. Put a custom "
                "loss into `compute_loss()` instead, or train without the "
                f"callback. Received: model of type {type(model).__name__} "
                "overriding `train_step`"
            )
        config = self.config or model.hybrid_config or HybridConfig()
        backends.get()
        self.runner = HybridRunner(model, config)
        params = self.params or {}
        self.runner.steps_per_epoch = params.get("steps")
        if params.get("steps") and params.get("epochs"):
            self.runner.total_steps = int(params["steps"]) * int(
                params["epochs"]
            )
        self._resume_metrics = None
        resume = getattr(model, "_hybrid_resume", None)
        if resume is not None:
            self._resume(resume)
            model._hybrid_resume = None
        interval = config.checkpoint.save_interval
        self._next_save = (
            (self.runner.controller.step // interval + 1) * interval
            if interval and config.checkpoint.directory else None
        )
        model._attach_runner(self.runner)

    def _resume(self, resume):
        """Continues a checkpointed run: runner state, epoch and position."""
        from keras_hybrid.runner_state import set_runner_state

        state = resume["training_state"]
        if resume["runner"] is not None:
            set_runner_state(self.runner, *resume["runner"])
        epoch = int(state.get("epoch") or 0)
        self.runner.epoch = epoch
        self.runner.skip_batches = int(state.get("batch_in_epoch") or 0)
        # Reapplied at the first trained batch: the epoch's data iterator
        # (created after this) may draw from the global generator first.
        self.runner.pending_random_state = state["random"].get("torch")
        self.model._initial_epoch = epoch
        self._resume_metrics = resume["metrics"]

    def on_epoch_begin(self, epoch, logs=None):
        if self.runner is not None:
            self.runner.last_logs = None
            self.runner.epoch = epoch
            self.runner.batch_in_epoch = 0
            if self._resume_metrics is not None:
                variables = self.model.metrics_variables
                # Compiled metrics are built by the first fit(); restore
                # their running means only if they match what was saved.
                if [tuple(v.shape) for v in variables] == [
                    np.shape(m) for m in self._resume_metrics
                ]:
                    for variable, value in zip(variables,
                                               self._resume_metrics):
                        variable.assign(value)
                self._resume_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        runner = self.runner
        if (
            self._next_save is None
            or runner is None
            or runner.controller.step < self._next_save
            or not runner.safe_to_checkpoint
        ):
            return
        ck = runner.config.checkpoint
        step = runner.controller.step
        self.model.save_checkpoint(
            checkpoint.step_path(ck.directory, step),
            include_predictor=ck.include_predictor,
        )
        checkpoint.rotate(ck.directory, ck.keep_last_n)
        self._next_save = (step // ck.save_interval + 1) * ck.save_interval

    def on_train_end(self, logs=None):
        if self.runner is None:
            return
        self.runner.flush_iterations()
        self.runner.end_time = time.perf_counter()
        self.model._detach_runner()
        path = self.runner.config.metrics.report_path
        if path:
            self.save_report(path)

    def report(self):
        """The JSON training report of the current or last `fit()`.

        Returns:
            A dict (see README, "The training report").

        Raises:
            RuntimeError: before any training.
        """
        if self.runner is None:
            raise RuntimeError(
                "No report yet: call `fit()` with this callback first."
            )
        return build_report(self.runner)

    def save_report(self, path):
        """Writes `report()` as JSON to `path`; returns the path."""
        return save_report(self.report(), path)
