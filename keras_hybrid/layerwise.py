"""Layer-wise freezing by measurement: freeze the lowest trainable layer
group once its recent movement stops buying held-out progress.

Fine-tuning from a pretrained start, the lower layers often settle early.
How far a group moves does not tell whether it settled (in our probes every
block moved alike where freezing was safe and where it was not); what its
movement buys does. So every `window` steps the check puts the lowest
trainable group back where it was one window earlier and compares the loss
on the next `check_batches` batches, each read before it is trained on
(data the weights have not been fitted to since the last epoch). The check
batches are few and their losses noisy, so the check asks for evidence,
not for a lucky draw: with `d_i = (loss_reverted_i - loss_now_i) /
mean(loss_now)` per batch, the group counts as settled when `mean(d) +
std_errors * std(d) / sqrt(n) <= tolerance`, that is when undoing its last
window of movement costs at most `tolerance`, beyond `std_errors` standard
errors of the batch-to-batch noise. Settled for `patience` windows in a
row, the group is frozen where it is. Its backward pass stops, and the
next group up is checked next. The top group (the head) always trains. A
group whose backward work is below `min_work` of a step's (an embedding
lookup costs almost nothing) is checked and frozen together with the groups
above it until they reach it: a freeze that saves nothing is not made.

Each check step costs two forward passes (the current and the reverted
weights) on its batch; nothing else changes in training.
"""

import keras
import numpy as np



def settle_bound(pairs, std_errors):
    """What undoing the window costs, at most, beyond the noise.

    Args:
        pairs: `(n, 2)` losses of the check batches: now, reverted.
        std_errors: standard errors of the mean added to it.

    Returns:
        `mean(d) + std_errors * std(d) / sqrt(n)` of the relative
        differences `d = (reverted - now) / mean(now)` (the standard error
        is 0 for one batch: `check_batches: 1` judges the mean alone).
    """
    pairs = np.asarray(pairs, dtype="float64")
    scale = max(float(np.mean(pairs[:, 0])), 1e-12)
    d = (pairs[:, 1] - pairs[:, 0]) / scale
    error = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(np.mean(d)) + float(std_errors) * error


class SettleCheck:
    """Decides, by forward checks, when the lowest trainable group freezes.

    The runner asks `wants_batch(step)` before each step; if True it hands
    the step's batch to `measure(batch)` before training on it. After the
    step it calls `after_step(step)`, which returns the new frozen depth
    when a group is to freeze (else `None`).

    Args:
        settings: a `LayerwiseConfig`.
        groups: the model's `LayerGroups`.
        variables: the model's trainable variables (`groups`' indices).
        eval_loss: `batch -> scalar loss tensor` (inference mode, no state
            change).
        total_steps: the run's length in steps (`None` if unknown).
    """

    def __init__(self, settings, groups, variables, eval_loss,
                 total_steps=None):
        self.settings = settings
        self.groups = groups
        self.variables = list(variables)
        self.eval_loss = eval_loss
        self.total_steps = total_steps
        self.depth = 0
        self.votes = 0
        self.snapshot = None  # the checked group's weights a window ago
        self.snapshot_step = None
        self.losses = []  # (loss now, loss reverted) of this check
        self.decisions = []
        self._cost_cache = None

    # ------------------------------------------------------------ steps
    @property
    def checking(self):
        """Whether a group is left to check (the top one always trains)."""
        return self._span_end() is not None

    def _span_end(self):
        """The last group of the span checked next: the lowest trainable
        group and, while their backward work is below `min_work` of a full
        step's, the groups above it (freezing a group whose backward costs
        almost nothing, such as an embedding lookup, saves nothing); `None`
        when no span below the top group reaches it."""
        costs = self._costs()
        total = float(sum(costs)) or 1.0
        last = len(self.groups) - 1  # the top group always trains
        work = 0.0
        for g in range(self.depth, last):
            work += costs[g]
            if work / total >= self.settings.min_work:
                return g
        return None

    def _costs(self):
        if self._cost_cache is None:
            self._cost_cache = self.groups.forward_costs()
        return self._cost_cache

    def _span_indices(self):
        return [i for g in range(self.depth, self._span_end() + 1)
                for i in self.groups.variable_indices[g]]

    def wants_batch(self, step):
        """Whether the batch of `step` is a check batch."""
        if not self.checking or self.snapshot is None:
            return False
        due = self.snapshot_step + self.settings.window
        return due <= step < due + self.settings.check_batches

    def measure(self, batch):
        """The loss of `batch` at the current weights and with the checked
        group put back one window (one host transfer)."""
        indices = self._span_indices()
        now = self.eval_loss(batch)
        current = [keras.ops.copy(self.variables[i].value) for i in indices]
        for i, value in zip(indices, self.snapshot):
            self.variables[i].assign(value)
        reverted = self.eval_loss(batch)
        for i, value in zip(indices, current):
            self.variables[i].assign(value)
        pair = keras.ops.convert_to_numpy(keras.ops.stack([now, reverted]))
        self.losses.append((float(pair[0]), float(pair[1])))

    def needs_weights(self, step):
        """Whether `after_step(step)` reads the weights (a snapshot)."""
        return self.checking and (
            self.snapshot is None
            or len(self.losses) >= self.settings.check_batches
        )

    def after_step(self, step):
        """Takes the first snapshot, concludes a check after its last
        batch; returns the new frozen depth, or `None`."""
        if not self.checking:
            return None
        if self.snapshot is None:
            self._take_snapshot(step)
            return None
        if len(self.losses) < self.settings.check_batches:
            return None
        pairs = np.asarray(self.losses, dtype="float64")
        now, reverted = np.mean(pairs, axis=0)
        bound = settle_bound(pairs, self.settings.std_errors)
        settled = bool(bound <= self.settings.tolerance)
        self.votes = self.votes + 1 if settled else 0
        self.losses = []
        decision = {
            "step": int(step), "group": int(self.depth),
            "up_to_group": int(self._span_end()),
            "loss": float(now), "loss_reverted": float(reverted),
            "bound": float(bound), "settled": settled, "frozen": False,
        }
        freeze = (
            self.votes >= self.settings.patience
            and self._past_start(step)
        )
        if freeze:
            decision["frozen"] = True
            self.depth = self._span_end() + 1
            self.votes = 0
        self.decisions.append(decision)
        self._take_snapshot(step)
        return self.depth if freeze else None

    def _past_start(self, step):
        if not self.total_steps:
            return True
        return step >= self.settings.start_fraction * self.total_steps

    def _take_snapshot(self, step):
        if not self.checking:
            self.snapshot = None
            return
        indices = self._span_indices()
        # Copies: on JAX a variable's own array is donated by later steps.
        self.snapshot = [
            keras.ops.copy(self.variables[i].value) for i in indices
        ]
        self.snapshot_step = int(step)

    # ------------------------------------------------------------ state
    def get_state(self):
        return {
            "depth": self.depth, "votes": self.votes,
            "snapshot_step": self.snapshot_step, "losses": self.losses,
            "decisions": self.decisions,
        }

    def get_arrays(self):
        return [] if self.snapshot is None else [
            keras.ops.convert_to_numpy(v) for v in self.snapshot
        ]

    def set_state(self, state, arrays):
        self.depth = int(state["depth"])
        self.votes = int(state["votes"])
        self.snapshot_step = state["snapshot_step"]
        self.losses = [tuple(p) for p in state["losses"]]
        self.decisions = list(state["decisions"])
        self.snapshot = [keras.ops.convert_to_tensor(a) for a in arrays] or (
            None
        )
