"""`HybridRunner`: runs one fit-loop call in the phase the controller chose.

The model's train function dispatches here while a `HybridPredictCallback` is
attached. Per call it runs exactly one of the compiled functions (FULL,
per-step PREDICT) or a Python-side action (keep a check batch, skip a
batch), feeds the statistics to the state, predictor and report, and
advances the controller. What each concept keeps lives in its own object,
saved and restored by it (`runner_state`): the phase policy
(`control`: `PhaseControl`, `QuietBackoff`), the jump's checks
(`jump_check.JumpCheck`), shadow scoring (`shadow.ShadowScoring`), the
rollback point and queued action (`recovery.Recovery`), the compiled
functions (`compiled.CompiledPhases`).
"""

import math
import time

import keras

from keras_hybrid import backends
from keras_hybrid import divergence
from keras_hybrid import dynamics
from keras_hybrid.backends import common
from keras_hybrid.compiled import CompiledPhases
from keras_hybrid.control import PhaseControl
from keras_hybrid.control import QuietBackoff
from keras_hybrid.jump_check import JumpCheck
from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseController
from keras_hybrid.recovery import Recovery
from keras_hybrid.report import LossCurve
from keras_hybrid.report import RunStatistics
from keras_hybrid.serialization import object_state
from keras_hybrid.serialization import set_object_state
from keras_hybrid.shadow import ShadowScoring
from keras_hybrid.state import TrainingState
from keras_hybrid.step_stats import StepStatistics
from keras_hybrid.trajectory import all_finite


