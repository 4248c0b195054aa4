"""`JumpCheck`: the forward-only checks that guard a PREDICT phase.

A jump (`predict_mode="jump"`) is checked on the first `validation_samples`
batches of its phase before it counts: a line search evaluates the loss on
them at each candidate scale (`predictor.jump_scales`, in order, stopping
as soon as the loss stops improving) and accepts the best candidate if it
stays within `loss_tolerance` of the weights it replaces, else rejects the
jump. A rejection ends the phase with the weights of its start restored
exactly (the restore point), and the check batches are trained on then
(with `train_check_batches`, an accepted jump's too, from the jumped
weights). With `check_jumps=False` a jump is applied as its phase starts,
at its first scale, after a finiteness check alone (`jump_now`), and with
`train_check_batches` the phase's first `validation_samples` batches are
trained on as they come.

A per-step prediction (`predict_mode="per_step"`) is guarded step by step:
a forward loss that is not finite, or above the loss limit (`divergence_
threshold` standard deviations above the FULL losses' mean), ends the phase.
"""

import math
import time

import numpy as np

from keras_hybrid.phases import Phase
from keras_hybrid.serialization import decode
from keras_hybrid.serialization import encode
from keras_hybrid.serialization import to_numpy
from keras_hybrid.serialization import to_tensors
from keras_hybrid.step_stats import to_host
from keras_hybrid.trajectory import finite_flag


