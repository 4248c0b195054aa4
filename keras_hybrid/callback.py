"""`HybridPredictCallback`: attaches the hybrid runner to `fit()`."""

import time

import keras

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
            _check_supported(self.config)
        self.runner = None

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
        config = self.config or model.hybrid_config or HybridConfig()
        _check_supported(config)
        self.runner = HybridRunner(model, config)
        model._attach_runner(self.runner)

    def on_epoch_begin(self, epoch, logs=None):
        if self.runner is not None:
            self.runner.last_logs = None

    def on_train_end(self, logs=None):
        if self.runner is None:
            return
        self.runner.flush_iterations()
        self.runner.end_time = time.perf_counter()
        self.model._attach_runner(None)
        self.model._hybrid_last_runner = self.runner
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


def _check_supported(config):
    from keras_hybrid import backends
    from keras_hybrid import dynamics

    backends.get()
    if config.predictor.type not in dynamics.AVAILABLE:
        raise NotImplementedError(
            f"predictor.type={config.predictor.type!r} is not available in "
            f"this version of keras_hybrid; available: {dynamics.AVAILABLE}. "
            f"Received: predictor.type={config.predictor.type!r}"
        )
