"""`HybridRunner`: runs one fit-loop call in the phase the controller chose.

The model's train function dispatches here while a `HybridPredictCallback` is
attached. Per call it runs exactly one of the compiled functions (FULL,
per-step PREDICT) or a Python-side action (store a check batch, skip a batch,
run the jump's forward line search), feeds the statistics to the state,
predictor and report, and advances the controller.
"""

import math
import time
import types

import keras
import numpy as np

from keras_hybrid import backends
from keras_hybrid import dynamics
from keras_hybrid import divergence
from keras_hybrid.backends import common
from keras_hybrid.dynamics.features import tail_mean
from keras_hybrid.control import PhaseControl
from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseController
from keras_hybrid.recovery import RecoveryMixin
from keras_hybrid.report import LossCurve
from keras_hybrid.report import RunStatistics
from keras_hybrid.state import TrainingState
from keras_hybrid.step_stats import StepStatistics
from keras_hybrid.step_stats import to_host
from keras_hybrid.trajectory import VariableSnapshots
from keras_hybrid.trajectory import WeightTrajectory
from keras_hybrid.trajectory import all_finite
from keras_hybrid.trajectory import finite_flag

# Fitting FULL phases in a row before a quiet stretch: the first gives a
# fresh drift, the second scores a shadow prediction against it and may
# start a PREDICT phase.
QUIET_WINDOW = 2

