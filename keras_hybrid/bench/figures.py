"""Pure functions that turn raw arm results into benchmark figures.

Nothing here runs a model: every function takes plain Python data (the dicts
that `keras_hybrid.bench.arms.run_arm` returns) so it can be tested directly.
"""

import math

import numpy as np

# Relative slack of the time-to-target: the target is the same seed's
# baseline final validation loss times (1 + TARGET_SLACK).
TARGET_SLACK = 0.01

# Figures of one arm, in table order.
ARM_FIGURES = (
    "wall_clock_s",
    "backward_passes",
    "forward_passes",
    "final_val_loss",
    "best_val_loss",
    "final_test_loss",
    "final_val_acc",
    "best_val_acc",
    "time_to_target_s",
    "backward_to_target",
    "peak_memory_mb",
    "steps",
    "predictor_overhead_pct",
    "predictor_memory_mb",
)

# The same-budget references of each hybrid arm (`<reference>-<p>`).
SAME_BUDGET_REFERENCES = ("equal-budget", "truncated", "wsd")

# Figures compared pair by pair (arm / reference) in the ratios.
RATIO_FIGURES = (
    "wall_clock_s",
    "backward_passes",
    "final_val_loss",
    "best_val_loss",
    "final_test_loss",
    "time_to_target_s",
    "backward_to_target",
)

# Internal targets of the overhead figures (printed by `keras-hybrid bench
# --profile`).
TARGETS = {
    "full_over_plain": 1.05,
    "predict_over_full": 0.45,
    "skip_over_full": 0.05,
    "predictor_overhead_pct": 5.0,
}
# The PREDICT/FULL target is stated for this task only.
PREDICT_TARGET_TASK = "stdlib-lm"


def _finite(value):
    return (
        value is not None
        and not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(float(value))
    )


def target_loss(baseline_final_loss, slack=TARGET_SLACK):
    """The validation loss an arm must reach to count as "at target".

    Args:
        baseline_final_loss: the final validation loss of the same seed's
            baseline arm.
        slack: relative slack (0.01: 1% above the baseline's final loss).

    Returns:
        `loss + slack * |loss|` (for positive losses, `loss * (1 + slack)`),
        or `None` if the baseline loss is missing or not finite.
    """
    if not _finite(baseline_final_loss):
        return None
    loss = float(baseline_final_loss)
    return loss + slack * abs(loss)


def time_to_target(points, target):
    """First wall-clock time at which the validation loss is at target.

    Args:
        points: iterable of `(wall_clock_s, val_loss)` pairs in training
            order. Non-finite losses never count as reached.
        target: the loss to reach (`<=`), or `None`.

    Returns:
        The wall-clock seconds of the first point with `val_loss <= target`,
        or `None` if it is never reached (or `target` is `None`).
    """
    if target is None:
        return None
    for seconds, loss in points:
        if _finite(loss) and float(loss) <= target:
            return float(seconds)
    return None


def backward_to_target(evals, target):
    """Backward passes run when the validation loss first reaches `target`
    (compute-to-target).

    Args:
        evals: the validation records of an arm in training order (dicts
            with `val_loss`, `step` and, for arms that skip backward passes,
            `backward`: the backward passes run by then; without it the
            step counts them). Non-finite losses never count as reached.
        target: the loss to reach (`<=`), or `None`.

    Returns:
        The backward passes at the first record with `val_loss <= target`,
        or `None` if it is never reached (or `target` is `None`).
    """
    if target is None:
        return None
    for record in evals:
        loss = record.get("val_loss")
        if _finite(loss) and float(loss) <= target:
            count = record.get("backward")
            return int(record["step"] if count is None else count)
    return None


def ratio(numerator, denominator):
    """`numerator / denominator`, or `None` if either is missing, non-finite
    or the denominator is zero."""
    if not (_finite(numerator) and _finite(denominator)):
        return None
    if float(denominator) == 0.0:
        return None
    return float(numerator) / float(denominator)


def aggregate(values, missing_is_worst=False):
    """Median and spread of one figure over seeds.

    Args:
        values: one value per seed; `None` (or non-finite) marks a value that
            is missing (e.g. a target that was not reached).
        missing_is_worst: treat a missing value as +infinity instead of
            dropping it (right for time-to-target: "not reached" is slower
            than any time). A median or bound that is infinite is `None`.

    Returns:
        A dict `{"median", "min", "max", "n", "missing"}`: `n` counts the
        seeds given, `missing` those without a value. The statistics are
        `None` when they cannot be computed.
    """
    values = list(values)
    present = [float(v) for v in values if _finite(v)]
    missing = len(values) - len(present)
    if missing_is_worst:
        present = present + [math.inf] * missing
    if not present:
        stats = {"median": None, "min": None, "max": None}
    else:
        stats = {
            "median": float(np.median(present)),
            "min": float(np.min(present)),
            "max": float(np.max(present)),
        }
        stats = {k: (v if math.isfinite(v) else None) for k, v in stats.items()}
    stats["n"] = len(values)
    stats["missing"] = missing
    return stats


