"""`HybridPredictCallback`: attaches the hybrid runner to `fit()`."""

import time
import warnings

import keras
import numpy as np
from keras.src.utils import io_utils

from keras_hybrid import backends
from keras_hybrid import checkpoint
from keras_hybrid import weight_average
from keras_hybrid.config import HybridConfig
from keras_hybrid.freezing import Freezer
from keras_hybrid.freezing import FreezeSchedule
from keras_hybrid.groups import LayerGroups
from keras_hybrid.layerwise import SettleCheck
from keras_hybrid.messages import InterventionLog
from keras_hybrid.report import build_report
from keras_hybrid.report import save_report


class HybridPredictCallback(keras.callbacks.Callback):
    """Runs the WARMUP -> FULL -> PREDICT -> CORRECT cycle during `fit()`.

    The model must be a `HybridModel` (subclass it or use
    `HybridModel.wrap`). The callback can be reused: its state is reset in
    `on_train_begin`.

    Accepted jumps of the weights and interventions (a rejected prediction
    whose weights were restored, a forced FULL phase, a rollback with a
    smaller learning rate) are printed as they happen, the first of each
    kind per epoch, with a count at the end of an epoch where one repeated.

    `History` gains `phase` (0 WARMUP, 1 FULL, 2 PREDICT, 3 CORRECT, as at
    the end of each epoch), `confidence`, `backward_reduction` and
    `predicted_loss`, one value per epoch, when `fit()` returns. With
    `metrics.log_to_progbar=True` they are in every batch's logs instead,
    so the progress bar and every callback see them.

    Args:
        config: a `HybridConfig`, a dict, a preset name (`"default"`,
            `"conservative"`, `"balanced"`, `"aggressive"`) or a YAML path.
            `None` uses the model's `hybrid_config` if it has one, else the
            `"default"` preset (the settings of `"conservative"`: it
            predicts only at confidence 0.9, which no bench task reached,
            so it trains as plain `fit()` does, with the divergence monitor,
            rollback and report). Validated here and again when training
            begins.
        verbose: `"auto"` prints the messages when `fit()`'s `verbose` is
            not 0; `0` never, `1` always.
        freeze: a `FreezeSchedule` (or its config dict): freezes and
            unfreezes the model's layer groups inside this `fit()`; it takes
            the place of the config's `freeze`. With the `"plain"` preset
            the schedule runs alone, with no prediction.

    Example:

    ```python
    callback = HybridPredictCallback("balanced")
    model.fit(x, y, epochs=10, callbacks=[callback])
    callback.save_report("report.json")
    ```
    """

    def __init__(self, config=None, verbose="auto", freeze=None):
        super().__init__()
        if verbose not in ("auto", 0, 1, True, False):
            raise ValueError(
                "`verbose` must be 'auto', 0 or 1. "
                f"Received: verbose={verbose!r}"
            )
        self.config = None if config is None else HybridConfig.resolve(config)
        self.freeze = None if freeze is None else FreezeSchedule.from_config(
            freeze
        )
        if self.config is not None:
            backends.get()  # an unsupported backend fails here
        self.verbose = verbose
        self.runner = None
        self._interventions = InterventionLog(self._print)
        self._epoch_logs = {}
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
        config = (self.config or model.hybrid_config
                  or HybridConfig.resolve(None))
        config.validate()  # fields may have changed since it was built
        backends.get()
        self.runner = HybridRunner(model, config)
        params = self.params or {}
        self.runner.steps_per_epoch = params.get("steps")
        if params.get("steps") and params.get("epochs"):
            self.runner.total_steps = int(params["steps"]) * int(
                params["epochs"]
            )
        self._attach_freezer(config, params)
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
        self.runner.after_call = self._after_call
        model._attach_runner(self.runner)
        self._interventions = InterventionLog(
            self._print, ignore=_unreported_kinds(config))
        # A resumed run's events and jumps were reported by the run that
        # made them.
        self._interventions.seen = len(self.runner.stats.events)
        self._interventions.seen_jumps = len(self.runner.stats.jumps)
        self._epoch_logs = {}

    def _attach_freezer(self, config, params):
        """Gives the runner the freeze schedule's `Freezer` (checked against
        the model and the run's length here, before training)."""
        schedule = self.freeze
        if schedule is None and config.freeze is not None:
            schedule = FreezeSchedule.from_config(config.freeze)
        layerwise = config.layerwise
        if schedule is None and not layerwise.enabled:
            return
        if schedule is not None and layerwise.enabled:
            raise ValueError(
                "A freeze schedule and layer-wise freezing decide the same "
                "thing: use one. Received: freeze=" f"{schedule!r} and "
                "layerwise.enabled=True"
            )
        model = self.model
        if not model.built:
            raise ValueError(
                "A freeze schedule groups the model's layers, so the model "
                "must be built before fit(): call it on a batch or "
                f"`model.build(input_shape)` first. Received: model "
                f"{model.name!r} (not built)"
            )
        runner = self.runner
        if schedule is not None:
            runner.freezer = Freezer(
                schedule, model, steps_per_epoch=runner.steps_per_epoch,
                total_steps=runner.total_steps,
            )
            return
        groups = LayerGroups(model, layerwise.groups,
                             num_groups=layerwise.num_groups)
        if len(groups) < 2:
            warnings.warn(
                "Layer-wise freezing needs at least two layer groups (the "
                "head always trains); this model has one "
                f"({groups.names()}), so it trains plainly."
            )
            return
        runner.freezer = Freezer(None, model, groups=groups)
        runner.settle_check = SettleCheck(
            layerwise, groups, model.trainable_variables,
            eval_loss=lambda batch: runner.functions["eval_loss"](batch),
            total_steps=runner.total_steps,
        )

    def _print(self, message):
        verbose = self.verbose
        fit_verbose = (self.params or {}).get("verbose", 1)
        if verbose == "auto":
            verbose = fit_verbose
        if not verbose:
            return
        if fit_verbose not in (1, "auto"):
            # No progress bar line to break out of.
            message = message.lstrip("\n")
        io_utils.print_msg(message)

    def _report_interventions(self):
        stats = getattr(self.runner, "stats", None)
        if stats is not None:
            self._interventions.update(stats.events, self.runner.epoch,
                                       jumps=stats.jumps)

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

    def on_epoch_end(self, epoch, logs=None):
        if self.runner is None:
            return
        if logs and logs.get("val_loss") is not None:
            self.runner.stats.final_val_loss = float(logs["val_loss"])
        self.runner.outer_guard.epoch_end(self.runner.controller.step,
                                          (logs or {}).get("val_loss"))
        self._report_interventions()
        self._interventions.end_epoch(epoch)
        if not self.runner.config.metrics.log_to_progbar:
            for key, value in hybrid_logs(self.runner).items():
                self._epoch_logs.setdefault(key, []).append(value)

    def _after_call(self):
        """Runs after every call of the train function (from the runner,
        not `on_train_batch_end`: a callback that overrides that hook makes
        Keras convert every step's logs to Python floats on the spot, a host
        sync per step that stops JAX and PyTorch from dispatching ahead)."""
        self._report_interventions()
        runner = self.runner
        if (
            self._next_save is None
            or runner.controller.step < self._next_save
            or not runner.safe_to_checkpoint
        ):
            return
        ck = runner.config.checkpoint
        step = runner.controller.step
        # `runner.model`, not `self.model`: inside the train function, JAX's
        # `self.model` would write the fit loop's previous (donated) state
        # into the variables; the checkpoint syncs the runner's newest.
        runner.model.save_checkpoint(
            checkpoint.step_path(ck.directory, step),
            include_predictor=ck.include_predictor,
        )
        checkpoint.rotate(ck.directory, ck.keep_last_n)
        self._next_save = (step // ck.save_interval + 1) * ck.save_interval

    def on_train_end(self, logs=None):
        if self.runner is None:
            return
        self.runner.settle()
        # Settling may write other weights than the average Keras has just
        # put in place (use_ema): put it back.
        weight_average.finalize(self.runner.model)
        self.runner.flush_iterations()
        self.runner.end_time = time.perf_counter()
        self._report_interventions()
        self.model._detach_runner()
        self._add_to_history()
        path = self.runner.config.metrics.report_path
        if path:
            self.save_report(path)

    def _add_to_history(self):
        """Gives this fit's `History` the per-epoch hybrid entries (kept off
        the progress bar: `History` is the only callback to receive them)."""
        if not self.runner.config.metrics.log_to_history:
            return
        history = getattr(self.model, "history", None)
        records = self._epoch_logs
        if not records or not isinstance(history, keras.callbacks.History):
            return
        epochs = len(next(iter(records.values())))
        if len(getattr(history, "epoch", ())) != epochs:
            return  # not this fit's History
        for key, values in records.items():
            history.history.setdefault(key, values)

    def report(self):
        """The JSON training report of the current or last `fit()`.

        Returns:
            A dict (see README, "The training report"), with the training
            loss against the step as `loss_curve` (`[step, batch loss]` pairs
            of the steps that trained, at most 1000; read from the device
            with the other per-step statistics, never once per step).

        Raises:
            RuntimeError: before any training.
        """
        if self.runner is None:
            raise RuntimeError(
                "No report yet: call `fit()` with this callback first."
            )
        report = build_report(self.runner)
        report["loss_curve"] = [list(p) for p in self.runner.loss_curve.points]
        return report

    def save_report(self, path):
        """Writes `report()` as JSON to `path`; returns the path."""
        return save_report(self.report(), path)


def _unreported_kinds(config):
    """Interventions that change nothing under `config`, so not printed:
    with a fixed PREDICT length (`min_predict_steps == max_predict_steps`,
    as in `outer`) a shorter prediction horizon is no shorter."""
    if config.min_predict_steps >= config.max_predict_steps:
        return ("shorter_predictions",)
    return ()


def hybrid_logs(runner):
    """The hybrid's entries for logs: `phase` (an int), `confidence`,
    `backward_reduction` and `predicted_loss` (NaN before a forecast), and
    `frozen_groups` under a freeze schedule."""
    predicted = runner.predicted_loss
    logs = {
        "phase": int(runner.controller.phase),
        "confidence": float(runner.confidence),
        "backward_reduction": float(runner.stats.backward_reduction()),
        "predicted_loss": (
            float("nan") if predicted is None else float(predicted)
        ),
    }
    if runner.freezer is not None:
        # The bottom groups frozen at the end of the epoch.
        logs["frozen_groups"] = int(runner.freezer.depth)
    return logs
