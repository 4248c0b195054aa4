"""Run statistics, the loss curve and the JSON training report.

Every figure in the report is measured during the run; one that was not
measured is `None` (JSON `null`), never invented. The wall-clock speedup needs
a baseline run, so it is always `None` here; `keras-hybrid bench` fills it.
"""

import collections
import json
import math
import os

import numpy as np

from keras_hybrid import distribution
from keras_hybrid.dynamics.calibration import expected_calibration_error
from keras_hybrid.phases import Phase
from keras_hybrid.serialization import clean_json

# 2: `training_summary.steps_by_phase` replaces `warmup_steps`,
# `full_steps`, `predict_steps` and `correct_steps` (steps spent in each
# phase, which the config's keys of the same names do not mean).
REPORT_VERSION = 2


class LossCurve:
    """The training loss against the step, at most `max_points` points: when
    full, the recording stride doubles and the points off it are dropped.

    Args:
        max_points: the bound on the points kept (even, >= 2).
    """

    def __init__(self, max_points=1000):
        self.max_points = max_points
        self.stride = 1
        self.points = []

    def add(self, step, loss):
        """Records `loss` at `step` if `step` falls on the stride."""
        if step % self.stride:
            return
        self.points.append([int(step), float(loss)])
        while len(self.points) >= self.max_points:
            self.stride *= 2
            self.points = [p for p in self.points if p[0] % self.stride == 0]


_PHASE_NAMES = {int(p): p.name for p in Phase}


class RunStatistics:
    """Counters and timings of one hybrid `fit()`."""

    def __init__(self):
        self.steps = collections.Counter()
        self.backward = 0
        self.forward = 0
        self.corrections = 0
        self.quiet_phases = 0
        self.predictions_attempted = 0
        self.predictions_accepted = 0
        self.predictions_rejected = 0
        self.events = []
        self.jumps = []
        self.confidences = []
        self.weight_cosines = []
        self.loss_pairs = []
        self.shadow = []
        self.step_times = collections.defaultdict(list)
        self.overhead = collections.Counter()
        # Keras' `val_loss` at the end of the last epoch that validated.
        self.final_val_loss = None

    def count(self, phase, backward=0, forward=0, steps=0):
        # (Called once per step: `Phase(phase).name` costs more than the
        # rest of the call.)
        self.steps[_PHASE_NAMES[phase]] += steps
        self.backward += backward
        self.forward += forward

    def add_time(self, kind, seconds):
        self.step_times[kind].append(seconds)

    def add_overhead(self, kind, seconds):
        self.overhead[kind] += seconds

    def event(self, step, kind, signal, outcome):
        """Records an intervention.

        Args:
            step: the step it happened at.
            kind: what was done, one of `keras_hybrid.messages.KINDS`
                (`"rollback"`, `"restore"`, ...).
            signal: what caused it (`"non_finite_loss"`, ...).
            outcome: what it did, in words (with the details: the step
                rolled back to, the new learning rate).
        """
        self.events.append({"step": int(step), "kind": kind,
                            "signal": signal, "outcome": outcome})

    def loss_prediction(self, predicted, actual):
        if predicted is not None and actual is not None:
            self.loss_pairs.append((float(predicted), float(actual)))

    def shadow_check(self, cosine, error, predicted_loss, actual_loss,
                     confidence, success):
        """Records a prediction checked against the next real FULL phase."""
        self.shadow.append([
            float(cosine), float(error),
            None if predicted_loss is None else float(predicted_loss),
            float(actual_loss), float(confidence), bool(success),
        ])

    @property
    def total_steps(self):
        return int(sum(self.steps.values()))

    def backward_reduction(self):
        total = self.total_steps
        return 0.0 if total == 0 else 1.0 - self.backward / total

    def median_step_time(self, kind):
        """Median seconds of one call of `kind`, skipping the first (trace)."""
        times = self.step_times.get(kind, [])[1:]
        return float(np.median(times)) if times else None


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _correlation(pairs):
    if len(pairs) < 3:
        return None
    a, b = map(np.asarray, zip(*pairs))
    if np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def prediction_accuracy(stats):
    """How good the predictions were, measured against real outcomes.

    `checked_*`, `weight_*`, `loss_*` and `calibration_error` come from the
    shadow checks: at the end of every FULL phase the predictor predicts the
    next phase; when the next phase is FULL too, its real weight change and
    loss score that prediction (nothing was applied). `applied_loss_*`
    compare the predicted loss of applied PREDICT phases with the loss at
    the first step after them. `drift_consistency` is the cosine between
    consecutive phases' drifts.
    """
    shadow = stats.shadow
    pairs = [(r[2], r[3]) for r in shadow if r[2] is not None]
    applied = stats.loss_pairs
    ece = None
    if shadow:
        ece = expected_calibration_error(
            [min(max(r[4], 0.0), 1.0) for r in shadow],
            [bool(r[5]) for r in shadow],
        )
    return {
        "checked_predictions": len(shadow),
        "weight_cosine_similarity": _mean([r[0] for r in shadow]),
        "weight_relative_error": (
            float(np.median([r[1] for r in shadow])) if shadow else None
        ),
        "improving_share": (
            float(np.mean([r[5] for r in shadow])) if shadow else None
        ),
        "loss_mae": _mean([abs(p - a) for p, a in pairs]),
        "loss_correlation": _correlation(pairs),
        "calibration_error": ece,
        "applied_loss_mae": _mean([abs(p - a) for p, a in applied]),
        "applied_loss_correlation": _correlation(applied),
        "drift_consistency": _mean(stats.weight_cosines),
    }


