"""Bandits that choose PREDICT-phase lengths, and the rewards they learn from.

Each arm is a phase length (a positive number of steps). `UCB1` ignores the
training state; `LinUCB` conditions its choice on a context vector (e.g.
recent loss slope, calibrated confidence, residual size).
"""

import math

import numpy as np

DEFAULT_CONFIDENCE_THRESHOLD = 0.85  # `HybridConfig.confidence_threshold`.


def _check_arms(arms):
    arms = list(arms) if arms is not None else []
    if not arms:
        raise ValueError(
            f"`arms` must be a non-empty list. Received: arms={arms}")
    for arm in arms:
        if isinstance(arm, bool) or not isinstance(arm, (int, np.integer)) \
                or arm < 1:
            raise ValueError(
                "`arms` must be positive integers (phase lengths). "
                f"Received: arms={arms}")
    arms = [int(a) for a in arms]
    if len(set(arms)) != len(arms):
        raise ValueError(f"`arms` must be distinct. Received: arms={arms}")
    return arms


def _check_reward(reward):
    if isinstance(reward, bool) or not isinstance(
            reward, (int, float, np.integer, np.floating)) \
            or not math.isfinite(reward):
        raise ValueError(
            f"`reward` must be a finite number. Received: reward={reward!r}")
    return float(reward)


class _Bandit:
    def __init__(self, arms):
        self.arms = _check_arms(arms)

    def _index(self, arm):
        try:
            return self.arms.index(arm)
        except ValueError:
            raise ValueError(
                f"`arm` must be one of {self.arms}. Received: arm={arm!r}"
            ) from None


class UCB1(_Bandit):
    """UCB1: `argmax mean_a + sqrt(exploration * ln(N) / n_a)`.

    Every arm is pulled once first (in order); ties go to the lowest index.
    The bonus assumes rewards of order 1 (e.g. `phase_reward`).

    Args:
        arms: distinct phase lengths (positive ints).
        exploration: the bonus constant; 2.0 is the classic UCB1.
    """

    def __init__(self, arms, exploration=2.0):
        super().__init__(arms)
        if not math.isfinite(exploration) or exploration < 0:
            raise ValueError(
                "`exploration` must be a finite number >= 0. "
                f"Received: exploration={exploration!r}")
        self.exploration = float(exploration)
        self.counts = [0] * len(self.arms)
        self.sums = [0.0] * len(self.arms)

    @property
    def means(self):
        return [s / c if c else 0.0 for s, c in zip(self.sums, self.counts)]

    def select(self, context=None):
        """Returns the arm (phase length) to play; `context` is ignored."""
        del context
        for i, count in enumerate(self.counts):
            if count == 0:
                return self.arms[i]
        counts = np.asarray(self.counts, dtype=np.float64)
        bonus = np.sqrt(self.exploration * math.log(counts.sum()) / counts)
        return self.arms[int(np.argmax(np.asarray(self.means) + bonus))]

    def update(self, arm, reward, context=None):
        """Records `reward` for the arm with value `arm`."""
        del context
        i = self._index(arm)
        self.counts[i] += 1
        self.sums[i] += _check_reward(reward)

    def get_state(self):
        return {"arms": list(self.arms), "exploration": self.exploration,
                "counts": list(self.counts), "sums": list(self.sums)}

    def set_state(self, state):
        self.__init__(state["arms"], state["exploration"])
        self.counts = [int(c) for c in state["counts"]]
        self.sums = [float(s) for s in state["sums"]]

    def memory_mb(self):
        return 3 * 8 * len(self.arms) / 2**20


class LinUCB(_Bandit):
    """Disjoint LinUCB: a ridge regression of the reward per arm.

    Arm `a` keeps `A_a = l2 * I + sum x x^T` and `b_a = sum r x`, and scores
    `theta_a . x + alpha * sqrt(x^T A_a^-1 x)` with `theta_a = A_a^-1 b_a`.
    Ties go to the lowest index. Include a constant feature in the context
    for a per-arm intercept.

    Args:
        arms: distinct phase lengths (positive ints).
        context_dim: length of the context vectors.
        alpha: width of the confidence bonus.
        l2: ridge penalty (> 0).
    """

    def __init__(self, arms, context_dim, alpha=1.0, l2=1.0):
        super().__init__(arms)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) \
                or context_dim < 1:
            raise ValueError(
                "`context_dim` must be an integer >= 1. "
                f"Received: context_dim={context_dim!r}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(
                "`alpha` must be a finite number >= 0. "
                f"Received: alpha={alpha!r}")
        if not math.isfinite(l2) or l2 <= 0:
            raise ValueError(
                f"`l2` must be a finite number > 0. Received: l2={l2!r}")
        self.context_dim = context_dim
        self.alpha = float(alpha)
        self.l2 = float(l2)
        k = len(self.arms)
        self._a = np.tile(self.l2 * np.eye(context_dim), (k, 1, 1))
        self._b = np.zeros((k, context_dim))
        self.counts = [0] * k

    def _check_context(self, context):
        x = None if context is None else np.asarray(context, dtype=np.float64)
        if x is None or x.shape != (self.context_dim,) \
                or not np.all(np.isfinite(x)):
            raise ValueError(
                f"`context` must be a finite vector of shape "
                f"({self.context_dim},). Received: context={context!r}")
        return x

    def scores(self, context):
        """Upper confidence bound of every arm for `context`."""
        x = self._check_context(context)
        theta = np.linalg.solve(self._a, self._b[..., None])[..., 0]
        a_inv_x = np.linalg.solve(self._a, np.broadcast_to(
            x, self._b.shape)[..., None])[..., 0]
        width = np.sqrt(np.maximum(a_inv_x @ x, 0.0))
        return theta @ x + self.alpha * width

    def select(self, context=None):
        """Returns the arm (phase length) with the highest bound."""
        return self.arms[int(np.argmax(self.scores(context)))]

    def update(self, arm, reward, context=None):
        """Adds the observation `(context, reward)` to arm `arm`."""
        i = self._index(arm)
        x = self._check_context(context)
        reward = _check_reward(reward)
        self._a[i] += np.outer(x, x)
        self._b[i] += reward * x
        self.counts[i] += 1

    def get_state(self):
        return {"arms": list(self.arms), "context_dim": self.context_dim,
                "alpha": self.alpha, "l2": self.l2,
                "a": self._a.tolist(), "b": self._b.tolist(),
                "counts": list(self.counts)}

    def set_state(self, state):
        self.__init__(state["arms"], state["context_dim"], state["alpha"],
                      state["l2"])
        self._a = np.asarray(state["a"], dtype=np.float64).reshape(
            self._a.shape)
        self._b = np.asarray(state["b"], dtype=np.float64).reshape(
            self._b.shape)
        self.counts = [int(c) for c in state["counts"]]

    def memory_mb(self):
        return (self._a.nbytes + self._b.nbytes) / 2**20


