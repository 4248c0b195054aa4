"""`OuterGuard`: stops the outer steps when they make the loss worse.

An outer step (an accepted jump, as the `outer` preset makes after every
FULL phase) is not checked before it is applied. On a model that overfits
its training set, or where the jumps land above the loss they left, they
cost quality (a small teacher-student classifier ended 8-16% above plain
training). The guard watches two signals and, once either says the outer
steps do harm, stops them for the rest of the run; training then goes on
as plain `fit()` does.

- The held-out loss (Keras' `val_loss`, when `fit()` has validation data):
  like Keras' `EarlyStopping`, the validated epochs with outer steps in them
  that do not reach a new best held-out loss are counted; a new best resets
  the count. At `patience` the outer steps stop.
- Without validation data, if asked (`check_batches`), the check-batch
  loss: the mean loss of the batches trained right after an outer step (its
  check batches and the CORRECT steps) against the mean loss of the FULL
  steps before it. A step after which it is more than `CHECK_TOLERANCE`
  higher counts one up, any other one down (not below 0); at `patience` the
  outer steps stop. Once a held-out loss has been seen, it alone decides.
  Off by default: the loss right after an outer step rises where the steps
  help too (by up to 18% on an MNIST-1D MLP where `outer` ended 9% below
  plain training; the rule stopped it there and lost that gain), so without
  validation data the guard only records the ratios (the report's
  `check_ratios`).
"""

import collections
import math

# A check-batch loss this much above the loss before the outer step (10%)
# counts against the outer steps. Measured per step after a jump: 0.96-1.03
# times the loss before it on a GRU language model and mostly 0.94-1.10 on a
# small CNN where outer helps, mostly 1.1-1.37 on a teacher-student
# classifier where it hurts.
CHECK_TOLERANCE = 0.10


class OuterGuard:
    """Decides whether outer steps go on.

    Args:
        patience: validated epochs without a new best held-out loss (or the
            count of harmful outer steps, without validation data) at which
            the outer steps stop; 0 never stops them.
        post_steps: the trained batches after an outer step whose loss is
            compared (its check batches and the CORRECT steps).
        pre_steps: the FULL steps before it whose mean loss they are compared
            with.
        stats: the run's `RunStatistics` (the stop is recorded as an event
            there, so that the callback prints it and the report lists it).
        check_batches: whether the check-batch loss may stop the outer steps
            (without validation data).

    Example:

    ```python
    guard = OuterGuard(patience=2, post_steps=4, pre_steps=15, stats=stats)
    guard.observe(step, loss)      # every trained step's loss
    guard.jumped(step)             # an outer step was applied
    guard.epoch_end(step, val_loss)
    guard.stopped                  # True: make no more outer steps
    ```
    """

    def __init__(self, patience, post_steps, pre_steps, stats,
                 check_batches=False):
        self.patience = int(patience)
        self.check_batches = bool(check_batches)
        self.post_steps = int(post_steps)
        self.pre_steps = int(pre_steps)
        self.stats = stats
        self.stopped = False
        self.stop_step = None
        self.reason = None
        # Held-out loss: the best one, the validated epochs with outer steps
        # since it, the outer steps since the last validation.
        self.best_val_loss = None
        self.wait = 0
        self.jumps_since_val = 0
        self.val_history = []
        # Check-batch loss: the recent trained losses, the open comparison
        # (`[pre mean, post losses]`), the harmful-step count and the ratios.
        self.recent = collections.deque(maxlen=self.pre_steps)
        self.pending = None
        self.harm = 0
        self.check_ratios = []

    @classmethod
    def for_config(cls, config, stats):
        """The guard of a `HybridConfig` (`outer_patience`): the batches
        after a jump are those trained after it (its check batches with
        `train_check_batches`, then the CORRECT steps), compared with the
        second half of the FULL phase before it."""
        post = config.correct_steps + (
            config.validation_samples if config.train_check_batches else 0)
        return cls(config.outer_patience, post_steps=post,
                   pre_steps=max(2, config.full_steps // 2), stats=stats,
                   check_batches=config.outer_check_batches)

    @property
    def enabled(self):
        return self.patience > 0

    @property
    def allows_outer_steps(self):
        """Whether another outer step may be made."""
        return not self.stopped

    # ------------------------------------------------------------ signals
    def observe(self, loss):
        """One trained step's loss (in step order)."""
        if not math.isfinite(loss):
            return
        loss = float(loss)
        if self.pending is not None:
            self.pending[1].append(loss)
            if len(self.pending[1]) >= self.post_steps:
                self._judge_check()
            return
        self.recent.append(loss)

    def jumped(self, step):
        """An outer step was applied at `step`: the next `post_steps`
        trained losses are judged against the recent ones."""
        del step
        self.jumps_since_val += 1
        if self.recent and self.enabled:
            self.pending = [sum(self.recent) / len(self.recent), []]
        self.recent.clear()

    def _judge_check(self):
        before, after = self.pending
        self.pending = None
        ratio = (sum(after) / len(after)) / before if before > 0 else 1.0
        self.check_ratios.append(round(ratio, 4))
        if ratio > 1.0 + CHECK_TOLERANCE:
            self.harm += 1
        else:
            self.harm = max(0, self.harm - 1)
        if self.check_batches and self.best_val_loss is None and (
            self.harm >= self.patience
        ):
            recent = ", ".join(f"{r:.2f}" for r in self.check_ratios[-3:])
            self._stop(
                None, "check_batch_loss",
                "the loss of the batches trained right after the outer "
                f"steps rose over {100 * CHECK_TOLERANCE:.0f}% above the "
                f"loss before them (last ratios {recent})",
            )

    def epoch_end(self, step, val_loss):
        """An epoch ended; `val_loss` is Keras' held-out loss (`None`: the
        epoch did not validate)."""
        if val_loss is None or not math.isfinite(val_loss):
            return
        val_loss = float(val_loss)
        self.val_history.append([int(step), val_loss])
        jumps, self.jumps_since_val = self.jumps_since_val, 0
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.wait = 0
            return
        if not jumps or self.stopped:
            return
        self.wait += 1
        if self.enabled and self.wait >= self.patience:
            self._stop(
                step, "held_out_loss",
                "the held-out loss did not improve on "
                f"{self.best_val_loss:.4g} in {self.wait} epochs with outer steps (now {val_loss:.4g})",
            )

    def _stop(self, step, signal, why):
        self.stopped = True
        self.reason = why
        step = self.stats.total_steps if step is None else step
        self.stop_step = int(step)
        self.stats.event(step, "outer_stopped", signal,
                         f"outer_steps_stopped: {why}")

    # ------------------------------------------------------------- report
    def summary(self):
        """The report's `outer_guard` entry."""
        return {
            "patience": self.patience,
            "stopped": self.stopped,
            "stop_step": self.stop_step,
            "reason": self.reason,
            "best_val_loss": self.best_val_loss,
            "epochs_without_improvement": self.wait,
            "check_ratios": list(self.check_ratios),
        }

    # -------------------------------------------------------------- state
    _STATE = ("stopped", "stop_step", "reason", "best_val_loss", "wait",
              "jumps_since_val", "val_history", "pending", "harm",
              "check_ratios")

    def get_state(self):
        state = {name: getattr(self, name) for name in self._STATE}
        state["recent"] = list(self.recent)
        return state

    def set_state(self, state):
        for name in self._STATE:
            setattr(self, name, state[name])
        self.recent = collections.deque(state["recent"],
                                        maxlen=self.pre_steps)
