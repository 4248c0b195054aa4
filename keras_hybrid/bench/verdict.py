"""The benchmark's verdict in words, per hybrid arm of a task: the share of
backward passes it skipped, whether it beat the best plain reference (final
validation loss against each), its cost per step against plain `fit()` next
to its gain at equal wall-clock, its wall-clock against plain `fit()`, and
where to look next; and a note when arms that do the same work differ in
wall-clock by more than the noise the run itself shows."""

import os

import numpy as np

from keras_hybrid.bench import summary
from keras_hybrid.bench.figures import SAME_BUDGET_REFERENCES
from keras_hybrid.bench.figures import TARGET_SLACK
from keras_hybrid.bench.figures import ratio


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


def _median(values):
    values = [float(v) for v in values if ratio(v, 1.0) is not None]
    return float(np.median(values)) if values else None


def _seed_ratios(entry, arm, reference, name):
    """`arm / reference` of the figure `name`, per seed where both exist."""
    pairs = zip(_seed_figure(entry, arm, name),
                _seed_figure(entry, reference, name))
    return [r for r in (ratio(a, b) for a, b in pairs) if r is not None]


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def _seeds_basis(entry):
    """"seed 0", or "median of seeds 0-2"."""
    seeds = [s.get("seed") for s in entry["per_seed"]]
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"median of seeds {seeds[0]}-{seeds[-1]}"


def plain_references(entry, arm):
    """The plain-`fit()` arms `arm` is judged against: the baseline and its
    same-budget references (`equal-budget-`, `truncated-`, `wsd-<p>`)."""
    predictor = arm[len("hybrid-"):]
    names = ["baseline"] + [f"{r}-{predictor}" for r in
                            SAME_BUDGET_REFERENCES]
    present = entry["per_seed"][0]["arms"] if entry["per_seed"] else {}
    return [n for n in names if n in present]


def skipped_share(entry, arm):
    """The share of `arm`'s steps that ran no backward pass, per seed."""
    return [
        None if not steps or backward is None else 1.0 - backward / steps
        for backward, steps in zip(_seed_figure(entry, arm, "backward_passes"),
                                   _seed_figure(entry, arm, "steps"))
    ]


def _predictions(entry, arm):
    """`(accepted, attempted)` predictions over the seeds."""
    accepted = attempted = 0
    for seed in entry["per_seed"]:
        report = (seed["arms"].get(arm) or {}).get("report") or {}
        s = report.get("training_summary") or {}
        accepted += s.get("predictions_accepted") or 0
        attempted += s.get("predictions_attempted") or 0
    return accepted, attempted


def skipped_line(entry, arm):
    """How many backward passes `arm` skipped, and its predictions."""
    shares = skipped_share(entry, arm)
    accepted, attempted = _predictions(entry, arm)
    predictions = f"{accepted} of {attempted} predictions accepted"
    if len(shares) == 1 and shares[0] is not None:
        steps = _seed_figure(entry, arm, "steps")[0]
        backward = _seed_figure(entry, arm, "backward_passes")[0]
        return (f"backward passes skipped: {shares[0] * 100:.1f}% "
                f"({steps - backward} of {steps} steps; {predictions})")
    present = [s for s in shares if s is not None]
    if not present:
        return f"backward passes skipped: n/a ({predictions})"
    return (f"backward passes skipped: {_median(present) * 100:.1f}% "
            f"[{min(present) * 100:.1f}-{max(present) * 100:.1f}%] "
            f"({_seeds_basis(entry)}; {predictions})")


def best_reference(entry, arm):
    """The plain reference with the lowest (median) final validation loss,
    or `None`."""
    scored = [
        (loss, name) for name in plain_references(entry, arm)
        if (loss := _median(_seed_figure(entry, name, "final_val_loss")))
        is not None
    ]
    return min(scored)[1] if scored else None


def _change(entry, arm, reference, name="final_val_loss"):
    """The median relative change `arm / reference - 1`, or `None`."""
    ratios = _seed_ratios(entry, arm, reference, name)
    return None if not ratios else float(np.median(ratios)) - 1.0


def _relation(change):
    if abs(change) < 0.0005:
        return "the same as"
    return f"{abs(change) * 100:.1f}% {'below' if change < 0 else 'above'}"