def eval_points(result):
    """The `(wall_clock_s, val_loss)` pairs of an arm result."""
    return [(e["time_s"], e["val_loss"]) for e in result["evals"]]


def _extreme(values, pick):
    values = [float(v) for v in values if _finite(v)]
    return pick(values) if values else None


def arm_figures(result, target):
    """The figures of one arm run.

    Args:
        result: a dict returned by `run_arm`.
        target: the target validation loss (see `target_loss`) or `None`.

    Returns:
        A dict with every name in `ARM_FIGURES`.
    """
    evals = result["evals"]
    last = evals[-1] if evals else {}
    report = result.get("report") or {}
    overhead = report.get("predictor_overhead") or {}
    return {
        "wall_clock_s": result["wall_clock_s"],
        "backward_passes": result["backward_passes"],
        "forward_passes": result["forward_passes"],
        "final_val_loss": last.get("val_loss"),
        "best_val_loss": _extreme([e["val_loss"] for e in evals], min),
        "final_test_loss": result.get("final_test_loss"),
        "final_val_acc": last.get("val_acc"),
        "best_val_acc": _extreme([e["val_acc"] for e in evals], max),
        "time_to_target_s": time_to_target(eval_points(result), target),
        "backward_to_target": backward_to_target(evals, target),
        "peak_memory_mb": result["peak_memory_mb"],
        "steps": result["steps"],
        "predictor_overhead_pct": overhead.get("pct_of_step_time"),
        "predictor_memory_mb": overhead.get("memory_used_mb"),
    }


def truncated_figures(baseline, budget, target):
    """The figures of the baseline run read at step `budget`.

    This is the "truncated" same-budget reference: what the baseline had
    reached after as many backward passes as a hybrid arm ran, on the
    baseline's own (unshortened) schedule.

    Args:
        baseline: the baseline arm's `run_arm` result, with a probe (see
            `keras_hybrid.bench.arms.EvalClock`) at step `budget`, or with
            `budget` steps in all (then its final figures are used).
        budget: the step count.
        target: the target validation loss or `None`.

    Returns:
        A dict with every name in `ARM_FIGURES`.

    Raises:
        ValueError: if the baseline has no measurement at step `budget`.
    """
    evals = [e for e in baseline["evals"] if e["step"] <= budget]
    probe = next(
        (p for p in baseline.get("probes") or () if p["step"] == budget), None
    )
    if probe is None and baseline["steps"] == budget:
        last = baseline["evals"][-1]
        probe = {**last, "test_loss": baseline.get("final_test_loss")}
    if probe is None:
        raise ValueError(
            "The baseline has no probe at the hybrid's backward count. "
            f"Received: budget={budget}, probes="
            f"{[p['step'] for p in baseline.get('probes') or ()]}"
        )
    points = [(e["time_s"], e["val_loss"]) for e in evals]
    points.append((probe["time_s"], probe["val_loss"]))
    return {
        "wall_clock_s": step_time(baseline["clock"], budget),
        "backward_passes": budget,
        "forward_passes": budget,
        "final_val_loss": probe["val_loss"],
        "best_val_loss": _extreme([v for _, v in points], min),
        "final_test_loss": probe.get("test_loss"),
        "final_val_acc": probe.get("val_acc"),
        "best_val_acc": _extreme(
            [e["val_acc"] for e in evals] + [probe.get("val_acc")], max
        ),
        "time_to_target_s": time_to_target(points, target),
        "backward_to_target": backward_to_target(
            evals + [{**probe, "step": budget}], target
        ),
        "peak_memory_mb": baseline["peak_memory_mb"],
        "steps": budget,
        "predictor_overhead_pct": None,
        "predictor_memory_mb": None,
    }


def pair_ratios(figures, reference):
    """Ratios `figures / reference` for every name in `RATIO_FIGURES`."""
    return {
        name: ratio(figures.get(name), reference.get(name))
        for name in RATIO_FIGURES
    }


def ratio_pairs(arm_names):
    """The `(arm, reference)` pairs compared in the ratios.

    Each `hybrid-<p>` is compared with `baseline` and with its own
    same-budget references (`equal-budget-<p>`, `truncated-<p>`,
    `wsd-<p>`); each `equal-budget-<p>` and `wsd-<p>` with `baseline`.
    """
    pairs = []
    for name in arm_names:
        if name.startswith("hybrid-"):
            predictor = name[len("hybrid-"):]
            pairs.append((name, "baseline"))
            for reference in SAME_BUDGET_REFERENCES:
                pairs.append((name, f"{reference}-{predictor}"))
    for name in arm_names:
        if name.startswith(("equal-budget-", "wsd-")):
            pairs.append((name, "baseline"))
    return [(a, b) for a, b in pairs if b in arm_names]


