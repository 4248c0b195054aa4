"""`QuietBackoff`: quiet FULL phases while prediction does not pay.

A fitting FULL phase trains and fits the predictor (and may start a PREDICT
phase); a quiet one only trains, so that what the predictor costs is paid
ever more rarely while its predictions are not accepted. Fitting phases
then come in windows of `QUIET_WINDOW`, separated by stretches of
`1, 2, 4, ...` quiet phases (at most `HybridConfig.max_quiet_phases`). An
accepted prediction ends the back-off.
"""

# Fitting FULL phases in a row before a quiet stretch: the first gives a
# fresh drift, the second scores a shadow prediction against it and may
# start a PREDICT phase.
QUIET_WINDOW = 2


class QuietBackoff:
    """Which FULL phases are quiet.

    Args:
        max_quiet_phases: the longest quiet stretch (0: no quiet phases).

    Example:

    ```python
    backoff = QuietBackoff(max_quiet_phases=4)
    backoff.missed()   # False: the window is not over
    backoff.missed()   # True: one quiet phase follows
    backoff.quiet      # True
    ```
    """

    def __init__(self, max_quiet_phases):
        self.max_quiet_phases = max_quiet_phases
        # Quiet FULL phases still to run.
        self.quiet_left = 0
        # Windows in a row that ended without an accepted prediction.
        self.misses = 0
        # Fitting phases so far in the current window.
        self.window = 0

    @property
    def quiet(self):
        """Whether the current FULL phase is quiet (fits nothing)."""
        return self.quiet_left > 0

    @property
    def at_stretch_end(self):
        """Whether no quiet phase follows the current one (a fitting phase,
        or the last of a quiet stretch): where the rollback point moves."""
        return self.quiet_left <= 1

    def quiet_phase_done(self):
        """A quiet phase ended."""
        self.quiet_left -= 1

    def missed(self):
        """A fitting FULL phase ended without a prediction.

        Returns:
            Whether a quiet stretch starts now (at the end of a window of
            `QUIET_WINDOW` such phases): the next `2 ** misses` FULL phases,
            at most `max_quiet_phases`, are quiet.
        """
        self.window += 1
        limit = self.max_quiet_phases
        if not limit or self.window < QUIET_WINDOW:
            return False
        self.window = 0
        self.quiet_left = min(limit, 2 ** min(self.misses, 30))
        self.misses += 1
        return True

    def paid(self):
        """A prediction was accepted: no back-off."""
        self.misses = self.window = 0

    def rejected(self):
        """A prediction was rejected: the window closes at the next phase
        end that does not predict."""
        self.window = max(self.window, QUIET_WINDOW - 1)

    def get_state(self):
        return {"quiet_left": self.quiet_left, "misses": self.misses,
                "window": self.window}

    def set_state(self, state):
        self.quiet_left = int(state["quiet_left"])
        self.misses = int(state["misses"])
        self.window = int(state["window"])