class JumpCheck:
    """The checks of the running PREDICT phase.

    Args:
        config: the `HybridConfig`.
        stats: the run's `RunStatistics` (forward passes, events, jumps).
        sync: called before the checks read the weights (the backend's
            sync of the model).

    Attributes:
        abort: why the running PREDICT phase must end (`None`: it goes
            on): `"forward_check"` (a rejected jump), `"non_finite_loss"`
            or `"divergence_threshold"` (a per-step loss above
            `HybridConfig.divergence_threshold`).
        restore_point: the values the phase's start snapshot took: at
            the start of a per-step prediction, at the start of a jump's
            checks (`None` until then, and for an unchecked jump).
    """

    def __init__(self, config, stats, sync):
        self.config = config
        self.stats = stats
        self.sync = sync
        self.weights = None
        self.start = None
        self.outcome = None
        self.restore_point = None
        self.batches = []
        self.accepted_batches = []
        self.rejected_batches = []
        self.abort = None
        self.loss_limit = None

    def attach(self, weights, start):
        """Sets the snapshots the checks work on.

        Args:
            weights: `VariableSnapshots` of the trainable weights (the
                candidates are put there).
            start: `VariableSnapshots` of what a rejection restores (the
                weights and the non-trainable state).
        """
        self.weights, self.start = weights, start

    # -------------------------------------------------------------- phase
    def begin(self, outcome, full_loss):
        """A PREDICT phase of `outcome` (a `PhaseOutcome`) starts from the
        current weights; `full_loss` (the FULL losses' moments) sets the
        per-step loss limit."""
        self.outcome = outcome
        # A jump's weights stay as they are until its search (the phase's
        # calls until then only hold batches): the restore point is taken
        # there, where the checks move them, and an unchecked jump never
        # needs one (a rejected one changed nothing). Per-step predictions
        # move the weights at every step.
        self.restore_point = (
            self.start.take() if self.config.predict_mode == "per_step"
            else None
        )
        self.batches = []
        if self.config.predict_mode == "per_step" and (
            full_loss.mean is not None
        ):
            self.loss_limit = full_loss.mean + (
                self.config.divergence_threshold * max(
                    full_loss.std, 1e-3 * abs(full_loss.mean)
                )
            )

    @property
    def immediate(self):
        """Whether a jump is applied as its phase starts (`check_jumps=
        False`): nothing checks it, so no batch waits for it or is held.
        With `train_check_batches` the phase's first `validation_samples`
        batches are then trained on as they come, from the jumped weights
        (the same steps, in the same order, as training them after a
        checked jump)."""
        return self.config.predict_mode == "jump" and (
            not self.config.check_jumps
        )

    def checking(self, phase_step):
        """Whether the batch at `phase_step` of the phase is a check batch
        (the first `validation_samples` of a checked jump's)."""
        return self.config.predict_mode == "jump" and (
            self.config.check_jumps
            and phase_step < self.config.validation_samples
        )

    def trains_now(self, phase_step):
        """Whether the batch at `phase_step` of an immediate jump's phase
        is trained on as it comes (its first `validation_samples`, with
        `train_check_batches`)."""
        return self.immediate and self.config.train_check_batches and (
            phase_step < self.config.validation_samples
        )

    def add(self, batch):
        """Keeps a check batch."""
        self.batches.append(batch)

    @property
    def ready(self):
        """Whether every check batch is there."""
        return len(self.batches) >= self.config.validation_samples

    @property
    def unverified(self):
        """Whether the jump was applied before its checks concluded."""
        return self.config.predict_mode == "jump" and bool(self.batches)

    @property
    def holds_batches(self):
        """Whether batches are held in memory (during the checks, or
        accepted and waiting to be trained on): no exact checkpoint then."""
        return bool(self.batches or self.accepted_batches)

    def observe(self, loss):
        """One forward-only per-step PREDICT loss."""
        if self.abort:
            return
        if not math.isfinite(loss):
            self.abort = "non_finite_loss"
        elif self.loss_limit is not None and loss > self.loss_limit:
            self.abort = "divergence_threshold"

    def finish(self, success):
        """Ends the phase's checks.

        Returns:
            The batches to train on now: an accepted jump's with
            `train_check_batches`, a rejected one's always.
        """
        if success:
            retrain = self.accepted_batches
        else:
            retrain = self.rejected_batches or self.batches
        self.rejected_batches = []
        self.accepted_batches = []
        self.batches = []
        self.abort = None
        self.loss_limit = None
        return retrain

    def restore_start(self):
        """Restores the weights (and non-trainable state) of the phase's
        start exactly (nothing to do where no restore point was taken: the
        weights have not left the start)."""
        if self.restore_point is not None:
            self.start.restore(self.restore_point)

    def close(self):
        """Forgets the phase (after `finish`)."""
        self.restore_point = None
        self.outcome = None

    # -------------------------------------------------------- line search
    def search(self, functions, step):
        """Checks the jump on its check batches at each scale, in the
        configured order, stopping as soon as the check loss stops
        improving; applies the best one or restores the weights exactly.
        One host transfer per candidate (its losses and whether it is
        finite).

        Args:
            functions: the compiled phase functions (`"eval_loss"`).
            step: the training step (for the events).
        """
        start = time.perf_counter()
        self.sync()
        batches = self.batches
        self.restore_point = self.start.take()
        evaluate = functions["eval_loss"]

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
        outcome = self.outcome
        if getattr(outcome, "judge_from_start", False):
            # A jump must beat its own (denoised) starting point too, so
            # that denoising alone never counts as progress.
            self.weights.restore(outcome.start)
            reference = min(base, mean_loss()[0])
        best_loss, best = math.inf, None
        tried = []
        previous = None
        for scale in self.config.predictor.jump_scales:
            candidate = outcome.targets(scale)
            self.weights.restore(candidate)
            loss, finite = mean_loss(finite_flag(candidate))
            if not finite:
                self.stats.event(step, "discarded", "non_finite_prediction",
                                 "rejected_before_apply")
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
                    - getattr(outcome, "required_gain", 0.0)),
            reference * (1.0 + tolerance),
        )
        self.stats.add_overhead("predict", time.perf_counter() - start)
        accepted = best is not None and best_loss < limit
        # The checks leave no trace in the non-trainable state (a layer may
        # update variables in `call()` even in inference mode).
        self.restore_start()
        self._conclude(batches, base, tried, best if accepted else None,
                       step)

    def jump_now(self, outcome, step):
        """Applies an unchecked jump (`immediate`) at the first of
        `predictor.jump_scales`, unless a weight of its target is not
        finite (one compiled call and one host transfer), and records it in
        `stats.jumps`.

        Args:
            outcome: the phase's `PhaseOutcome`.
            step: the training step.

        Returns:
            Whether it was applied (a non-finite target changes nothing).
        """
        start = time.perf_counter()
        self.sync()
        scale = self.config.predictor.jump_scales[0]
        if outcome.apply is not None:
            flag = outcome.apply(scale)
        else:
            flag = self.weights.restore_if_finite(outcome.targets(scale))
        applied = bool(to_host([flag])[0])
        self._record(step, None, [], scale if applied else None)
        self.stats.add_overhead("predict", time.perf_counter() - start)
        return applied

    def _record(self, step, base_loss, tried, accepted_scale):
        """Appends a jump to `stats.jumps` (`accepted_scale`: `None` if it
        was rejected)."""
        self.stats.jumps.append(
            {"step": step, "base_loss": base_loss, "tried": tried,
             "accepted_scale": accepted_scale}
        )

    def _conclude(self, batches, base_loss, tried, accepted, step):
        """Records a jump in `stats.jumps`, then applies it or rejects it.

        Args:
            batches: its check batches (trained on after an accepted jump
                with `train_check_batches`, after a rejected one always).
            base_loss: the checked loss of the weights it replaces (`None`
                unchecked).
            tried: `(scale, checked loss)` of the candidates checked.
            accepted: `(scale, weights)` of the jump to apply; `None`
                rejects it.
            step: the training step.
        """
        self.batches = []
        self._record(step, base_loss, tried,
                     accepted[0] if accepted else None)
        if accepted:
            self.weights.restore(accepted[1])
            if self.config.train_check_batches:
                self.accepted_batches = batches
            return
        self.rejected_batches = batches
        self.abort = "forward_check"

    # ------------------------------------------------------------- state
    def get_state(self):
        """JSON-safe state (the restore point is in `get_arrays`); no
        batches: a checkpoint is refused while batches are held."""
        return {"loss_limit": encode(self.loss_limit)}

    def get_arrays(self):
        return {"restore_point": to_numpy(self.restore_point)}

    def set_state(self, state, arrays):
        """Restores `get_state` and `get_arrays` output."""
        self.loss_limit = decode(state["loss_limit"])
        self.restore_point = to_tensors(arrays.get("restore_point"))