def beat_lines(entry, arm):
    """Whether `arm` beat the best plain reference on the final validation
    loss (beyond the seed spread, see `summary.beats`), and its final
    validation loss against each reference."""
    best = best_reference(entry, arm)
    mine = _seed_figure(entry, arm, "final_val_loss")
    change = None if best is None else _change(entry, arm, best)
    if change is None:
        return ["beat the best plain reference? n/a (a final validation "
                "loss is missing)"]
    won = summary.beats(mine, _seed_figure(entry, best, "final_val_loss"))
    best_loss = _median(_seed_figure(entry, best, "final_val_loss"))
    text = (f"beat the best plain reference? {'yes' if won else 'no'}: "
            f"final validation loss {_fmt(_median(mine), '.4f')}, "
            f"{_relation(change)} {best} ({best_loss:.4f})")
    if not won and change < -0.0005:
        text += ", within the spread over seeds"
    each = []
    for name in plain_references(entry, arm):
        loss = _median(_seed_figure(entry, name, "final_val_loss"))
        delta = _change(entry, arm, name)
        each.append(f"{name} {_fmt(loss, '.4f')}" + (
            "" if delta is None else f" (hybrid {delta * 100:+.1f}%)"))
    return [text, "  final validation loss of each: " + ", ".join(each)]


def time_to_target_clause(entry, arm):
    """When `arm` reached the target loss against the baseline, e.g.
    "reached the target 23% sooner than the baseline (sooner in 3 of 3
    seeds)". The target is the baseline's final validation loss x (1 +
    `TARGET_SLACK`)."""
    hybrid = _seed_figure(entry, arm, "time_to_target_s")
    base = _seed_figure(entry, "baseline", "time_to_target_s")
    n = len(hybrid)
    pairs = [(h, b) for h, b in zip(hybrid, base)
             if h is not None and b is not None and b > 0]
    reached = sum(h is not None for h in hybrid)
    seeds = f"{n} seed" + ("s" if n != 1 else "")
    target = (f"the target (the baseline's final validation loss x "
              f"{1 + TARGET_SLACK:g})")
    if not pairs:
        return (f"did not reach {target} in "
                + ("any of " if n > 1 else "") + seeds)
    ratios = [h / b for h, b in pairs]
    median = float(np.median(ratios))
    sooner = sum(r < 1.0 for r in ratios)
    change = abs(1.0 - median) * 100
    where = "sooner" if median < 1.0 else "later"
    text = f"reached {target} {change:.0f}% {where} than the baseline"
    if n > 1:
        text += f" (sooner in {sooner} of {n} seeds)"
    if reached < n:
        text += f"; it did not reach it in {n - reached} of {seeds}"
    return text


def _loss_by(evals, seconds):
    """The validation loss of the last validation point at or before
    `seconds` of training (`None` if there is none)."""
    losses = [e.get("val_loss") for e in evals or ()
              if e.get("time_s") is not None and e["time_s"] <= seconds]
    return losses[-1] if losses else None


def _seed_evals(entry, arm):
    return [(seed["arms"].get(arm) or {}).get("evals") or []
            for seed in entry["per_seed"]]


def equal_wall_clock(entry, arm):
    """`arm` and the baseline after the same training time, per seed.

    The time is the shorter of the two runs' training wall-clock; each
    arm's validation loss is that of its last validation point by then.

    Returns:
        `(seconds, arm_loss, baseline_loss)` per seed where both exist.
    """
    out = []
    walls = zip(_seed_figure(entry, arm, "wall_clock_s"),
                _seed_figure(entry, "baseline", "wall_clock_s"),
                _seed_evals(entry, arm), _seed_evals(entry, "baseline"))
    for mine, plain, my_evals, plain_evals in walls:
        if not mine or not plain:
            continue
        seconds = min(mine, plain)
        pair = (_loss_by(my_evals, seconds), _loss_by(plain_evals, seconds))
        if ratio(*pair) is not None:
            out.append((seconds, *pair))
    return out


def _ms_per_step(entry, arm):
    return [
        None if not wall or not steps else 1e3 * wall / steps
        for wall, steps in zip(_seed_figure(entry, arm, "wall_clock_s"),
                               _seed_figure(entry, arm, "steps"))
    ]


def _spread(values, spec):
    """`" [min-max]"` of several values, `""` of one."""
    if len(values) < 2:
        return ""
    return f" [{min(values):{spec}}-{max(values):{spec}}]"


