"""`StepCalls`: the compiled functions the fit loop's calls run, and what
each call did.

One call of the fit loop runs `steps_per_execution` batches through one of
the compiled phase functions (a FULL step collecting the trajectory's sums,
a forward-only per-step PREDICT step), or consumes them without a step (a
jump's skipped or check batches). Each call counts its backward and forward
passes (`RunStatistics`), leaves its loss and gradient norm on the device
(`StepStatistics`, read once per interval) and keeps the logs Keras shows.
Batches consumed without an optimizer update are added to
`optimizer.iterations` in one op when the next update comes (so that
learning-rate schedules count the data seen).
"""

import time

from keras_hybrid.backends import common
from keras_hybrid.phases import Phase


class StepCalls:
    """Runs the compiled phase functions for the fit loop.

    Args:
        model: the `HybridModel` being trained.
        backend: the `keras_hybrid.backends` module of the backend.
        controller: the `PhaseController` (the step and phase).
        stats: the run's `RunStatistics`.
        step_stats: the device-side `StepStatistics`.

    Attributes:
        functions: the compiled phase functions of the weights trainable
            now (`None` until the model is built).
        trajectory: the `WeightTrajectory` the FULL steps add to.
        last_logs: the logs of the newest step (`None`: read from the
            model's metrics when needed).
        pending_iterations: batches consumed without an optimizer update
            and not yet counted in `optimizer.iterations`.
    """

    def __init__(self, model, backend, controller, stats, step_stats):
        self.model = model
        self.backend = backend
        self.controller = controller
        self.stats = stats
        self.step_stats = step_stats
        self.steps_per_execution = int(model.steps_per_execution or 1)
        self.functions = None
        self.trajectory = None
        self.last_logs = None
        self.pending_iterations = 0

    def sync(self):
        """Brings the fit loop's newest state into the model's variables
        (see `backends.sync`)."""
        self.backend.sync(self.model)

    def flush_iterations(self):
        """Adds the batches consumed without an optimizer update to
        `optimizer.iterations` (batched: one op instead of one per step)."""
        if self.pending_iterations:
            self.sync()
            self.model.optimizer.iterations.assign_add(self.pending_iterations)
            self.pending_iterations = 0

    def plain(self, iterator, start):
        """A plain step of the model's own train function (before it is
        built: nothing compiled yet)."""
        logs, loss, grad_norm = common.split_stats(
            self.model._hybrid_plain_train(iterator)
        )
        n = self.steps_per_execution
        self.step_stats.add(self.controller.step + n, loss, grad_norm,
                            kind="warmup")
        self.stats.count(self.controller.phase, backward=n, forward=n,
                         steps=n)
        self.stats.add_time("full", time.perf_counter() - start)
        self.last_logs = logs
        return logs

    def full(self, iterator, collect, kind=None, settle_check=None):
        """Training steps (the collecting FULL function).

        Args:
            iterator: the fit loop's data iterator.
            collect: whether the trajectory keeps the steps' weights (a
                fitting FULL phase); else its sums are discarded.
            kind: how the steps are recorded (`"correction"`, ...).
            settle_check: the layer-wise `SettleCheck`, which may measure
                the batch before it is trained on.

        Returns:
            `(logs, kind)`.
        """
        self.flush_iterations()
        # Every backward step runs the one collecting function (one trace or
        # compilation instead of two); outside a fitting FULL phase it adds
        # nothing to the sums (a flag it reads on the device).
        self.functions["collect"](collect)
        c = self.controller
        measured = (
            settle_check is not None and self.steps_per_execution == 1
            and settle_check.wants_batch(c.step)
        )
        if measured:
            # A layer-wise check batch: measured before it is trained on.
            batch = self.backend.next_batch(iterator)
            self.sync()
            settle_check.measure(batch)
            out = self.functions["train_batch"](batch)
        else:
            out = self.functions["full"](iterator)
        logs, loss, grad_norm = common.split_stats(out)
        n = self.steps_per_execution
        self.stats.count(c.phase, backward=n,
                         forward=n + (2 if measured else 0), steps=n)
        if collect:
            kind = "full"
        self.step_stats.add(c.step + n, loss, grad_norm, kind=kind or "train")
        if collect:
            self.trajectory.added(n)
            half = c.phase_length // 2
            if (
                self.trajectory.first_mean is None
                and c.phase_step + n >= half
            ):
                self.sync()
                self.trajectory.close_half()
        self.last_logs = logs
        return logs, kind or "full"

    def predict(self, iterator):
        """Forward-only per-step PREDICT steps (the deltas applied)."""
        logs, loss, _ = common.split_stats(
            self.functions["predict"](iterator)
        )
        n = self.steps_per_execution
        self.stats.count(Phase.PREDICT, forward=n, steps=n)
        self.step_stats.add(self.controller.step + n, loss, kind="predict")
        self.last_logs = logs
        return logs

    def skip(self, iterator, keep=None):
        """Consumes the call's batches without a step (a jump's phase);
        `keep(batch)`, if given, receives each (a check batch)."""
        n = self.steps_per_execution
        for _ in range(n):
            batch = self.backend.next_batch(iterator)
            if keep is not None:
                keep(batch)
        self.pending_iterations += n
        self.stats.count(Phase.PREDICT, steps=n)

    def train_batches(self, batches):
        """Training steps on stored batches (no trajectory collection)."""
        train = self.functions["train_batch"]
        self.functions["collect"](False)
        for batch in batches:
            _, loss, grad_norm = common.split_stats(train(batch))
            self.stats.count(self.controller.phase, backward=1, forward=1)
            self.step_stats.add(self.controller.step, loss, grad_norm,
                                kind="retrain")
        self.sync()

    def fast_forward(self, iterator):
        """Consumes the call's batches, which the checkpointed run had
        already trained on (resuming in the middle of an epoch)."""
        for _ in range(self.steps_per_execution):
            batch = self.backend.next_batch(iterator)
        self.sync()
        try:
            self.model.get_metrics_result()
        except ValueError:
            # In a fresh process nothing has traced a step yet: build the
            # compiled metrics (and loss) from a batch, as `fit()` does
            # under a distribution strategy.
            self.model._symbolic_build(data_batch=batch)
        return self.cached_logs()

    def cached_logs(self):
        """The newest step's logs (read from the model's metrics if no step
        ran since they were forgotten)."""
        if self.last_logs is None:
            self.sync()
            self.last_logs = dict(self.model.get_metrics_result())
        return self.last_logs
