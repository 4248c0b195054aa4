"""Calibration of the predictors' raw confidences.

A raw confidence is calibrated when, among the predictions made with
confidence `p`, a fraction `p` holds. `ConfidenceCalibrator` learns the map
from raw confidence to that probability online from `(raw, outcome)` pairs.
"""

import collections

import numpy as np

from keras_hybrid.validators import check_int

METHODS = ("temperature", "binning")
_EPS = 1e-6


def _check_confidences(confidences, name="confidences"):
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(confidences)) or np.any(
            (confidences < 0.0) | (confidences > 1.0)):
        raise ValueError(
            f"`{name}` must be finite values in [0, 1]. "
            f"Received: {name}={confidences.tolist()[:10]}...")
    return confidences


def _bin_index(confidences, num_bins):
    return np.minimum((confidences * num_bins).astype(np.int64), num_bins - 1)


def expected_calibration_error(confidences, outcomes, num_bins=10):
    """Expected calibration error over equal-width confidence bins.

    `ECE = sum_b (n_b / N) * |mean(outcomes in b) - mean(confidences in b)|`,
    bins `[k / num_bins, (k + 1) / num_bins)` (the last one closed).

    Args:
        confidences: confidences in [0, 1].
        outcomes: 0/1 outcomes (or booleans), same length.
        num_bins: number of bins.

    Returns:
        The ECE as a float in [0, 1]; 0.0 for empty inputs.
    """
    check_int("num_bins", num_bins, 1)
    confidences = _check_confidences(confidences)
    outcomes = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if outcomes.shape != confidences.shape:
        raise ValueError(
            "`outcomes` must have the same length as `confidences`. "
            f"Received: len(outcomes)={outcomes.size}, "
            f"len(confidences)={confidences.size}")
    if np.any((outcomes != 0.0) & (outcomes != 1.0)):
        raise ValueError(
            "`outcomes` must be 0 or 1. "
            f"Received: outcomes={outcomes.tolist()[:10]}...")
    if confidences.size == 0:
        return 0.0
    bins = _bin_index(confidences, num_bins)
    count = np.bincount(bins, minlength=num_bins)
    conf_sum = np.bincount(bins, weights=confidences, minlength=num_bins)
    out_sum = np.bincount(bins, weights=outcomes, minlength=num_bins)
    return float(np.sum(np.abs(out_sum - conf_sum)) / confidences.size)


