"""`HybridRunner`: runs one fit-loop call in the phase the controller chose.

The model's train function dispatches here while a `HybridPredictCallback` is
attached. Per call it runs one of the compiled functions (FULL, per-step
PREDICT) or consumes the batches without a step (a jump's skipped or check
batches), reads the per-step statistics when due and feeds them to the
monitor, the training state and the phase cycle, and moves the cycle on at
phase ends. Each concept is an object of its own that keeps and saves its
own state (see `runner_state`):

- `calls` (`calls.StepCalls`): the compiled functions' calls, what they
  count, the logs;
- `cycle` (`cycle.PhaseCycle`): the phase transitions;
- `control` and `quiet` (`control.PhaseControl`, `control.QuietBackoff`):
  the phase policy;
- `jump_check` (`jump_check.JumpCheck`): a PREDICT phase's forward checks
  and restore point;
- `shadow` (`shadow.ShadowScoring`): predictions scored against real FULL
  phases;
- `recovery` (`recovery.Recovery`): the rollback point and the monitor's
  queued action;
- the compiled functions and their variables, kept with the model
  (`compiled.CompiledPhases`).
"""

import math
import time

import keras

from keras_hybrid import backends
from keras_hybrid import divergence
from keras_hybrid import dynamics
from keras_hybrid.calls import StepCalls
from keras_hybrid.compiled import CompiledPhases
from keras_hybrid.control import OuterGuard
from keras_hybrid.control import PhaseControl
from keras_hybrid.control import QuietBackoff
from keras_hybrid.cycle import PhaseCycle
from keras_hybrid.jump_check import JumpCheck
from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseController
from keras_hybrid.recovery import Recovery
from keras_hybrid.report import LossCurve
from keras_hybrid.report import RunStatistics
from keras_hybrid.serialization import decode
from keras_hybrid.serialization import encode
from keras_hybrid.shadow import ShadowScoring
from keras_hybrid.state import TrainingState
from keras_hybrid.step_stats import StepStatistics


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
        self.controller = PhaseController(config)
        self.state = TrainingState()
        self.stats = RunStatistics()
        self.step_stats = StepStatistics()
        self.loss_curve = LossCurve()
        self.control = PhaseControl(config)
        self.quiet = QuietBackoff(config.max_quiet_phases)
        self.monitor = divergence.DivergenceMonitor(
            config.divergence, full_steps=config.full_steps
        )
        self.recovery = Recovery(model, self.monitor)
        self.calls = StepCalls(model, self.backend, self.controller,
                               self.stats, self.step_stats)
        self.jump_check = JumpCheck(config, self.stats, sync=self.calls.sync)
        self.shadow = ShadowScoring(self.stats, self.control)
        self.cycle = PhaseCycle(
            config=config, controller=self.controller, control=self.control,
            quiet=self.quiet, state=self.state, stats=self.stats,
            monitor=self.monitor, recovery=self.recovery,
            jump_check=self.jump_check, shadow=self.shadow, calls=self.calls,
        )
        self.cycle.outer_guard = self.outer_guard = OuterGuard.for_config(
            config, self.stats)
        self.steps_per_execution = self.calls.steps_per_execution
        # Set up once the model is built (`_setup`).
        self.variables = self.trajectory = self.deltas = None
        self.predictor = None
        self._final_loss = None
        self._last_read = None
        self.start_time = time.perf_counter()
        self.end_time = None
        self.elapsed_before = 0.0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.steps_per_epoch = None
        self.skip_batches = 0
        self.pending_random_state = None
        # Called after every call of the fit loop (the callback's periodic
        # checkpoints and messages); `None`: nothing.
        self.after_call = None
        # The layer-wise check (a `layerwise.SettleCheck`) whose decisions
        # the freezer (`freezer`) carries out; `None`: none.
        self.settle_check = None
        if model.trainable_variables:
            self._setup()

    def _setup(self):
        """Creates what depends on the model's variables (once built)."""
        compiled = CompiledPhases.of(self.model, self.backend)
        self.variables = compiled.variables
        self.trajectory = self.calls.trajectory = compiled.trajectory
        self.deltas = compiled.deltas
        self.jump_check.attach(self.trajectory.snapshots,
                               compiled.predict_start)
        self.recovery.snapshots = compiled.good_vars
        self.use_live_functions()
        self.predictor = dynamics.get(self.config, self.trajectory,
                                      optimizer=self.model.optimizer)
        self.cycle.attach(self.predictor, self.trajectory, self.deltas,
                          self.variables)
        # The weights training starts from are the first rollback target: a
        # non-finite first step (refused in the compiled step) can be
        # recovered from like any later one.
        self.recovery.save_good_point(self.controller.step)
        compiled.good_vars = self.recovery.snapshots
        if self.controller.phase == Phase.FULL:
            self.cycle.start_full()

    def use_live_functions(self):
        """Runs the compiled functions of the weights trainable now (see
        `CompiledPhases.live_functions`)."""
        self.calls.functions = self.model._hybrid_compiled.live_functions(
            self.model, self.backend
        )

    @property
    def functions(self):
        """The compiled phase functions in use (`None` until set up)."""
        return self.calls.functions

    # Set by the callback, used by the phase cycle.
    @property
    def freezer(self):
        """The `freezing.Freezer` carrying out a freeze schedule or the
        layer-wise check's decisions; `None`: none."""
        return self.cycle.freezer

    @freezer.setter
    def freezer(self, freezer):
        self.cycle.freezer = freezer

    def phase_ends_ahead(self):
        """How many FULL phases can still end in this `fit()`, at most (0
        if its length is unknown): how often a phase-boundary function can
        still be called (`backends.LazilyCompiled`)."""
        if not self.total_steps:
            return 0
        remaining = max(0, self.total_steps - self.controller.step)
        return remaining // max(1, self.config.full_steps)

    @property
    def total_steps(self):
        """The run's length in steps (`None` if unknown)."""
        return self.cycle.total_steps

    @total_steps.setter
    def total_steps(self, steps):
        self.cycle.total_steps = steps

    # ========================================================= freezing
    def _follow_schedule(self):
        """Switches to the frozen depth the freeze schedule gives this
        step, if it changed."""
        depth = self.freezer.depth_at(self.controller.step)
        if depth != self.freezer.depth:
            self.switch_depth(depth)

    def switch_depth(self, depth):
        """Freezes the bottom `depth` layer groups (and no other) from the
        next step on: a running prediction ends first (a freeze is a change
        the prediction did not foresee)."""
        self.calls.sync()
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
            self.calls.sync()
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
        n = self.steps_per_execution
        if self.skip_batches > 0:
            logs = self.calls.fast_forward(iterator)
            self.skip_batches -= n
            self.batch_in_epoch += n
            return self._decorate(logs, self.controller.phase)
        if self.pending_random_state is not None:
            backends.set_global_random_state(self.pending_random_state)
            self.pending_random_state = None
        self.batch_in_epoch += n
        start = time.perf_counter()
        phase = self.controller.phase
        if self.functions is None:
            if not self.model.trainable_variables:
                # A subclassed model builds on its first step: run it plainly.
                return self._decorate(self._bootstrap(iterator, start), phase)
            self.calls.sync()
            self._setup()
        if self.freezer is not None and self.freezer.steps:
            self._follow_schedule()
            phase = self.controller.phase
        if phase == Phase.PREDICT:
            logs, kind = self._predict_call(iterator)
        else:
            logs, kind = self.calls.full(
                iterator, collect=phase == Phase.FULL and not self.quiet.quiet,
                settle_check=self.settle_check,
            )
        self.stats.add_time(kind, time.perf_counter() - start)
        self.controller.advance(n)
        if self.settle_check is not None:
            self._settle_groups()
        self._after_step()
        return self._decorate(logs, phase)

    def _bootstrap(self, iterator, start):
        logs = self.calls.plain(iterator, start)
        if self.model.trainable_variables:
            self.calls.sync()
            self._setup()
        self.controller.advance(self.steps_per_execution)
        self._after_step()
        return logs

    def _predict_call(self, iterator):
        """One call of a PREDICT phase: a correction (a training step every
        `correction_interval` steps), a per-step prediction, or a jump's
        check, trained or skipped batches."""
        k = self.controller.phase_step
        interval = self.control.correction_interval()
        check = self.jump_check
        checking = check.checking(k)
        if not checking and interval and k > 0 and k % interval == 0:
            self.stats.corrections += 1
            return self.calls.full(iterator, collect=False, kind="correction",
                                   settle_check=self.settle_check)
        if self.config.predict_mode == "per_step":
            return self.calls.predict(iterator), "predict"
        if check.trains_now(k):
            # An immediate jump's first batches: trained on from the
            # jumped weights as they come.
            return self.calls.full(iterator, collect=False, kind="retrain",
                                   settle_check=self.settle_check)
        self.calls.skip(iterator, keep=check.add if checking else None)
        if checking and check.ready:
            check.search(self.functions, self.controller.step)
        return self.calls.cached_logs(), "check" if checking else "skip"

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
        self.calls.sync()
        if not self._carry_out() and c.phase_done and (
            self.functions is not None
        ):
            # (Without trainable weights there is nothing to predict: every
            # step stays a plain one.)
            self.cycle.end_phase()

    def _carry_out(self):
        """Carries out a queued recovery action, else ends a PREDICT phase
        whose checks failed; returns whether there was either."""
        if self.recovery.action is not None:
            try:
                self.cycle.apply_action()
            except divergence.DivergenceError:
                self.model._detach_runner()
                raise
        elif self.jump_check.abort is not None:
            self.cycle.end_predict(success=False,
                                   reason=self.jump_check.abort)
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
        self.calls.sync()
        if self.step_stats and not keep_pending:
            self.read_statistics()
        self._carry_out()

    def force_full(self, steps):
        """Ends a running prediction and runs FULL phases for at least
        `steps` steps (see `PhaseCycle.force_full`)."""
        self.cycle.force_full(steps)

    def flush_iterations(self):
        """Adds the batches consumed without an optimizer update to
        `optimizer.iterations` (see `StepCalls.flush_iterations`)."""
        self.calls.flush_iterations()

    # ======================================================= statistics
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
        training state and the phase cycle.

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
            self.calls.sync()
            self.recovery.save_good_point(self.controller.step)
        self.stats.add_overhead("encode", time.perf_counter() - start)

    def _consume_full(self, record):
        """One backward step's statistics; returns whether it calls for a
        rollback or an abort."""
        self.recovery.check(record.loss, record.grad_norm,
                            self.cycle.expected_loss, self.controller.step)
        if self.recovery.calls_for_rollback:
            return True
        if not (math.isfinite(record.loss) and (
            record.grad_norm is None or math.isfinite(record.grad_norm)
        )):
            return False  # a refused step: nothing to learn from
        self.state.record(record.step, record.loss, record.grad_norm)
        self.loss_curve.add(record.step, record.loss)
        self.cycle.observe(record)
        self.outer_guard.observe(record.loss)
        return False

    # ======================================================= checkpoint
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

    def get_state(self):
        """The runner's section of a checkpoint: its own fields, the phase
        cycle's and the calls' (their objects save the rest: see
        `runner_state`)."""
        return dict(
            self.cycle.get_state(), final_loss=encode(self.final_loss),
            _pending_iterations=self.calls.pending_iterations,
            _last_read=self._last_read,
        )

    def set_state(self, state):
        self.cycle.set_state(state)
        self.final_loss = decode(state["final_loss"])
        self.calls.pending_iterations = state["_pending_iterations"]
        self._last_read = state["_last_read"]

    # ============================================================= logs
    @property
    def confidence(self):
        """The predictor's confidence at the last FULL phase end."""
        return self.cycle.confidence

    @property
    def predicted_loss(self):
        """The loss forecast for the end of the last PREDICT phase."""
        return self.cycle.predicted_loss

    @property
    def last_logs(self):
        """The newest step's logs (`None`: read from the model's metrics
        when needed)."""
        return self.calls.last_logs

    @last_logs.setter
    def last_logs(self, logs):
        self.calls.last_logs = logs

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