def cost_line(entry, arm):
    """What `arm` costs per training step against plain `fit()` (the
    baseline), and its validation loss against the baseline's after the
    same training time: its gain at equal wall-clock.

    Example: "cost per step: 5.50 ms against 4.25 ms for plain fit()
    (1.29x); at equal wall-clock (3.4 s of training, the shorter run) its
    validation loss was 3.0% above the baseline's (0.8300 against 0.8060;
    the last validation of each by then)".
    """
    pairs = [(a, b) for a, b in zip(_ms_per_step(entry, arm),
                                    _ms_per_step(entry, "baseline"))
             if a is not None and b is not None]
    if not pairs:
        return "cost per step: n/a (a wall-clock or step count is missing)"
    ratios = [a / b for a, b in pairs]
    text = (f"cost per step: {_median([a for a, _ in pairs]):.2f} ms "
            f"against {_median([b for _, b in pairs]):.2f} ms for plain "
            f"fit() ({_median(ratios):.2f}x{_spread(ratios, '.2f')})")
    same = equal_wall_clock(entry, arm)
    if not same:
        return text + "; at equal wall-clock: n/a (no validation points)"
    changes = [a / b - 1.0 for _, a, b in same]
    change = _median(changes)
    text += (
        f"; at equal wall-clock ({_median([t for t, _, _ in same]):.1f} s "
        f"of training, the shorter run) its validation loss was "
        f"{_relation(change)} the baseline's"
    )
    if len(changes) > 1:
        text += (f" ({', '.join(f'{c * 100:+.1f}%' for c in changes)} "
                 "per seed)")
    else:
        _, mine, plain = same[0]
        text += (f" ({mine:.4f} against {plain:.4f}; the last validation "
                 "of each by then)")
    return text


def wall_clock_line(entry, arm):
    """`arm`'s training wall-clock against plain `fit()` (the baseline)."""
    mine = _median(_seed_figure(entry, arm, "wall_clock_s"))
    plain = _median(_seed_figure(entry, "baseline", "wall_clock_s"))
    ratios = _seed_ratios(entry, arm, "baseline", "wall_clock_s")
    text = (f"wall-clock: {_fmt(mine, '.1f')} s of training against "
            f"{_fmt(plain, '.1f')} s for plain fit() (the baseline)")
    if ratios:
        text += f", {float(np.median(ratios)):.2f}x"
    return f"{text}; it {time_to_target_clause(entry, arm)}"


def next_lines(entry, arm, out_dir=None, profile=False):
    """Where to look next (and what to try when nothing was skipped)."""
    out = []
    shares = [s for s in skipped_share(entry, arm) if s is not None]
    if shares and max(shares) == 0.0 and _predictions(entry, arm)[0] == 0:
        out.append(
            "nothing was skipped: no prediction was accepted, so every batch "
            "got its backward pass, as in plain fit(). Try --config aggressive, "
            "or a task whose loss is still falling (--task stdlib-lm; see "
            "the README, 'Will it help?')."
        )
    places = []
    plot = entry.get("plot")
    if plot:
        path = os.path.join(out_dir, plot) if out_dir else plot
        places.append(f"{path} plots each arm's validation loss against "
                      f"wall-clock (seed {entry['per_seed'][0]['seed']})")
    places.append("the tables above compare the arms figure by figure")
    if not profile:
        places.append("--profile adds the step-time checks")
    out.append("next: " + "; ".join(places) + ".")
    return out


def verdict(entry, arm, out_dir=None, profile=False):
    """The verdict lines of one hybrid arm.

    Args:
        entry: a task entry of `bench.json`.
        arm: a hybrid arm name, e.g. `"hybrid-drift"`.
        out_dir: where the task's PNG was written (named in the last line).
        profile: whether the step-time checks were printed.

    Returns:
        Lines: a heading, the share of backward passes skipped, whether
        the arm beat the best plain reference (and its final validation
        loss against each), its cost per step against plain `fit()` with
        its gain at equal wall-clock, its wall-clock against plain
        `fit()`, and where to look next.
    """
    return (
        [f"verdict for {arm} ({_seeds_basis(entry)}):",
         "  " + skipped_line(entry, arm)]
        + ["  " + line for line in beat_lines(entry, arm)]
        + ["  " + cost_line(entry, arm)]
        + ["  " + wall_clock_line(entry, arm)]
        + ["  " + line for line in next_lines(entry, arm, out_dir, profile)]
    )


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


def lines(entry, out_dir=None, profile=False):
    """The verdict lines printed under a task's table (see `verdict`)."""
    out = []
    for arm in hybrid_arms(entry):
        out += verdict(entry, arm, out_dir, profile)
    note = timing_note(entry)
    if note:
        out.append(note)
    return out