class HybridRunner:
    """Drives hybrid training for one `fit()`.

    Args:
        model: the `HybridModel` being trained (compiled and built).
        config: a validated `HybridConfig`.
    """

    def __init__(self, model, config):
        self.model = model
        self.config = config
        self.backend = backends.get()
        # Set up once the model is built (`_setup`).
        self.variables = self.trajectory = self.deltas = None
        self.functions = self.predictor = None
        self.controller = PhaseController(config)
        self.control = PhaseControl(config)
        self.quiet = QuietBackoff(config.max_quiet_phases)
        self.state = TrainingState()
        self.monitor = divergence.DivergenceMonitor(
            config.divergence, full_steps=config.full_steps
        )
        self.stats = RunStatistics()
        self.recovery = Recovery(model, self.monitor)
        self.jump_check = JumpCheck(config, self.stats, sync=self._sync)
        self.shadow = ShadowScoring(self.stats, self.control)
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
        self._phase_losses = []
        self._phase_start_features = None
        self._awaiting_correct_loss = False
        self._pending_iterations = 0
        self.pending_random_state = None
        self.total_steps = None
        self._predict_length = 0
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

    # The runner's own fields in its checkpoint section (its objects save
    # theirs: see `runner_state`).
    _STATE = ("confidence", "predicted_loss", "final_loss", "_phase_losses",
              "_phase_start_features", "_awaiting_correct_loss",
              "_pending_iterations", "_predict_length", "_last_read")

    def get_state(self):
        """The runner's own fields, JSON-safe."""
        return object_state(self, self._STATE)

    def set_state(self, state):
        set_object_state(self, state, self._STATE)

    def _sync(self):
        self.backend.sync(self.model)

    def _setup(self):
        """Creates what depends on the model's variables (once built)."""
        compiled = CompiledPhases.of(self.model, self.backend)
        self.variables = compiled.variables
        self.trajectory = compiled.trajectory
        self.deltas = compiled.deltas
        self.jump_check.attach(self.trajectory.snapshots,
                               compiled.predict_start)
        self.recovery.snapshots = compiled.good_vars
        self.use_live_functions()
        self.predictor = dynamics.get(self.config, self.trajectory,
                                      optimizer=self.model.optimizer)
        # The weights training starts from are the first rollback target: a
        # non-finite first step (refused in the compiled step) can be
        # recovered from like any later one.
        self.recovery.save_good_point(self.controller.step)
        compiled.good_vars = self.recovery.snapshots
        if self.controller.phase == Phase.FULL:
            self._start_full()

    def use_live_functions(self):
        """Runs the compiled functions of the weights trainable now (see
        `CompiledPhases.live_functions`)."""
        self.functions = self.model._hybrid_compiled.live_functions(
            self.model, self.backend
        )

    # ========================================================= freezing
    def _follow_schedule(self):
        """Switches to the frozen depth the freeze schedule gives this
        step, if it changed: a running prediction ends first (a freeze is
        a change the prediction did not foresee)."""
        depth = self.freezer.depth_at(self.controller.step)
        if depth != self.freezer.depth:
            self.switch_depth(depth)

    def switch_depth(self, depth):
        """Freezes the bottom `depth` layer groups (and no other) from the
        next step on."""
        self._sync()
        optimizer = self.model.optimizer
        if not optimizer.built:
            # Built for every trainable weight, frozen or not (a step that
            # trains a subset first would build it for that subset only).
            with self.backend.variable_scope(self.model):
                optimizer.build(self.model.trainable_variables)
        if self.controller.phase == Phase.PREDICT:
            self.force_full(0)
        self.freezer.switch(self.controller.step, depth, self.stats.backward)
        self.use_live_functions()

    def _settle_groups(self):
        """Lets the layer-wise check conclude; freezes the group it found
        settled."""
        check = self.settle_check
        if check.needs_weights(self.controller.step):
            self._sync()
        depth = check.after_step(self.controller.step)
        if depth is not None:
            self.switch_depth(depth)

    # ============================================================= step
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
            self._sync()
            self._setup()
        if self.freezer is not None and self.freezer.steps:
            self._follow_schedule()
            phase = self.controller.phase
        if phase == Phase.PREDICT:
            logs, kind = self._predict_call(iterator)
        else:
            logs, kind = self._full_call(
                iterator, collect=phase == Phase.FULL and not self.quiet.quiet
            )
        self.stats.add_time(kind, time.perf_counter() - start)
        self.controller.advance(self.steps_per_execution)
        if self.settle_check is not None:
            self._settle_groups()
        self._after_step()
        return self._decorate(logs, phase)

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
        if not (c.phase_done or self.recovery.action or self.jump_check.abort):
            return
        self._sync()
        if not self._carry_out() and c.phase_done and (
            self.functions is not None
        ):
            # (Without trainable weights there is nothing to predict: every
            # step stays a plain one.)
            self._end_phase()

    def _carry_out(self):
        """Carries out a queued recovery action, else ends a PREDICT phase
        whose checks failed; returns whether there was either."""
        if self.recovery.action is not None:
            self._apply_action()
        elif self.jump_check.abort is not None:
            self._end_predict(success=False, reason=self.jump_check.abort)
        else:
            return False
        return True

    def settle(self, keep_pending=False):
        """Reads any pending statistics now and carries out what they call
        for (at the end of `fit()`; before a checkpoint).

        Args:
            keep_pending: leave the statistics pending (a checkpoint saves
                them as they are, so that a resumed run reads them at the
                same step as an uninterrupted one).
        """
        self._sync()
        if self.step_stats and not keep_pending:
            self.read_statistics()
        self._carry_out()

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
                self.state.record(record.step, record.loss, backward=False)
                if self.controller.phase == Phase.PREDICT:
                    self.jump_check.observe(record.loss)
            if bad_step:
                # Later steps are undone by the rollback or abort.
                break
        if self.recovery.good_values is None and not bad_step and (
            self.functions
        ):
            self._sync()
            self.recovery.save_good_point(self.controller.step)
        self.stats.add_overhead("encode", time.perf_counter() - start)

    def _consume_full(self, record):
        """One FULL step's statistics; returns whether it calls for a
        rollback or an abort."""
        predicted = self.predicted_loss if self._awaiting_correct_loss else None
        self.recovery.check(record.loss, record.grad_norm, predicted,
                            self.controller.step)
        if self.recovery.calls_for_rollback:
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

    def _fast_forward(self, iterator):
        """Consumes a batch that the checkpointed run had already trained
        on (resuming in the middle of an epoch)."""
        for _ in range(self.steps_per_execution):
            batch = self.backend.next_batch(iterator)
        self._sync()
        try:
            self.model.get_metrics_result()
        except ValueError:
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
        """Whether a jump's check batches are held in memory (see
        `JumpCheck.holds_batches`): the state cannot be checkpointed then."""
        return self.jump_check.holds_batches

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
            self._sync()
            self._setup()
        self.controller.advance(n)
        self._after_step()
        self.last_logs = logs
        return logs

    def flush_iterations(self):
        """Adds the batches consumed without an optimizer update to
        `optimizer.iterations` (batched: one op instead of one per step)."""
        if self._pending_iterations:
            self._sync()
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
            self._sync()
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
                self._sync()
                self.trajectory.close_half()
        self.last_logs = logs
        return logs, kind or "full"

    def _predict_call(self, iterator):
        c = self.controller
        k = c.phase_step
        interval = self.control.correction_interval()
        check = self.jump_check
        checking = check.checking(k)
        if (not checking and interval and k > 0 and k % interval == 0):
            self.stats.corrections += 1
            return self._full_call(iterator, collect=False, kind="correction")
        n = self.steps_per_execution
        if self.config.predict_mode == "per_step":
            logs, loss, _ = common.split_stats(
                self.functions["predict"](iterator)
            )
            self.stats.count(Phase.PREDICT, forward=n, steps=n)
            self.step_stats.add(c.step + n, loss, kind="predict")
            self.last_logs = logs
            return logs, "predict"
        for _ in range(n):
            batch = self.backend.next_batch(iterator)
            if checking:
                check.add(batch)
        self._pending_iterations += n
        self.stats.count(Phase.PREDICT, steps=n)
        if checking:
            if check.ready:
                check.search(self.functions, c.step)
            return self._cached_logs(), "check"
        return self._cached_logs(), "skip"

    def _cached_logs(self):
        if self.last_logs is None:
            self._sync()
            self.last_logs = dict(self.model.get_metrics_result())
        return self.last_logs

    # =========================================================== phases
    def _start_full(self):
        self._phase_losses = []
        self._phase_start_features = None
        if self.quiet.quiet:
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
        if not self.recovery.alarm:
            # Inside a run of quiet phases the rollback point moves only at
            # its end: a snapshot of every variable and optimizer slot
            # costs about as much as a step on a small model.
            if self.quiet.at_stretch_end:
                self.recovery.save_good_point(c.step)
            self.monitor.healthy()
        self.recovery.alarm = False
        if self.quiet.quiet:
            # A quiet phase only trained: nothing to fit or check.
            self.quiet.quiet_phase_done()
            self.stats.quiet_phases += 1
            self.stats.add_overhead("update", time.perf_counter() - start)
            c.transition(Phase.FULL, outcome="completed")
            self._start_full()
            return
        tr = self.trajectory
        have_drift = tr.finish_phase(
            self.shadow.to_score(tr, len(self._phase_losses))
        )
        self.predictor.update_from_observation(
            self._phase_start_features, self.state, self._phase_losses
        )
        self.confidence = self.predictor.prediction_confidence(self.state)
        self.stats.confidences.append(self.confidence)
        cos = tr.drift_consistency()
        if cos is not None:
            self.stats.weight_cosines.append(cos)
        if have_drift:
            self.shadow.score_and_predict(
                tr, self.predictor, self.state, self._phase_losses,
                self.confidence, self.config.full_steps,
            )
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
        if self.quiet.missed():
            # A quiet stretch starts: the next fitting phase does not
            # continue this one.
            self.interrupt()
            tr.forget_drift()
        c.transition(Phase.FULL, outcome="completed")
        self._start_full()

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

    def interrupt(self):
        """The weights change outside a FULL phase (PREDICT, rollback): the
        next FULL phase does not continue the last one."""
        self.shadow.interrupt()
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
        self.predicted_loss = outcome.predicted_loss
        self.jump_check.begin(outcome, self.state.full_loss)
        self.stats.predictions_attempted += 1
        if self.config.predict_mode == "per_step":
            self.trajectory.snapshots.restore(outcome.start)
            for delta, value in zip(self.deltas, outcome.per_step_delta):
                delta.assign(value)
        return True

    def _end_predict(self, success, reason):
        c = self.controller
        check = self.jump_check
        # A rejected jump costs time, not data: the batches it consumed for
        # its checks are trained on once the weights are restored. With
        # `train_check_batches`, an accepted jump's are trained on too,
        # from the jumped weights.
        retrain = check.finish(success)
        self._pending_iterations -= len(retrain)
        self.flush_iterations()
        if success:
            self.quiet.paid()  # prediction pays: no back-off
            self.stats.predictions_accepted += 1
            c.record_prediction(True)
            self._awaiting_correct_loss = self.predicted_loss is not None
            c.transition(Phase.CORRECT, outcome="completed")
            if retrain:
                self._train_batches(retrain)
        else:
            check.restore_start()
            self.stats.predictions_rejected += 1
            self.quiet.rejected()
            self.stats.event(c.step, reason, "weights_restored")
            self.predictor.record_outcome(False)
            c.record_prediction(False)
            self.control.outcome(False, self._predict_length)
            c.transition(Phase.FULL, outcome=f"rejected:{reason}")
            # Retrained before the phase starts: the sums the step may add
            # to are reset by the start.
            self._train_batches(retrain)
            self._start_full()
        check.close()

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
        self._sync()

    def _loss_slope(self):
        """Log-loss change per 100 steps over the recent FULL steps."""
        trend = self.state.log_loss_trend(self.config.loss_trend_steps)
        return 0.0 if trend is None else float(100.0 * trend[0])

    def force_full(self, steps):
        """Ends a running prediction (keeping its verified weights; an
        unverified jump is undone like a rejection) and runs FULL phases
        for at least `steps` steps."""
        c = self.controller
        self._sync()
        c.force_full(steps)
        if c.phase == Phase.PREDICT:
            self._end_predict(success=not self.jump_check.unverified,
                              reason="forced_full")

    def _apply_action(self):
        """Carries out the recovery action a read of the statistics
        queued."""
        signals, action = self.recovery.take_action()
        c = self.controller
        names = "+".join(s.name for s in signals)
        outcome = type(action).__name__
        if isinstance(action, divergence.ReducePredictRatio):
            c.horizon_scale = max(0.1, c.horizon_scale * action.factor)
        elif isinstance(action, divergence.ForceFullPhase):
            self.force_full(action.steps)
        elif isinstance(action, (divergence.RollbackAndRetry,
                                 divergence.Abort)):
            if c.phase == Phase.PREDICT:
                self._end_predict(success=False, reason=names)
            self.flush_iterations()
            if self.recovery.roll_back():
                self.interrupt()
            if isinstance(action, divergence.Abort):
                self.stats.event(c.step, names, self.recovery.abort_outcome())
                self.model._detach_runner()
                raise divergence.DivergenceError(action.reason)
            outcome = self.recovery.rollback_outcome(action)
            c.force_full(self.monitor.recovery_full_steps)
            if c.phase == Phase.FULL:
                self._start_full()
        self.stats.event(c.step, names, outcome)
        if c.phase_done:
            self._end_phase()

    # ============================================================= logs
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
