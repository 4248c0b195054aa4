"""Messages about interventions: what the hybrid did to keep training safe.

The runner records each intervention in its statistics (`stats.events`, also
the report's `divergence_events`): a dict with the `step`, the `signal` that
caused it and its `outcome`. `InterventionLog` turns the new ones into
one-line messages, the first of each kind per epoch, as Keras callbacks
report theirs (`ReduceLROnPlateau`, `EarlyStopping`).
"""

import collections

# Kinds of intervention, by how the outcome string starts, and their wording.
_KINDS = (
    ("Abort", "abort", "training stopped ({outcome})"),
    ("RollbackAndRetry", "rollback",
     "rolled back to the last good weights ({outcome})"),
    ("ForceFullPhase", "forced_full",
     "forced full training (backward passes) for a while"),
    ("ReducePredictRatio", "shorter_predictions",
     "shortened the next predictions"),
    ("weights_restored", "restore",
     "rejected a prediction and restored the weights exactly; full "
     "training resumes"),
    ("rejected_before_apply", "discarded",
     "discarded a non-finite prediction before applying it"),
)


def describe(event):
    """Returns `(kind, message)` for one recorded intervention.

    Args:
        event: a dict with `step`, `signal` and `outcome`.

    Returns:
        A short kind name (`"rollback"`, `"restore"`, ...) and a one-line
        message naming the step and the signal.
    """
    outcome = str(event.get("outcome", ""))
    signal = event.get("signal") or "unknown"
    for prefix, kind, text in _KINDS:
        if outcome.startswith(prefix):
            # "Kind: detail" (older reports: "Kind, detail").
            detail = outcome[len(prefix):].lstrip(" :,")
            what = text.format(outcome=detail or prefix)
            break
    else:
        kind, what = "other", outcome
    return kind, f"step {event.get('step')}: {what} (signal: {signal})."


class InterventionLog:
    """Reports new interventions, the first of each kind per epoch.

    Args:
        printer: called with each message line (e.g.
            `keras.utils.io_utils.print_msg`).
        prefix: put before every line.
    """

    def __init__(self, printer, prefix="HybridPredictCallback"):
        self.printer = printer
        self.prefix = prefix
        self.seen = 0
        self.counts = collections.Counter()

    def start_epoch(self):
        """Forgets which kinds were reported (new epoch)."""
        self.counts.clear()

    def update(self, events, epoch):
        """Reports the events after the ones already seen.

        Args:
            events: the runner's list of event dicts (only grows during one
                `fit()`).
            epoch: the current epoch (0-based), shown 1-based.
        """
        if len(events) < self.seen:  # a new run's list
            self.seen = 0
        for event in events[self.seen:]:
            kind, message = describe(event)
            self.counts[kind] += 1
            if self.counts[kind] == 1:
                self.printer(f"\nEpoch {epoch + 1}, {self.prefix}: {message}")
        self.seen = len(events)

    def end_epoch(self, epoch):
        """Reports how often each kind repeated during the epoch."""
        if any(count > 1 for count in self.counts.values()):
            self.printer(
                f"Epoch {epoch + 1}, {self.prefix}: interventions this epoch: "
                + ", ".join(f"{kind} x{count}"
                            for kind, count in sorted(self.counts.items()))
                + "."
            )
        self.start_epoch()
