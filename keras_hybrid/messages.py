"""Messages about what the hybrid did: its jumps and its interventions.

The runner records each intervention in its statistics (`stats.events`, also
the report's `divergence_events`): a dict with the `step`, its `kind` (one of
`KINDS`), the `signal` that caused it and its `outcome`; and each jump of
the weights (`stats.jumps`, the report's `jumps`): a dict with the `step`,
the `accepted_scale` (`None` for a rejected jump, which is an intervention
too) and the checked losses.
`InterventionLog` turns the new ones into one-line messages, the first of
each kind per epoch, as Keras callbacks report theirs (`ReduceLROnPlateau`,
`EarlyStopping`), and the epoch's counts at its end.
"""

import collections

# Kinds of intervention (each event's `kind`) and their wording; the detail
# is what the outcome says after its name ("RollbackAndRetry: to step 40,
# learning rate -> 0.005").
KINDS = {
    "abort": "training stopped ({detail})",
    "rollback": "rolled back to the last good weights ({detail})",
    "forced_full": "forced full training (backward passes) for a while",
    "shorter_predictions": "shortened the next predictions",
    "restore": ("rejected a prediction and restored the weights exactly; "
                "full training resumes"),
    "discarded": "discarded a non-finite prediction before applying it",
    "outer_stopped": ("stopped the outer steps for the rest of the run, as "
                      "{detail}; training goes on as plain fit()"),
}

# Reports and checkpoints written before events carried their kind: the
# kind by how the outcome starts.
_OUTCOME_PREFIXES = (
    ("Abort", "abort"),
    ("RollbackAndRetry", "rollback"),
    ("ForceFullPhase", "forced_full"),
    ("ReducePredictRatio", "shorter_predictions"),
    ("weights_restored", "restore"),
    ("rejected_before_apply", "discarded"),
    ("outer_steps_stopped", "outer_stopped"),
)


def _kind_and_detail(event):
    """`(kind, detail)` of an event: its recorded kind, else the one its
    outcome names (older reports); the detail after the outcome's name."""
    outcome = str(event.get("outcome", ""))
    kind = event.get("kind")
    if kind is None:
        for prefix, prefix_kind in _OUTCOME_PREFIXES:
            if outcome.startswith(prefix):
                # "Name: detail" (older still: "Name, detail").
                detail = outcome[len(prefix):].lstrip(" :,")
                return prefix_kind, detail or prefix
        return "other", outcome
    name, separator, detail = outcome.partition(": ")
    return kind, detail if separator else name


def describe(event):
    """Returns `(kind, message)` for one recorded intervention.

    Args:
        event: a dict with `step`, `kind`, `signal` and `outcome` (without
            `kind`, as in older reports: the kind the outcome names).

    Returns:
        The event's kind (`"rollback"`, `"restore"`, ...; one of `KINDS`,
        `"other"` when an older report's outcome names none) and a one-line
        message naming the step and the signal.
    """
    signal = event.get("signal") or "unknown"
    kind, detail = _kind_and_detail(event)
    text = KINDS.get(kind)
    what = text.format(detail=detail) if text else detail
    return kind, f"step {event.get('step')}: {what} (signal: {signal})."


def describe_jump(jump):
    """Returns the one-line message of an accepted jump.

    Args:
        jump: a dict with `step`, `accepted_scale`, `base_loss` (the checked
            loss of the weights it replaced; `None` when unchecked) and
            `tried` (`(scale, checked loss)` pairs).

    Returns:
        `"step N: jumped the weights ahead (scale S)."`, with the checked
        losses before and after when the jump was checked.
    """
    scale = jump.get("accepted_scale")
    detail = f"scale {scale:g}"
    base = jump.get("base_loss")
    checked = [loss for s, loss in jump.get("tried") or () if s == scale]
    if base is not None and checked:
        detail += f"; check loss {base:.4g} -> {checked[0]:.4g}"
    return f"step {jump.get('step')}: jumped the weights ahead ({detail})."


class InterventionLog:
    """Reports new jumps and interventions, the first of each kind per
    epoch, and at the epoch's end how often they repeated.

    Args:
        printer: called with each message line (e.g.
            `keras.utils.io_utils.print_msg`).
        prefix: put before every line.
        ignore: kinds of intervention neither printed nor counted (they
            stay in the report), e.g. `("shorter_predictions",)` where the
            PREDICT length is fixed and a shorter horizon changes nothing.

    Example:

    ```python
    log = InterventionLog(keras.utils.io_utils.print_msg)
    log.update(runner.stats.events, epoch, jumps=runner.stats.jumps)
    # Epoch 1, HybridPredictCallback: step 93: jumped the weights ahead
    # (scale 10).
    log.end_epoch(epoch)
    ```
    """

    def __init__(self, printer, prefix="HybridPredictCallback", ignore=()):
        self.printer = printer
        self.prefix = prefix
        self.ignore = frozenset(ignore)
        # Events and jumps already reported (a resumed run sets them to the
        # lengths of the lists it restored: their run reported those).
        self.seen = 0
        self.seen_jumps = 0
        self.counts = collections.Counter()
        self.jumps = 0

    def start_epoch(self):
        """Forgets which kinds were reported (new epoch)."""
        self.counts.clear()
        self.jumps = 0

    def update(self, events, epoch, jumps=()):
        """Reports the events and accepted jumps after the ones already
        seen.

        Args:
            events: the runner's list of event dicts (only grows during one
                `fit()`).
            epoch: the current epoch (0-based), shown 1-based.
            jumps: the runner's list of jump dicts (`stats.jumps`, only
                grows during one `fit()`); a rejected one is reported as its
                event (`restore`).
        """
        if len(jumps) < self.seen_jumps:  # a new run's list
            self.seen_jumps = 0
        for jump in jumps[self.seen_jumps:]:
            if jump.get("accepted_scale") is None:
                continue
            self.jumps += 1
            if self.jumps == 1:
                self._print(epoch, describe_jump(jump))
        self.seen_jumps = len(jumps)
        if len(events) < self.seen:  # a new run's list
            self.seen = 0
        for event in events[self.seen:]:
            kind, message = describe(event)
            if kind in self.ignore:
                continue
            self.counts[kind] += 1
            if self.counts[kind] == 1:
                self._print(epoch, message)
        self.seen = len(events)

    def _print(self, epoch, message):
        self.printer(f"\nEpoch {epoch + 1}, {self.prefix}: {message}")

    def end_epoch(self, epoch):
        """Reports how often jumps and each kind of intervention repeated
        during the epoch: `"jumps this epoch: 2; interventions: restore
        x2."` (without jumps: `"interventions this epoch: restore x2."`)."""
        if self.jumps > 1 or any(c > 1 for c in self.counts.values()):
            kinds = ", ".join(f"{kind} x{count}"
                              for kind, count in sorted(self.counts.items()))
            if self.jumps:
                text = f"jumps this epoch: {self.jumps}"
                if kinds:
                    text += f"; interventions: {kinds}"
            else:
                text = f"interventions this epoch: {kinds}"
            self.printer(f"Epoch {epoch + 1}, {self.prefix}: {text}.")
        self.start_epoch()