def backward_work_saved_pct(runner):
    """The backward work the run did not do, as a percentage of one full
    backward pass per step: skipped steps save all of theirs, steps with
    frozen layer groups the share the groups' estimated cost says (see
    `LayerGroups.backward_work`)."""
    stats = runner.stats
    total = stats.total_steps
    if not total:
        return 0.0
    freezer = getattr(runner, "freezer", None)
    work = stats.backward if freezer is None else freezer.work(stats.backward)
    return 100.0 * (1.0 - work / total)


def build_report(runner):
    """Returns the training report of a runner as a JSON-safe dict.

    In `training_summary`, `steps_by_phase` counts the steps spent in each
    phase (`{"WARMUP": ..., "FULL": ..., "PREDICT": ..., "CORRECT": ...}`),
    `final_loss` is the training loss of the last
    step's logs (Keras' `loss`: the running mean over the last epoch) and
    `final_val_loss` the validation loss of the last epoch that validated
    (Keras' `val_loss`; `None` when `fit()` had no validation data).
    """
    stats = runner.stats
    history = runner.controller.history
    predicts = [r.length for r in history if r.phase == "PREDICT"]
    total_time = sum(sum(t) for t in stats.step_times.values())
    overhead_s = sum(stats.overhead.values())
    steps_seen = max(len(stats.step_times.get("full", [])), 1)
    summary = {
        "total_steps": stats.total_steps,
        # Steps spent in each phase (not the config's phase lengths).
        "steps_by_phase": {
            name: stats.steps[name] for name in _PHASE_NAMES.values()
        },
        "backward_passes": stats.backward,
        "forward_passes": stats.forward,
        "corrections": stats.corrections,
        "backward_reduction_pct": 100.0 * stats.backward_reduction(),
        "backward_work_saved_pct": backward_work_saved_pct(runner),
        "predictions_attempted": stats.predictions_attempted,
        "predictions_accepted": stats.predictions_accepted,
        "predictions_rejected": stats.predictions_rejected,
        "final_loss": runner.final_loss,
        "final_val_loss": stats.final_val_loss,
        "wall_time_s": runner.wall_time,
        "wall_clock_speedup": None,
    }
    phase_statistics = {
        "quiet_full_phases": stats.quiet_phases,
        "avg_predict_length": _mean(predicts),
        "max_predict_length": max(predicts) if predicts else None,
        "avg_confidence": _mean(stats.confidences),
        "prediction_accuracy": prediction_accuracy(stats),
        "median_call_time_ms": {
            kind: 1e3 * stats.median_step_time(kind)
            for kind in sorted(stats.step_times)
            if stats.median_step_time(kind) is not None
        },
    }
    overhead = {
        "encode_ms": 1e3 * stats.overhead["encode"] / steps_seen,
        "predict_ms": 1e3 * stats.overhead["predict"]
        / max(stats.predictions_attempted, 1),
        "update_ms": 1e3 * stats.overhead["update"]
        / max(sum(r.phase == "FULL" for r in history), 1),
        "memory_used_mb": (
            runner.predictor.memory_mb() if runner.predictor else None
        ),
        "pct_of_step_time": (
            100.0 * overhead_s / total_time if total_time > 0 else None
        ),
    }
    freezer = getattr(runner, "freezer", None)
    return clean_json({
        "version": REPORT_VERSION,
        "config": runner.config.to_dict(),
        "training_summary": summary,
        "freezing": (
            None if freezer is None else dict(
                freezer.summary(stats.backward),
                checks=(
                    runner.settle_check.decisions
                    if getattr(runner, "settle_check", None) else None
                ),
            )
        ),
        "phase_statistics": phase_statistics,
        "divergence_events": list(stats.events),
        "predictor_overhead": overhead,
        "jumps": list(stats.jumps),
        "outer_guard": (
            runner.outer_guard.summary()
            if getattr(runner, "outer_guard", None) else None
        ),
        "phases": [
            {
                "phase": r.phase,
                "start_step": r.start_step,
                "length": r.length,
                "planned_length": r.planned_length,
                "outcome": r.outcome,
                "confidence": r.confidence,
            }
            for r in history
            if r.length > 0
        ],
    })


def save_report(report, path):
    """Writes a report as JSON (atomically: temporary file, then rename).

    In a multi-process job only process 0 writes (the reports are the same).
    """
    path = os.fspath(path)
    if not distribution.is_writer():
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(clean_json(report), f, indent=2, allow_nan=False)
    os.replace(tmp, path)
    return path