def seed_ratios(arms):
    """All pair ratios of one seed.

    Args:
        arms: dict `arm name -> figures` of one seed.

    Returns:
        A dict `"arm/reference" -> {figure: ratio}`.
    """
    return {
        f"{a}/{b}": pair_ratios(arms[a], arms[b])
        for a, b in ratio_pairs(list(arms))
    }


def aggregate_seeds(per_seed):
    """Aggregates per-seed figure dicts.

    Args:
        per_seed: list (one entry per seed) of dicts
            `key -> {figure: value}` (arms, or ratio pairs).

    Returns:
        A dict `key -> {figure: aggregate(...)}`. Time-to-target figures of
        arms treat "not reached" as the worst value; a missing ratio is
        dropped (and counted in `missing`).
    """
    keys = []
    for entry in per_seed:
        keys += [k for k in entry if k not in keys]
    out = {}
    for key in keys:
        entries = [entry.get(key) or {} for entry in per_seed]
        names = []
        for e in entries:
            names += [n for n in e if n not in names]
        out[key] = {
            name: aggregate(
                [e.get(name) for e in entries],
                missing_is_worst=(
                    name in ("time_to_target_s", "backward_to_target")
                    and "/" not in key
                ),
            )
            for name in names
        }
    return out


def step_time(clock, step):
    """Training wall-clock seconds at the end of `step` (0 at step 0).

    Args:
        clock: `clock[i]` is the wall-clock at the end of step `i + 1`.
        step: a step count; clamped to the steps recorded.
    """
    if step <= 0 or not clock:
        return 0.0
    return float(clock[min(step, len(clock)) - 1])


def phases_in_time(phases, clock):
    """Adds `start_s` and `end_s` (training wall-clock) to phase records.

    Args:
        phases: the `phases` list of a hybrid training report
            (`start_step`, `length`, ...).
        clock: the per-step wall clock of the same run.

    Returns:
        A new list of phase dicts.
    """
    out = []
    for record in phases:
        record = dict(record)
        start = int(record["start_step"])
        record["start_s"] = step_time(clock, start)
        record["end_s"] = step_time(clock, start + int(record["length"]))
        out.append(record)
    return out


def overhead_figures(task_name, profile, predictor_stats):
    """The overhead figures of a task, with their targets.

    Args:
        task_name: the task's name (the PREDICT target is stated for
            `PREDICT_TARGET_TASK` only).
        profile: dict of median call times in ms, as returned by
            `keras_hybrid.bench.arms.profile_task` (`plain_ms`, `full_ms`,
            `predict_ms`, `skip_ms`).
        predictor_stats: dict `predictor -> {"pct": aggregate,
            "memory_mb": aggregate}` from the hybrid arms' reports.

    Returns:
        A dict with the raw times, the step split, the ratios and a list
        `checks` of `{name, value, target, applies, ok}`.
    """
    plain = profile.get("plain_ms")
    full = profile.get("full_ms")
    forward = profile.get("predict_ms")
    values = {
        "full_over_plain": ratio(full, plain),
        "predict_over_full": ratio(forward, full),
        "skip_over_full": ratio(profile.get("skip_ms"), full),
    }
    checks = [
        _check("full_over_plain", values, True),
        _check(
            "predict_over_full", values, task_name == PREDICT_TARGET_TASK
        ),
        _check("skip_over_full", values, True),
    ]
    for predictor, stats in predictor_stats.items():
        pct = stats["pct"]["median"]
        checks.append({
            "name": f"predictor_overhead_pct[{predictor}]",
            "value": pct,
            "target": TARGETS["predictor_overhead_pct"],
            "applies": True,
            "ok": None if pct is None
            else pct <= TARGETS["predictor_overhead_pct"],
            "memory_mb": stats["memory_mb"]["median"],
        })
    split = {
        "forward_ms": forward,
        "backward_ms": _diff(plain, forward),
        "overhead_ms": _diff(full, plain),
    }
    return {**profile, **values, "step_split": split, "checks": checks}


def _diff(a, b):
    return None if not (_finite(a) and _finite(b)) else float(a) - float(b)


def _check(name, values, applies):
    value = values[name]
    target = TARGETS[name]
    ok = None if value is None or not applies else value <= target
    return {"name": name, "value": value, "target": target,
            "applies": applies, "ok": ok}
