"""The benchmark's verdict in words: one sentence per hybrid arm of a task,
and a note when arms that do the same work differ in wall-clock by more than
the noise the run itself shows."""

import numpy as np

from keras_hybrid.bench.figures import TARGET_SLACK


def _seed_figure(entry, arm, name):
    """The figure `name` of `arm` in each seed (`None` where missing)."""
    return [
        (seed["arms"].get(arm) or {}).get("figures", {}).get(name)
        for seed in entry["per_seed"]
    ]


def hybrid_arms(entry):
    """The names of a task's hybrid arms, in order."""
    names = entry["per_seed"][0]["arms"] if entry["per_seed"] else {}
    return [n for n in names if n.startswith("hybrid-")]


def verdict(entry, arm):
    """One sentence: did `arm` reach the target loss sooner than the
    baseline?

    Args:
        entry: a task entry of `bench.json`.
        arm: a hybrid arm name, e.g. `"hybrid-drift"`.

    Returns:
        A sentence such as "hybrid-drift reached the target 23% sooner than
        the baseline (median of 3 seeds; sooner in 3 of 3)." The target is
        the baseline's final validation loss x (1 + `TARGET_SLACK`).
    """
    hybrid = _seed_figure(entry, arm, "time_to_target_s")
    base = _seed_figure(entry, "baseline", "time_to_target_s")
    n = len(hybrid)
    pairs = [(h, b) for h, b in zip(hybrid, base)
             if h is not None and b is not None and b > 0]
    reached = sum(h is not None for h in hybrid)
    seeds = f"{n} seed" + ("s" if n != 1 else "")
    if not pairs:
        return (f"{arm} did not reach the target (the baseline's final "
                f"validation loss x {1 + TARGET_SLACK:g}) in "
                + ("any of " if n > 1 else "") + f"{seeds}.")
    ratios = [h / b for h, b in pairs]
    median = float(np.median(ratios))
    sooner = sum(r < 1.0 for r in ratios)
    change = abs(1.0 - median) * 100
    where = "sooner" if median < 1.0 else "later"
    basis = "1 seed" if n == 1 else (
        f"median of {len(pairs)} seeds; sooner in {sooner} of {n}"
    )
    sentence = (f"{arm} reached the target {change:.0f}% {where} than the "
                f"baseline ({basis})")
    if reached < n:
        sentence += f"; it did not reach it in {n - reached} of {seeds}"
    return sentence + "."


def run_noise(entry):
    """The relative wall-clock noise the run itself shows.

    With several seeds: the spread (max - min) / median of the baseline's
    training wall-clock over seeds (every seed does the same work). With one
    seed: the spread of the baseline's time per step between its validation
    points (equal work each, the first interval, which traces, left out).

    Returns:
        `(noise, how)`: a fraction and a description, or `(None, None)`.
    """
    walls = [w for w in _seed_figure(entry, "baseline", "wall_clock_s")
             if w]
    if len(walls) >= 2:
        return ((max(walls) - min(walls)) / float(np.median(walls)),
                f"baseline wall-clock spread over {len(walls)} seeds")
    seeds = entry["per_seed"]
    evals = (seeds[0]["arms"].get("baseline") or {}).get("evals", []) \
        if seeds else []
    rates = [
        (b["time_s"] - a["time_s"]) / (b["step"] - a["step"])
        for a, b in zip(evals[1:], evals[2:]) if b["step"] > a["step"]
    ]
    if len(rates) >= 2:
        return ((max(rates) - min(rates)) / float(np.median(rates)),
                "spread of the baseline's time per step between validation "
                "points")
    return None, None


def timing_note(entry):
    """A warning when same-work arms differ beyond the run's own noise.

    `equal-budget-<p>` trains as many plain steps as `truncated-<p>` (the
    baseline read at the same backward count): their wall-clocks should
    agree within the noise.

    Returns:
        A sentence, or `None` when they agree (or cannot be compared).
    """
    noise, how = run_noise(entry)
    if noise is None:
        return None
    notes = []
    for arm in hybrid_arms(entry):
        predictor = arm[len("hybrid-"):]
        equal = _seed_figure(entry, f"equal-budget-{predictor}",
                             "wall_clock_s")
        truncated = _seed_figure(entry, f"truncated-{predictor}",
                                 "wall_clock_s")
        ratios = [a / b for a, b in zip(equal, truncated) if a and b]
        if not ratios:
            continue
        median = float(np.median(ratios))
        if abs(median - 1.0) > noise:
            notes.append(
                f"equal-budget-{predictor} and truncated-{predictor} train "
                f"the same steps but their wall-clock differs by "
                f"{abs(median - 1.0) * 100:.0f}%"
            )
    if not notes:
        return None
    return (
        "note: " + "; ".join(notes) + f", more than the run's own noise "
        f"({noise * 100:.0f}%, {how}): the machine's speed changed during "
        "the run (other load?), so compare its wall-clock figures with care."
    )


def lines(entry):
    """The verdict lines printed under a task's table."""
    out = ["verdict: " + verdict(entry, arm) for arm in hybrid_arms(entry)]
    note = timing_note(entry)
    if note:
        out.append(note)
    return out