class HybridRunner(RecoveryMixin):
    """Drives hybrid training for one `fit()`.

    Args:
        model: the `HybridModel` being trained (compiled and built).
        config: a validated `HybridConfig`.
    """

    def __init__(self, model, config):
        self.model = model
        self.config = config
        self.backend = backends.get()
        self.variables = None
        self.trajectory = None
        self.deltas = None
        self.functions = None
        self.predictor = None
        self.controller = PhaseController(config)
        self.control = PhaseControl(config)
        self.state = TrainingState()
        self.monitor = divergence.DivergenceMonitor(
            config.divergence, full_steps=config.full_steps
        )
        self._good_vars = None
        self._good_values = None
        self._good_step = None
        self._phase_alarm = False
        self._action = None
        self.stats = RunStatistics()
        self.steps_per_execution = int(model.steps_per_execution or 1)
        self.confidence = 0.0
        self.predicted_loss = None
        self.last_logs = None
        self.step_stats = StepStatistics()
        self.loss_curve = LossCurve()
        self._final_loss = None
        self._last_read = None
        self.start_time = time.perf_counter()
        self.end_time = None
        self.elapsed_before = 0.0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.steps_per_epoch = None
        self.skip_batches = 0
        self._outcome = None
        self._restore_point = None
        self._check_batches = []
        self._rejected_batches = []
        # The check batches of an accepted jump, trained on at the end of
        # its PREDICT phase (`HybridConfig.train_check_batches`).
        self._accepted_batches = []
        self._abort = None
        self._loss_limit = None
        self._phase_losses = []
        self._phase_start_features = None
        self._awaiting_correct_loss = False
        self._pending_iterations = 0
        self.pending_random_state = None
        self.total_steps = None
        self._shadow = None
        self._shadow_contiguous = False
        self._predict_length = 0
        # Quiet phases (see `HybridConfig.max_quiet_phases`): quiet FULL
        # phases still to run, windows in a row that ended without an
        # accepted prediction, and fitting phases in the current window.
        self._quiet_left = 0
        self._misses = 0
        self._window = 0
        # Called after every call of the fit loop (the callback's periodic
        # checkpoints and messages); `None`: nothing.
        self.after_call = None
        # A `freezing.Freezer` carrying out a freeze schedule or the
        # layer-wise check's decisions (`settle_check`, a
        # `layerwise.SettleCheck`); `None`: none.
        self.freezer = None
        self.settle_check = None
        if model.trainable_variables:
            self._setup()

    def _setup(self):
        """Creates what depends on the model's variables (once built)."""
        model = self.model
        self.variables = list(model.trainable_variables)
        # The compiled functions and the variables they work on are kept on
        # the model between `fit()` calls (traced once, not per call) while
        # the model's plain train function and variables stay the same.
        key = (
            id(getattr(model, "_hybrid_plain_train", None)),
            id(model.optimizer),
            tuple(id(v) for v in self.variables),
            tuple(id(v) for v in model.non_trainable_variables),
        )
        cached = getattr(model, "_hybrid_compiled", None)
        if cached is not None and cached.key == key:
            self.trajectory = cached.trajectory
            self.trajectory.reset()
            self.deltas = cached.deltas
            self._predict_start = cached.predict_start
            self._good_vars = cached.good_vars
        else:
            self._build_functions()
            # A plain object: Keras does not track what it holds as the
            # model's own variables. `functions`: the compiled functions
            # of each set of frozen weights (see `use_live_functions`).
            model._hybrid_compiled = types.SimpleNamespace(
                key=key, trajectory=self.trajectory, deltas=self.deltas,
                predict_start=self._predict_start,
                functions={None: self.functions}, good_vars=None,
            )
        self.use_live_functions()
        self.predictor = dynamics.get(self.config, self.trajectory,
                                      optimizer=model.optimizer)
        # The weights training starts from are the first rollback target: a
        # non-finite first step (refused in the compiled step) can be
        # recovered from like any later one.
        self._save_good_point()
        self.model._hybrid_compiled.good_vars = self._good_vars
        if self.controller.phase == Phase.FULL:
            self._start_full()

    def use_live_functions(self):
        """Runs the compiled functions of the weights trainable now
        (`model._hybrid_live`, set by a freeze): each set of frozen weights
        has its own, traced once and kept with the model."""
        model = self.model
        live = getattr(model, "_hybrid_live", None)
        cache = model._hybrid_compiled.functions
        if live not in cache:
            cache[live] = self.backend.make_phase_functions(
                model, self.trajectory.accumulators, self.deltas
            )
        self.functions = cache[live]

    def _follow_schedule(self):
        """Switches to the frozen depth the freeze schedule gives this
        step, if it changed: a running prediction ends first (a freeze is
        a change the prediction did not foresee)."""
        freezer = self.freezer
        depth = freezer.depth_at(self.controller.step)
        if depth != freezer.depth:
            self.switch_depth(depth)

    def switch_depth(self, depth):
        """Freezes the bottom `depth` layer groups (and no other) from the
        next step on."""
        freezer = self.freezer
        self.backend.sync(self.model)
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Built for every trainable weight, frozen or not (a step that
            # trains a subset first would build it for that subset only).
            with self.backend.variable_scope(self.model):
                optimizer.build(self.model.trainable_variables)
        if self.controller.phase == Phase.PREDICT:
            self.force_full(0)
        freezer.switch(self.controller.step, depth, self.stats.backward)
        self.use_live_functions()

    def _build_functions(self):
        model = self.model
        with self.backend.variable_scope(model):
            self.trajectory = WeightTrajectory(self.variables)
            # What a rejected prediction restores: the weights and the
            # non-trainable state (e.g. moving statistics) of its start.
            self._predict_start = VariableSnapshots(
                self.variables + list(model.non_trainable_variables)
            )
            self.deltas = [
                keras.Variable(
                    keras.ops.zeros(v.shape, dtype=v.dtype),
                    trainable=False,
                    name=f"hybrid_delta_{i}",
                )
                for i, v in enumerate(self.variables)
            ]
        self.functions = self.backend.make_phase_functions(
            model, self.trajectory.accumulators, self.deltas
        )

    # ================================================================ step
    def run(self, iterator):
        """Runs one call of the fit loop (`steps_per_execution` batches),
        then `after_call`."""
        logs = self._run(iterator)
        if self.after_call is not None:
            self.after_call()
        return logs

    def _run(self, iterator):
        if self.skip_batches > 0:
            return self._fast_forward(iterator)
        if self.pending_random_state is not None:
            backends.set_global_random_state(self.pending_random_state)
            self.pending_random_state = None
        self.batch_in_epoch += self.steps_per_execution
        start = time.perf_counter()
        phase = self.controller.phase
        if self.functions is None:
            if not self.model.trainable_variables:
                # A subclassed model builds on its first step: run it plainly.
                return self._decorate(self._bootstrap(iterator, start), phase)
            self.backend.sync(self.model)
            self._setup()
        if self.freezer is not None and self.freezer.steps:
            self._follow_schedule()
            phase = self.controller.phase
        if phase == Phase.PREDICT:
            logs, kind = self._predict_call(iterator)
        else:
            logs, kind = self._full_call(
                iterator, collect=phase == Phase.FULL and not self._quiet_left
            )
        self.stats.add_time(kind, time.perf_counter() - start)
        self.controller.advance(self.steps_per_execution)
        if self.settle_check is not None:
            self._settle_groups()
        self._after_step()
        return self._decorate(logs, phase)

    def _settle_groups(self):
        """Lets the layer-wise check conclude; freezes the group it found
        settled."""
        check = self.settle_check
        if check.needs_weights(self.controller.step):
            self.backend.sync(self.model)
        depth = check.after_step(self.controller.step)
        if depth is not None:
            self.switch_depth(depth)

    def _after_step(self):
        """Reads the device-side statistics when due (every
        `divergence.check_interval_steps` steps and at every phase end),
        then carries out what they call for."""
        c = self.controller
        if self.step_stats:
            if c.phase_done:
                self.read_statistics()  # touches no variable
            elif self._read_due():
                # The newest call's values stay on the device until the next
                # read: reading them would make the host wait for the step
                # just dispatched (JAX and accelerators run ahead).
                self.read_statistics(keep_newest=self.steps_per_execution)
        if not (c.phase_done or self._action or self._abort):
            return
        self.backend.sync(self.model)
        if self._action is not None:
            self._apply_action()
        elif self._abort is not None:
            self._end_predict(success=False, reason=self._abort)
        elif c.phase_done and self.functions is not None:
            # (Without trainable weights there is nothing to predict: every
            # step stays a plain one.)
            self._end_phase()

    def settle(self, keep_pending=False):
        """Reads any pending statistics now and carries out what they call
        for (at the end of `fit()`; before a checkpoint).

        Args:
            keep_pending: leave the statistics pending (a checkpoint saves
                them as they are, so that a resumed run reads them at the
                same step as an uninterrupted one).
        """
        self.backend.sync(self.model)
        if self.step_stats and not keep_pending:
            self.read_statistics()
        if self._action is not None:
            self._apply_action()
        elif self._abort is not None:
            self._end_predict(success=False, reason=self._abort)

    def _read_due(self):
        """Whether the steps before the newest call crossed a multiple of
        the read interval (the reads fall on the same steps however the run
        was resumed). The read is one call late: it takes the values up to
        that multiple while the newest call may still be running."""
        interval = self.config.divergence.check_interval_steps
        upto = self.controller.step - self.steps_per_execution
        if self._last_read is None:
            self._last_read = upto - self.steps_per_execution
        return upto // interval > self._last_read // interval

    def read_statistics(self, keep_newest=0):
        """Brings the pending per-step statistics to the host (one
        transfer) and feeds them, in step order, to the monitor, the
        training state and the predictor.

        Args:
            keep_newest: the number of newest steps whose values stay
                pending (read at the next read).
        """
        self._last_read = self.controller.step - keep_newest
        start = time.perf_counter()
        bad_step = False
        for record in self.step_stats.read(keep_newest):
            if record.backward:
                bad_step = self._consume_full(record) or bad_step
            else:
                self._consume_predict(record)
            if bad_step:
                # Later steps are undone by the rollback or abort.
                break
        if self._good_values is None and not bad_step and self.functions:
            self.backend.sync(self.model)
            self._save_good_point()
        self.stats.add_overhead("encode", time.perf_counter() - start)

    def _consume_full(self, record):
        """One FULL step's statistics; returns whether it calls for a
        rollback or an abort."""
        self._monitor(record.loss, record.grad_norm)
        bad_step = self._action is not None and isinstance(
            self._action[1],
            (divergence.RollbackAndRetry, divergence.Abort),
        )
        if bad_step:
            return True
        if not (math.isfinite(record.loss) and (
            record.grad_norm is None or math.isfinite(record.grad_norm)
        )):
            return False  # a refused step: nothing to learn from
        self.state.record(record.step, record.loss, record.grad_norm)
        self.loss_curve.add(record.step, record.loss)
        if record.kind == "full":
            self._phase_losses.append((record.step, record.loss))
        if self._awaiting_correct_loss:
            self._awaiting_correct_loss = False
            loss = record.loss
            self.predictor.record_outcome(True, self.predicted_loss, loss)
            self.stats.loss_prediction(self.predicted_loss, loss)
            self.control.outcome(
                True, self._predict_length,
                loss / self.predicted_loss if self.predicted_loss else None,
            )
        return False

    def _consume_predict(self, record):
        """One forward-only PREDICT step's statistics."""
        loss = record.loss
        self.state.record(record.step, loss, backward=False)
        if self.controller.phase != Phase.PREDICT or self._abort:
            return
        if not math.isfinite(loss):
            self._abort = "non_finite_loss"
        elif self._loss_limit is not None and loss > self._loss_limit:
            self._abort = "loss_sigma"

    def _fast_forward(self, iterator):
        """Consumes a batch that the checkpointed run had already trained
        on (resuming in the middle of an epoch)."""
        for _ in range(self.steps_per_execution):
            batch = self.backend.next_batch(iterator)
        if not self._metrics_built():
            # In a fresh process nothing has traced a step yet: build the
            # compiled metrics (and loss) from a batch, as `fit()` does
            # under a distribution strategy.
            self.model._symbolic_build(data_batch=batch)
        self.skip_batches -= self.steps_per_execution
        self.batch_in_epoch += self.steps_per_execution
        return self._decorate(self._cached_logs(), self.controller.phase)

    @property
    def safe_to_checkpoint(self):
        """Whether the state can be saved exactly now (not inside a jump's
        forward checks, not while fast-forwarding; statistics still on the
        device are saved as they are)."""
        return not self.holds_check_batches and self.skip_batches <= 0

    @property
    def holds_check_batches(self):
        """Whether a jump's check batches are held in memory (during its
        forward checks, or accepted and waiting to be trained on): the
        state cannot be checkpointed then."""
        return bool(self._check_batches or self._accepted_batches)

    def position(self):
        """`(epoch, batch_in_epoch)` of the next batch to train on."""
        if self.steps_per_epoch and self.batch_in_epoch >= self.steps_per_epoch:
            return self.epoch + 1, 0
        return self.epoch, self.batch_in_epoch

    def _bootstrap(self, iterator, start):
        logs, loss, grad_norm = common.split_stats(
            self.model._hybrid_plain_train(iterator)
        )
        n = self.steps_per_execution
        self.step_stats.add(self.controller.step + n, loss, grad_norm,
                            kind="warmup")
        self.stats.count(self.controller.phase, backward=n, forward=n,
                         steps=n)
        self.stats.add_time("full", time.perf_counter() - start)
        if self.model.trainable_variables:
            self.backend.sync(self.model)
            self._setup()
        self.controller.advance(n)
        self._after_step()
        self.last_logs = logs
        return logs

    def flush_iterations(self):
        """Adds the batches consumed without an optimizer update to
        `optimizer.iterations` (batched: one op instead of one per step)."""
        if self._pending_iterations:
            self.backend.sync(self.model)
            self.model.optimizer.iterations.assign_add(self._pending_iterations)
            self._pending_iterations = 0

    def _full_call(self, iterator, collect, kind=None):
        self.flush_iterations()
        # Every backward step runs the one collecting function (one trace or
        # compilation instead of two); outside a FULL phase the sums it adds
        # to are discarded at the next phase start.
        check = self.settle_check
        measured = (
            check is not None and self.steps_per_execution == 1
            and check.wants_batch(self.controller.step)
        )
        if measured:
            # A layer-wise check batch: measured before it is trained on.
            batch = self.backend.next_batch(iterator)
            self.backend.sync(self.model)
            check.measure(batch)
            out = self.functions["train_batch"](batch)
        else:
            out = self.functions["full"](iterator)
        logs, loss, grad_norm = common.split_stats(out)
        if not collect:
            self.trajectory.discard()
        n = self.steps_per_execution
        self.stats.count(self.controller.phase, backward=n,
                         forward=n + (2 if measured else 0), steps=n)
        if collect:
            kind = "full"
        self.step_stats.add(self.controller.step + n, loss, grad_norm,
                            kind=kind or "train")
        if collect:
            self.trajectory.added(n)
            half = self.controller.phase_length // 2
            if (
                self.trajectory.first_mean is None
                and self.controller.phase_step + n >= half
            ):
                self.backend.sync(self.model)
                self.trajectory.close_half()
        self.last_logs = logs
        return logs, kind or "full"

    def _predict_call(self, iterator):
        c = self.controller
        k = c.phase_step
        interval = self.control.correction_interval()
        checking = self.config.predict_mode == "jump" and k < (
            self.config.validation_samples
        )
        if (not checking and interval and k > 0 and k % interval == 0):
            self.stats.corrections += 1
            return self._full_call(iterator, collect=False, kind="correction")
        if self.config.predict_mode == "per_step":
            return self._per_step_call(iterator), "predict"
        n = self.steps_per_execution
        for _ in range(n):
            batch = self.backend.next_batch(iterator)
            if checking:
                self._check_batches.append(batch)
        self._pending_iterations += n
        self.stats.count(Phase.PREDICT, steps=n)
        if checking:
            if len(self._check_batches) >= self.config.validation_samples:
                self._line_search()
            return self._cached_logs(), "check"
        return self._cached_logs(), "skip"

    def _per_step_call(self, iterator):
        logs, loss, _ = common.split_stats(self.functions["predict"](iterator))
        n = self.steps_per_execution
        self.stats.count(Phase.PREDICT, forward=n, steps=n)
        self.step_stats.add(self.controller.step + n, loss, kind="predict")
        self.last_logs = logs
        return logs

    def _metrics_built(self):
        self.backend.sync(self.model)
        try:
            self.model.get_metrics_result()
        except ValueError:
            return False
        return True

    def _cached_logs(self):
        if self.last_logs is None:
            self.backend.sync(self.model)
            self.last_logs = dict(self.model.get_metrics_result())
        return self.last_logs

    # ========================================================== phases
    def _start_full(self):
        self._phase_losses = []
        self._phase_start_features = None
        if self._quiet_left:
            return  # a quiet phase fits nothing (its sums are discarded)
        if self.trajectory is not None:
            self.trajectory.start_phase()
        self._phase_start_features = self.state.features()

    def _end_phase(self):
        c = self.controller
        if c.phase in (Phase.WARMUP, Phase.CORRECT):
            c.transition(Phase.FULL, outcome="completed")
            self._start_full()
        elif c.phase == Phase.FULL:
            self._end_full()
        elif c.phase == Phase.PREDICT:
            self._end_predict(success=True, reason="completed")

    def _end_full(self):
        c = self.controller
        start = time.perf_counter()
        if not self._phase_alarm:
            # Inside a run of quiet phases the rollback point moves only at
            # its end: a snapshot of every variable and optimizer slot
            # costs about as much as a step on a small model.
            if self._quiet_left <= 1:
                self._save_good_point()
            self.monitor.healthy()
        self._phase_alarm = False
        if self._quiet_left:
            # A quiet phase only trained: nothing to fit or check.
            self._quiet_left -= 1
            self.stats.quiet_phases += 1
            self.stats.add_overhead("update", time.perf_counter() - start)
            c.transition(Phase.FULL, outcome="completed")
            self._start_full()
            return
        have_drift = self.trajectory.finish_phase(self._pending_shadow())
        self.predictor.update_from_observation(
            self._phase_start_features, self.state, self._phase_losses
        )
        self.confidence = self.predictor.prediction_confidence(self.state)
        self.stats.confidences.append(self.confidence)
        cos = self.trajectory.drift_consistency()
        if cos is not None:
            self.stats.weight_cosines.append(cos)
        if have_drift:
            self._check_shadow()
        self.stats.add_overhead("update", time.perf_counter() - start)
        landing = self._landing_length()
        ready = (
            have_drift
            and self.config.enable_prediction
            and self.predictor.ready()
        )
        if ready and (
            landing is not None
            or c.can_predict(self.confidence, self.control.threshold)
        ):
            if self._start_predict(landing):
                return
        self._missed()
        c.transition(Phase.FULL, outcome="completed")
        self._start_full()

    def _missed(self):
        """A fitting FULL phase ended without a prediction: at the end of a
        window of `QUIET_WINDOW` such phases, the next `1, 2, 4, ...` FULL
        phases (at most `max_quiet_phases`) are quiet. What the predictor
        cost is then paid ever more rarely while prediction does not pay."""
        self._window += 1
        limit = self.config.max_quiet_phases
        if not limit or self._window < QUIET_WINDOW:
            return
        self._window = 0
        self._quiet_left = min(limit, 2 ** min(self._misses, 30))
        self._misses += 1
        # The next fitting phase does not continue this one.
        self.interrupt()
        self.trajectory.forget_drift()

    def _landing_length(self):
        """The rest of the run, if it should end with a PREDICT phase."""
        cfg = self.config
        if not cfg.finish_with_prediction or not self.total_steps:
            return None
        remaining = self.total_steps - self.controller.step
        if self.controller.forced_full_steps > 0 or not (
            cfg.min_predict_steps <= remaining <= cfg.max_predict_steps
        ):
            return None
        return int(remaining)

    def _check_shadow(self):
        """Scores the prediction made at the end of the previous FULL phase
        against what this FULL phase really did, then makes the next one.

        The predictions are never applied: they measure the predictor on
        real outcomes (weight-change cosine and error, loss error,
        calibration) and teach its calibrator and corrector.
        """
        tr = self.trajectory
        pending, self._shadow = self._shadow, None
        # Scored inside `finish_phase` (see `_pending_shadow`).
        cos, error = tr.shadow_agreement
        if pending is not None and cos is not None:
            actual = tail_mean([l for _, l in self._phase_losses])
            success = error < 1.0
            self.stats.shadow_check(
                cos, error, pending["loss"], actual, pending["confidence"],
                success,
            )
            self.predictor.record_shadow(pending["confidence"], success, error)
            self.control.residual(error)
        self._shadow_contiguous = True
        if not self.predictor.ready():
            return
        self.predictor.begin_shadow()
        outcome = self.predictor.predict_phase_outcome(
            self.state, self.config.full_steps
        )
        per_step = list(outcome.per_step_delta)
        if len(per_step) == len(tr.drift) and all(
            a is b for a, b in zip(per_step, tr.drift)
        ):
            finite = tr.drift_finite  # checked inside finish_phase
        else:
            finite = all_finite(per_step)
        if not finite:
            return
        self._shadow = {
            "per_step": list(outcome.per_step_delta),
            "mean": list(tr.second_mean),
            "lag": tr.lag,
            "loss": outcome.predicted_loss,
            "confidence": self.confidence,
        }

    def _pending_shadow(self):
        """The shadow prediction to score at this FULL phase's end, as
        `WeightTrajectory.finish_phase` takes it (`None` if there is none or
        the phase does not continue the one it was made at)."""
        pending = self._shadow
        if pending is None or not self._shadow_contiguous:
            return None
        new_lag = (self.trajectory.count - 1) / 2.0
        distance = len(self._phase_losses) + pending["lag"] - new_lag
        if distance <= 0:
            return None
        return pending["per_step"], pending["mean"], distance

    def interrupt(self):
        """The weights change outside a FULL phase (PREDICT, rollback): the
        next FULL phase does not continue the last one."""
        self._shadow = None
        self._shadow_contiguous = False
        self.predictor.note_interruption()

    def _start_predict(self, length=None):
        """Prepares a PREDICT phase (of `length` steps, else chosen by the
        phase control); returns False if the prediction is unusable
        (non-finite), in which case FULL continues."""
        c = self.controller
        start = time.perf_counter()
        if length is None:
            length = self.control.length(
                c, self.confidence,
                self.control.context(self.confidence, self._loss_slope()),
            )
        self._predict_length = int(length)
        outcome = self.predictor.predict_phase_outcome(self.state, length)
        if self.freezer is not None:
            outcome = self.freezer.hold_frozen(outcome, self.variables)
        self.stats.add_overhead("predict", time.perf_counter() - start)
        if not (all_finite(outcome.per_step_delta) and all_finite(outcome.start)):
            self.stats.event(
                c.step, "non_finite_prediction", "rejected_before_apply"
            )
            self.predictor.record_outcome(False)
            c.record_prediction(False)
            self.control.outcome(False, length)
            return False
        # Only now do the weights leave the FULL trajectory.
        self.interrupt()
        c.transition(
            Phase.PREDICT, length, outcome="completed",
            confidence=self.confidence,
        )
        self._outcome = outcome
        self.predicted_loss = outcome.predicted_loss
        self._restore_point = self._predict_start.take()
        self._check_batches = []
        self.stats.predictions_attempted += 1
        if self.config.predict_mode == "per_step":
            self.trajectory.snapshots.restore(outcome.start)
            for delta, value in zip(self.deltas, outcome.per_step_delta):
                delta.assign(value)
            moments = self.state.full_loss
            if moments.mean is not None:
                self._loss_limit = moments.mean + (
                    self.config.divergence_threshold * max(
                        moments.std, 1e-3 * abs(moments.mean)
                    )
                )
        return True

    def _line_search(self):
        """Forward checks of the jump at each scale, in the configured order,
        stopping as soon as the check loss stops improving; applies the best
        one or restores the weights exactly. One host transfer per
        candidate (its losses and whether it is finite)."""
        start = time.perf_counter()
        self.backend.sync(self.model)
        batches = self._check_batches
        if not self.config.check_jumps:
            self._unchecked_jump(batches)
            self.stats.add_overhead("predict", time.perf_counter() - start)
            return
        evaluate = self.functions["eval_loss"]

        def mean_loss(finite=None):
            values = [evaluate(b) for b in batches]
            if finite is not None:
                values.append(finite)
            host = to_host(values)
            self.stats.count(Phase.PREDICT, forward=len(batches))
            ok = finite is None or bool(host[-1])
            return float(np.mean(host[:len(batches)])), ok

        base, _ = mean_loss()
        reference = base
        if getattr(self._outcome, "judge_from_start", False):
            # A jump must beat its own (denoised) starting point too, so
            # that denoising alone never counts as progress.
            self.trajectory.snapshots.restore(self._outcome.start)
            reference = min(base, mean_loss()[0])
        best_loss, best = math.inf, None
        tried = []
        previous = None
        for scale in self.config.predictor.jump_scales:
            candidate = self._outcome.targets(scale)
            self.trajectory.snapshots.restore(candidate)
            loss, finite = mean_loss(finite_flag(candidate))
            if not finite:
                self.stats.event(
                    self.controller.step, "non_finite_prediction",
                    "rejected_before_apply",
                )
                continue
            tried.append((scale, loss))
            if math.isfinite(loss) and loss < best_loss:
                best_loss, best = loss, (scale, candidate)
            if previous is not None and not loss < previous:
                break  # the losses stopped improving
            previous = loss
        tolerance = self.config.loss_tolerance
        limit = min(
            base * (1.0 + tolerance
                    - getattr(self._outcome, "required_gain", 0.0)),
            reference * (1.0 + tolerance),
        )
        self.stats.add_overhead("predict", time.perf_counter() - start)
        accepted = best is not None and best_loss < limit
        # The checks leave no trace in the non-trainable state (a layer may
        # update variables in `call()` even in inference mode).
        self._predict_start.restore(self._restore_point)
        self._conclude_jump(batches, base, tried, best if accepted else None)

    def _unchecked_jump(self, batches):
        """`check_jumps=False`: applies the jump at its first scale with no
        forward check (one host transfer: whether it is finite)."""
        scale = self.config.predictor.jump_scales[0]
        candidate = self._outcome.targets(scale)
        finite = bool(to_host([finite_flag(candidate)])[0])
        if not finite:
            self.stats.event(self.controller.step, "non_finite_prediction",
                             "rejected_before_apply")
        self._conclude_jump(batches, None, [],
                            (scale, candidate) if finite else None)

    def _conclude_jump(self, batches, base_loss, tried, accepted):
        """Records a jump in `stats.jumps`, then applies it or rejects it.

        Args:
            batches: its check batches (trained on after an accepted jump
                with `train_check_batches`, after a rejected one always).
            base_loss: the checked loss of the weights it replaces (`None`
                unchecked).
            tried: `(scale, checked loss)` of the candidates checked.
            accepted: `(scale, weights)` of the jump to apply; `None`
                rejects it.
        """
        self._check_batches = []
        self.stats.jumps.append(
            {"step": self.controller.step, "base_loss": base_loss,
             "tried": tried,
             "accepted_scale": accepted[0] if accepted else None}
        )
        if accepted:
            self.trajectory.snapshots.restore(accepted[1])
            if self.config.train_check_batches:
                self._accepted_batches = batches
            return
        self._rejected_batches = batches
        self._abort = "forward_check"

    def _end_predict(self, success, reason):
        c = self.controller
        # A rejected jump costs time, not data: the batches it consumed for
        # its checks are trained on once the weights are restored. With
        # `train_check_batches`, an accepted jump's are trained on too,
        # from the jumped weights.
        if success:
            retrain = self._accepted_batches
        else:
            retrain = self._rejected_batches or self._check_batches
        self._pending_iterations -= len(retrain)
        self._rejected_batches = []
        self._accepted_batches = []
        self._check_batches = []
        self.flush_iterations()
        self._abort = None
        self._loss_limit = None
        if success:
            self._misses = self._window = 0  # prediction pays: no back-off
            self.stats.predictions_accepted += 1
            c.record_prediction(True)
            self._awaiting_correct_loss = self.predicted_loss is not None
            c.transition(Phase.CORRECT, outcome="completed")
            if retrain:
                self._train_batches(retrain)
        else:
            self._predict_start.restore(self._restore_point)
            self.stats.predictions_rejected += 1
            # A rejection closes the window at the next phase end that
            # does not predict.
            self._window = max(self._window, QUIET_WINDOW - 1)
            self.stats.event(c.step, reason, "weights_restored")
            self.predictor.record_outcome(False)
            c.record_prediction(False)
            self.control.outcome(False, self._predict_length)
            c.transition(Phase.FULL, outcome=f"rejected:{reason}")
            # Retrained before the phase starts: the sums the step may add
            # to are reset by the start.
            self._train_batches(retrain)
            self._start_full()
        self._restore_point = None
        self._outcome = None

    def _train_batches(self, batches):
        """Training steps on stored batches (no trajectory collection)."""
        train = self.functions["train_batch"]
        for batch in batches:
            _, loss, grad_norm = common.split_stats(train(batch))
            self.stats.count(self.controller.phase, backward=1, forward=1)
            self.step_stats.add(self.controller.step, loss, grad_norm,
                                kind="retrain")
        if batches:
            self.trajectory.discard()
        self.backend.sync(self.model)

    def _loss_slope(self):
        """Log-loss change per 100 steps over the recent FULL steps."""
        trend = self.state.log_loss_trend(self.config.loss_trend_steps)
        return 0.0 if trend is None else float(100.0 * trend[0])

    # ============================================================ logs
    @property
    def final_loss(self):
        """The running loss of the last step's logs (read on demand: reading
        it every step would sync the host with the device)."""
        value = self._final_loss
        if value is not None and not isinstance(value, float):
            value = float(keras.ops.convert_to_numpy(value))
            self._final_loss = value
        return value

    @final_loss.setter
    def final_loss(self, value):
        self._final_loss = value

    def _decorate(self, logs, phase):
        if "loss" in logs:
            self._final_loss = logs["loss"]
        if not self.config.metrics.log_to_progbar:
            return logs
        logs = dict(logs)
        logs["phase"] = int(phase)
        logs["confidence"] = float(self.confidence)
        logs["backward_reduction"] = self.stats.backward_reduction()
        logs["predicted_loss"] = (
            float(self.predicted_loss)
            if self.predicted_loss is not None
            else float("nan")
        )
        return logs

    @property
    def wall_time(self):
        """Seconds from the start of `fit()` to its end (or to now)."""
        end = self.end_time or time.perf_counter()
        return self.elapsed_before + end - self.start_time

    def force_full(self, steps):
        """Ends a running prediction (keeping its verified weights) and runs
        FULL phases for at least `steps` steps."""
        c = self.controller
        self.backend.sync(self.model)
        c.force_full(steps)
        if c.phase == Phase.PREDICT:
            if self.config.predict_mode == "jump" and self._check_batches:
                # The jump was not verified yet: undo it like a rejection.
                self._end_predict(success=False, reason="forced_full")
            else:
                self._end_predict(success=True, reason="forced_full")