def _logit(p):
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class ConfidenceCalibrator:
    """Online calibration of raw confidences.

    `"temperature"`: `calibrated = sigmoid(logit(raw) / T + bias)`, with `T`
    (and `bias` when `fit_bias`) minimizing the negative log-likelihood of
    the history plus a weak Gaussian prior towards `T = 1, bias = 0`
    (deterministic damped Newton steps).

    `"binning"`: equal-width histogram binning; a bin with `k` successes out
    of `n` gives `(k + 2 * centre) / (n + 2)`, Laplace smoothing towards the
    bin's centre (the classic add-one rule for the middle bin), so that empty
    bins keep their raw confidence.

    Args:
        method: `"temperature"` or `"binning"`.
        num_bins: bins of the binning method and of `ece()`.
        min_samples: outcomes needed before calibrating; identity before.
        history_size: most recent outcomes kept.
        fit_bias: whether the temperature method fits a bias too.
    """

    def __init__(self, method="temperature", num_bins=10, min_samples=20,
                 history_size=512, fit_bias=True):
        if method not in METHODS:
            raise ValueError(
                f"`method` must be one of {METHODS}. "
                f"Received: method={method!r}")
        check_int("num_bins", num_bins, 1)
        check_int("min_samples", min_samples, 1)
        check_int("history_size", history_size, 1)
        self.method = method
        self.num_bins = num_bins
        self.min_samples = min_samples
        self.history_size = history_size
        self.fit_bias = bool(fit_bias)
        self._raw = collections.deque(maxlen=history_size)
        self._outcomes = collections.deque(maxlen=history_size)
        self.inverse_temperature = 1.0
        self.bias = 0.0
        self.bin_probabilities = self._bin_centres().tolist()
        self._stale = False

    def _bin_centres(self):
        return (np.arange(self.num_bins) + 0.5) / self.num_bins

    @property
    def temperature(self):
        self._refit()
        return 1.0 / self.inverse_temperature

    @property
    def num_samples(self):
        return len(self._raw)

    @property
    def active(self):
        """Whether enough outcomes were seen to calibrate."""
        return len(self._raw) >= self.min_samples

    def update(self, raw_confidence, outcome):
        """Records the outcome (0/1 or bool) of a raw confidence."""
        raw = float(_check_confidences([raw_confidence], "raw_confidence")[0])
        if outcome not in (0, 1):  # True/False compare equal to 1/0.
            raise ValueError(
                f"`outcome` must be 0 or 1. Received: outcome={outcome!r}")
        self._raw.append(raw)
        self._outcomes.append(int(outcome))
        self._stale = True

    # ---------------------------------------------------------------- fit
    def _refit(self):
        if not self._stale:
            return
        self._stale = False
        if not self.active:
            return
        raw = np.asarray(self._raw)
        y = np.asarray(self._outcomes, dtype=np.float64)
        if self.method == "binning":
            bins = _bin_index(raw, self.num_bins)
            count = np.bincount(bins, minlength=self.num_bins)
            hits = np.bincount(bins, weights=y, minlength=self.num_bins)
            probs = (hits + 2.0 * self._bin_centres()) / (count + 2.0)
            self.bin_probabilities = probs.tolist()
        else:
            a, b = self._fit_temperature(_logit(raw), y)
            self.inverse_temperature, self.bias = float(a), float(b)

    def _fit_temperature(self, z, y, prior=1.0, iterations=30):
        """Damped Newton on `NLL(a, b) + prior / 2 * ((a - 1)^2 + b^2)`."""
        feats = np.stack([z, np.ones_like(z)], axis=1)
        if not self.fit_bias:
            feats = feats[:, :1]
        anchor = np.array([1.0, 0.0])[:feats.shape[1]]

        def loss(theta):
            s = feats @ theta
            nll = np.sum(np.logaddexp(0.0, s) - y * s)
            return nll + 0.5 * prior * np.sum((theta - anchor) ** 2)

        theta = anchor.copy()
        current = loss(theta)
        for _ in range(iterations):
            p = _sigmoid(feats @ theta)
            grad = feats.T @ (p - y) + prior * (theta - anchor)
            hess = (feats.T * (p * (1.0 - p))) @ feats + prior * np.eye(
                len(theta))
            step = np.linalg.solve(hess, grad)
            scale = 1.0
            while scale > 1e-4:
                candidate = theta - scale * step
                value = loss(candidate)
                if value <= current:
                    break
                scale *= 0.5
            else:
                break
            theta, improvement = candidate, current - value
            current = value
            if improvement < 1e-10 * max(1.0, abs(current)):
                break
        # A temperature must stay positive (and finite).
        a = float(np.clip(theta[0], 1e-2, 1e2))
        b = float(theta[1]) if self.fit_bias else 0.0
        return a, b

    # ---------------------------------------------------------- calibrate
    def calibrate(self, raw):
        """Maps raw confidence(s) in [0, 1] to calibrated probabilities.

        Args:
            raw: a float or an array of floats in [0, 1].

        Returns:
            A float for a scalar input, else a NumPy array of `raw`'s shape.
            The identity until `min_samples` outcomes were recorded.
        """
        scalar = np.ndim(raw) == 0
        shape = np.shape(raw)
        values = _check_confidences(raw, "raw")
        self._refit()
        if not self.active:
            out = values
        elif self.method == "binning":
            probs = np.asarray(self.bin_probabilities)
            out = probs[_bin_index(values, self.num_bins)]
        else:
            out = _sigmoid(
                self.inverse_temperature * _logit(values) + self.bias)
        return float(out[0]) if scalar else out.reshape(shape)

    def ece(self, calibrated=True):
        """ECE on the stored history (in-sample for the calibrated one).

        Args:
            calibrated: whether to score calibrated or raw confidences.
        """
        raw = np.asarray(self._raw, dtype=np.float64)
        conf = self.calibrate(raw) if calibrated else raw
        return expected_calibration_error(conf, list(self._outcomes),
                                          self.num_bins)

    # -------------------------------------------------------------- state
    def get_state(self):
        """History and fitted parameters as JSON-safe data."""
        self._refit()
        return {
            "config": {"method": self.method, "num_bins": self.num_bins,
                       "min_samples": self.min_samples,
                       "history_size": self.history_size,
                       "fit_bias": self.fit_bias},
            "raw": [float(v) for v in self._raw],
            "outcomes": [int(v) for v in self._outcomes],
            "inverse_temperature": float(self.inverse_temperature),
            "bias": float(self.bias),
            "bin_probabilities": [float(v) for v in self.bin_probabilities],
        }

    def set_state(self, state):
        """Restores `get_state()` output (configuration included)."""
        self.__init__(**state["config"])
        self._raw.extend(float(v) for v in state["raw"])
        self._outcomes.extend(int(v) for v in state["outcomes"])
        self.inverse_temperature = float(state["inverse_temperature"])
        self.bias = float(state["bias"])
        self.bin_probabilities = [float(v) for v in state["bin_probabilities"]]
        self._stale = False

    def memory_mb(self):
        """Megabytes held (history dominated; an estimate)."""
        return (len(self._raw) * 2 * 8 + self.num_bins * 8) / 2**20