def phase_reward(backward_saved, loss_penalty, penalty_weight=1.0):
    """Reward of one PREDICT phase: savings minus the loss it cost.

    `reward = backward_saved - penalty_weight * max(loss_penalty, 0)`,
    clipped to [-1, 1]. A loss improvement (`loss_penalty < 0`) earns
    nothing extra: over a short phase it is mostly noise.

    Args:
        backward_saved: fraction in [0, 1] of the backward passes skipped.
        loss_penalty: relative loss change against the FULL-phase baseline,
            e.g. `loss_after / loss_expected - 1`; >= 0 means worse.
        penalty_weight: how many saved passes (as a fraction) one unit of
            relative loss penalty is worth; >= 0.

    Returns:
        The reward, a float in [-1, 1].
    """
    if not 0.0 <= backward_saved <= 1.0:
        raise ValueError(
            "`backward_saved` must be in [0, 1]. "
            f"Received: backward_saved={backward_saved!r}")
    if not math.isfinite(loss_penalty):
        raise ValueError(
            "`loss_penalty` must be finite. "
            f"Received: loss_penalty={loss_penalty!r}")
    if not math.isfinite(penalty_weight) or penalty_weight < 0:
        raise ValueError(
            "`penalty_weight` must be a finite number >= 0. "
            f"Received: penalty_weight={penalty_weight!r}")
    reward = backward_saved - penalty_weight * max(loss_penalty, 0.0)
    return float(min(max(reward, -1.0), 1.0))


def auto_tune_confidence(history, target_quality, min_count=1,
                         max_loss_ratio=None,
                         default=DEFAULT_CONFIDENCE_THRESHOLD):
    """Smallest confidence threshold whose predictions are good enough.

    Among the records with `confidence >= threshold`, the fraction that
    succeeded must be at least `target_quality`. A record succeeds when it
    was accepted and, if `max_loss_ratio` is given, its `loss_ratio` is at
    most `max_loss_ratio`.

    Args:
        history: list of `(confidence, accepted, loss_ratio)` records.
        target_quality: required success rate, in [0, 1].
        min_count: records that must lie above a threshold for it to count.
        max_loss_ratio: optional cap on `loss_ratio` for a success.
        default: returned for an empty history (0.85, the default
            `HybridConfig.confidence_threshold`).

    Returns:
        A threshold in [0.05, 0.95]; 0.95 when no threshold qualifies.
    """
    if not 0.0 <= target_quality <= 1.0:
        raise ValueError(
            "`target_quality` must be in [0, 1]. "
            f"Received: target_quality={target_quality!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) \
            or min_count < 1:
        raise ValueError(
            "`min_count` must be an integer >= 1. "
            f"Received: min_count={min_count!r}")
    records = list(history)
    if not records:
        return float(default)
    conf, success = [], []
    for record in records:
        if len(record) != 3:
            raise ValueError(
                "`history` records must be (confidence, accepted, loss_ratio). "
                f"Received: record={record!r}")
        c, accepted, loss_ratio = record
        if not 0.0 <= c <= 1.0 or math.isnan(loss_ratio):
            raise ValueError(
                "`history` records need a confidence in [0, 1] and a "
                f"non-NaN loss_ratio. Received: record={record!r}")
        ok = bool(accepted) and (max_loss_ratio is None
                                 or loss_ratio <= max_loss_ratio)
        conf.append(float(c))
        success.append(ok)
    conf, success = np.asarray(conf), np.asarray(success, dtype=np.float64)
    candidates = np.unique(np.concatenate(
        [[0.05], conf[(conf > 0.05) & (conf <= 0.95)]]))
    for threshold in candidates:
        above = conf >= threshold
        count = int(above.sum())
        if count >= min_count and success[above].mean() >= target_quality:
            return float(threshold)
    return 0.95
