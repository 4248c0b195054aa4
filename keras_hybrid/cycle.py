"""`PhaseCycle`: what happens at the phase boundaries.

WARMUP -> FULL -> (PREDICT -> CORRECT ->) FULL. At the end of a FULL phase
the predictor learns from it, its shadow prediction is scored and the next
one made, and a PREDICT phase starts if the predictor is ready and
confident (else another FULL phase, perhaps a quiet one: `QuietBackoff`).
A PREDICT phase ends kept (CORRECT follows) or rejected (its start's
weights restored, FULL follows). The monitor's recovery actions (a shorter
horizon, forced FULL phases, a rollback, an abort) are carried out here.
The runner calls these transitions; the state they keep between two
boundaries is the phase's: its losses, the prediction's confidence,
length and forecast loss.
"""

import time

from keras_hybrid import divergence
from keras_hybrid.phases import Phase
from keras_hybrid.serialization import object_state
from keras_hybrid.serialization import set_object_state
from keras_hybrid.trajectory import all_finite


class PhaseCycle:
    """The phase transitions of one run.

    Args:
        config: the `HybridConfig`.
        controller: the `PhaseController` (the phase and its legal moves).
        control: the `PhaseControl` (PREDICT length, threshold).
        quiet: the `QuietBackoff`.
        state: the `TrainingState`.
        stats: the run's `RunStatistics`.
        monitor: the `DivergenceMonitor`.
        recovery: the `Recovery` (rollback point, queued action).
        jump_check: the `JumpCheck` of PREDICT phases.
        shadow: the `ShadowScoring`.
        calls: the `StepCalls` (training on stored batches, the
            optimizer's step counter).

    Attributes:
        confidence: the predictor's confidence at the last FULL phase end.
        predicted_loss: the loss forecast for the end of the last PREDICT
            phase.
        freezer: the run's `freezing.Freezer` (`None`: nothing frozen);
            predictions hold its frozen weights in place.
        total_steps: the run's length in steps (`None` if unknown).
    """

    # The fields `get_state` saves (the keys of the runner's checkpoint
    # section, where they were first saved).
    _STATE = ("confidence", "predicted_loss", "_phase_losses",
              "_phase_start_features", "_awaiting_correct_loss",
              "_predict_length")

    def __init__(self, *, config, controller, control, quiet, state, stats,
                 monitor, recovery, jump_check, shadow, calls):
        self.config = config
        self.controller = controller
        self.control = control
        self.quiet = quiet
        self.state = state
        self.stats = stats
        self.monitor = monitor
        self.recovery = recovery
        self.jump_check = jump_check
        self.shadow = shadow
        self.calls = calls
        self.predictor = self.trajectory = None
        self.deltas = self.variables = None
        self.freezer = None
        self.total_steps = None
        # The `control.OuterGuard` that may stop the jumps (`None`: none).
        self.outer_guard = None
        self.confidence = 0.0
        self.predicted_loss = None
        # `(step, loss)` of the FULL phase's fitting steps, and the
        # training state's features at its start.
        self._phase_losses = []
        self._phase_start_features = None
        # Whether the next backward step's loss is the one the last kept
        # prediction forecast.
        self._awaiting_correct_loss = False
        self._predict_length = 0

    def attach(self, predictor, trajectory, deltas, variables):
        """Sets what exists once the model is built: the predictor, the
        `WeightTrajectory`, the per-step deltas and the trainable
        variables."""
        self.predictor, self.trajectory = predictor, trajectory
        self.deltas, self.variables = deltas, variables

    def get_state(self):
        return object_state(self, self._STATE)

    def set_state(self, state):
        set_object_state(self, state, self._STATE)

    # ------------------------------------------------------------ steps
    @property
    def expected_loss(self):
        """The loss the last kept prediction forecast for the next backward
        step (`None` if none is awaited)."""
        return self.predicted_loss if self._awaiting_correct_loss else None

    def observe(self, record):
        """One finite backward step's statistics (`StepStatistics`
        record): a fitting step's loss, or the loss after a prediction."""
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

    def interrupt(self):
        """The weights change outside a FULL phase (PREDICT, rollback): the
        next FULL phase does not continue the last one."""
        self.shadow.interrupt()
        self.predictor.note_interruption()

    # ------------------------------------------------------------- FULL
    def start_full(self):
        """A FULL phase starts (a quiet one fits nothing: its sums are
        discarded)."""
        self._phase_losses = []
        self._phase_start_features = None
        if self.quiet.quiet:
            return
        if self.trajectory is not None:
            self.trajectory.start_phase()
        if getattr(self.predictor, "uses_start_features", False):
            self._phase_start_features = self.state.features()

    def end_phase(self):
        """The controller's phase is done: moves on to the next one."""
        c = self.controller
        if c.phase in (Phase.WARMUP, Phase.CORRECT):
            c.transition(Phase.FULL, outcome="completed")
            self.start_full()
        elif c.phase == Phase.FULL:
            self._end_full()
        elif c.phase == Phase.PREDICT:
            self.end_predict(success=True, reason="completed")

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
            self.start_full()
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
            self.shadow.score(tr, self.predictor, self._phase_losses)
        self.stats.add_overhead("update", time.perf_counter() - start)
        landing = self._landing_length()
        ready = (
            have_drift
            and self.config.enable_prediction
            and self.predictor.ready()
            and (self.outer_guard is None or not self.outer_guard.stopped)
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
        elif have_drift:
            # Scored at the next phase end; not made where a jump or a
            # quiet stretch follows (it would be dropped at once).
            start = time.perf_counter()
            self.shadow.predict(tr, self.predictor, self.state,
                                self.confidence, self.config.full_steps)
            self.stats.add_overhead("update", time.perf_counter() - start)
        c.transition(Phase.FULL, outcome="completed")
        self.start_full()

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

    def _loss_slope(self):
        """Log-loss change per 100 steps over the recent FULL steps."""
        trend = self.state.log_loss_trend(self.config.loss_trend_steps)
        return 0.0 if trend is None else float(100.0 * trend[0])

    # ---------------------------------------------------------- PREDICT
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
        check = self.jump_check
        if check.immediate:
            # Applied now: only its target's finiteness is checked (the
            # per-step change and the start are never read).
            usable = check.jump_now(outcome, c.step)
        else:
            usable = all_finite(outcome.per_step_delta) and all_finite(
                outcome.start)
        if not usable:
            self.stats.event(
                c.step, "discarded", "non_finite_prediction",
                "rejected_before_apply"
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
        check.begin(outcome, self.state.full_loss)
        self.stats.predictions_attempted += 1
        if check.immediate:
            self._jumped()
        if self.config.predict_mode == "per_step":
            self.trajectory.snapshots.restore(outcome.start)
            for delta, value in zip(self.deltas, outcome.per_step_delta):
                delta.assign(value)
        return True

    def _jumped(self):
        """A jump has just moved the weights (an immediate one as its
        phase starts, a checked one once accepted)."""
        # The loss rises for a few steps after a jump: the monitor does not
        # judge them against the loss before it.
        self.monitor.note_jump()
        if self.outer_guard is not None:
            self.outer_guard.jumped(self.controller.step)

    def end_predict(self, success, reason):
        """Ends the PREDICT phase: kept (`success`; CORRECT follows) or
        rejected for `reason` (the start's weights restored; FULL
        follows)."""
        c = self.controller
        check = self.jump_check
        # A rejected jump costs time, not data: the batches it consumed for
        # its checks are trained on once the weights are restored. With
        # `train_check_batches`, an accepted jump's are trained on too,
        # from the jumped weights.
        retrain = check.finish(success)
        self.calls.pending_iterations -= len(retrain)
        self.calls.flush_iterations()
        if success:
            if self.config.predict_mode == "jump" and not check.immediate:
                self._jumped()
            self.quiet.paid()  # prediction pays: no back-off
            self.stats.predictions_accepted += 1
            c.record_prediction(True)
            self._awaiting_correct_loss = self.predicted_loss is not None
            c.transition(Phase.CORRECT, outcome="completed")
            if retrain:
                self.calls.train_batches(retrain)
        else:
            check.restore_start()
            self.stats.predictions_rejected += 1
            self.quiet.rejected()
            self.stats.event(c.step, "restore", reason, "weights_restored")
            self.predictor.record_outcome(False)
            c.record_prediction(False)
            self.control.outcome(False, self._predict_length)
            c.transition(Phase.FULL, outcome=f"rejected:{reason}")
            # Retrained before the phase starts: the sums the step may add
            # to are reset by the start.
            self.calls.train_batches(retrain)
            self.start_full()
        check.close()

    def force_full(self, steps):
        """Ends a running prediction (keeping its verified weights; an
        unverified jump is undone like a rejection) and runs FULL phases
        for at least `steps` steps."""
        c = self.controller
        self.calls.sync()
        c.force_full(steps)
        if c.phase == Phase.PREDICT:
            self.end_predict(success=not self.jump_check.unverified,
                             reason="forced_full")

    # --------------------------------------------------------- recovery
    def apply_action(self):
        """Carries out the recovery action a read of the statistics queued.

        Raises:
            DivergenceError: the action was `Abort` (the weights and the
                optimizer are back at the last good point).
        """
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
                self.end_predict(success=False, reason=names)
            self.calls.flush_iterations()
            if self.recovery.roll_back():
                self.interrupt()
            if isinstance(action, divergence.Abort):
                self.stats.event(c.step, action.kind, names,
                                 self.recovery.abort_outcome())
                raise divergence.DivergenceError(action.reason)
            outcome = self.recovery.rollback_outcome(action)
            c.force_full(self.monitor.recovery_full_steps)
            if c.phase == Phase.FULL:
                self.start_full()
        self.stats.event(c.step, action.kind, names, outcome)
        if c.phase_done:
            self.end_phase()
