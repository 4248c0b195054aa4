"""`run_headroom`: the most a perfect dynamics model could gain on a task.

A dynamics model that predicted exactly what the skipped backward passes
would have done would make a hybrid run follow the baseline's own curve. It
would end at the baseline's final validation loss after only
`fraction * N` of the baseline's `N` backward passes. Whether that beats
training for fewer steps is then a question about plain training alone. For
each seed this module runs, each arm in its own fresh subprocess:

1. `baseline`: plain `fit` for the task's epochs, probed at every budget
   `round(fraction * N)` (the baseline read there is the `truncated`
   reference of `keras-hybrid bench`);
2. `equal-budget@<fraction>`: plain `fit` for `round(fraction * N)` steps
   with the task's recipe compressed to them (the `equal-budget` arm of
   `keras-hybrid bench`; under a constant learning rate, a linear decay to
   zero);
3. `wsd@<fraction>`: plain `fit` for the same budget with the peak learning
   rate held, then a linear cooldown to zero over its last 20% (the `wsd`
   arm of `keras-hybrid bench`).

A separate subprocess per task times the compiled step functions (as the
benchmark's overhead section does), which bounds the perfect predictor's
wall-clock from below: `fraction` of the steps at the cost of a hybrid FULL
step, the rest at the cost of a forward-only PREDICT step (`per_step` mode)
or of a skipped step (`jump` mode), against plain steps. The bound leaves out
the forward checks, the predictor's own work and the phase changes, so a
real hybrid is slower.

Where the baseline's final loss is not lower than a reference's beyond the
seed spread, a hybrid that skips `1 - fraction` of the backward passes cannot
beat that reference by predicting them, however accurate the predictor. It
could still win through something that is not prediction (the averaged
weights a PREDICT phase starts from, for one). Where the perfect predictor
does win, the margin is the headroom a real predictor competes for.
"""

import datetime
import os
import shlex
import sys
import time

from keras_hybrid.bench import figures
from keras_hybrid.bench import harness
from keras_hybrid.bench import table
from keras_hybrid.bench.summary import beats
from keras_hybrid.serialization import clean_json

SCHEMA_VERSION = 1
DEFAULT_FRACTIONS = (0.5, 0.75, 0.9)
REFERENCES = ("equal-budget", "truncated", "wsd")


def run_headroom(tasks, seeds=3, fractions=DEFAULT_FRACTIONS, quick=False,
                 out_dir="headroom_out", backend=None, progress=True,
                 epochs=None, profile_calls=harness.PROFILE_CALLS,
                 schedule="constant"):
    """Runs the perfect-predictor comparison and writes `headroom.json`.

    Args:
        tasks: a task name, `"all"`, a task object, or a list of names and
            task objects (see `keras_hybrid.bench.harness.run_benchmark`).
        seeds: number of seeds (seeds `0 .. seeds - 1`).
        fractions: the shares of the baseline's backward passes a perfect
            predictor would run, each in (0, 1).
        quick: build named tasks at their quick sizes.
        out_dir: where `headroom.json` goes.
        backend: `"tensorflow"`, `"jax"` or `"torch"` for the arm
            subprocesses; `None` inherits this process's environment.
        progress: print progress lines and the tables.
        epochs: if set, overrides every task's number of epochs.
        profile_calls: timed calls per step function (the speed bound).
        schedule: the learning-rate recipe, `"constant"` or `"cosine"`
            (see `keras_hybrid.bench.schedules`); the equal-budget arms
            compress it.

    Returns:
        The `headroom.json` content as a dict.
    """
    from keras_hybrid.bench import schedules

    schedules.check_schedule(schedule)
    task_list = harness._resolve_tasks(tasks, quick)
    n_seeds = harness._check_positive_int("seeds", seeds)
    if epochs is not None:
        harness._check_positive_int("epochs", epochs)
    fractions = check_fractions(fractions)
    harness._check_positive_int("profile_calls", profile_calls)
    backend = harness._check_backend(backend)
    log = harness._printer(progress)
    os.makedirs(out_dir, exist_ok=True)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "headroom",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command_line": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": harness.machine_info(),
        "versions": harness.package_versions(),
        "backend": backend or os.environ.get("KERAS_BACKEND", "tensorflow"),
        "quick": bool(quick),
        "seeds": list(range(n_seeds)),
        "fractions": list(fractions),
        "schedule": schedule,
        "tasks": {},
    }
    path = os.path.join(out_dir, "headroom.json")
    start = time.perf_counter()
    for task, payload in task_list:
        entry = _run_task(task, payload, n_seeds, fractions, quick, backend,
                          epochs, profile_calls, log, schedule)
        result["tasks"][task.name] = entry
        result["elapsed_s"] = time.perf_counter() - start
        harness._write_json(result, path)
        if progress:
            print(markdown_table({"tasks": {task.name: entry}}), flush=True)
    log(f"wrote {path} ({time.perf_counter() - start:.0f}s)")
    return clean_json(result)


def check_fractions(fractions):
    """Validates `fractions`; returns them sorted, without repeats.

    Raises:
        ValueError: if `fractions` is empty or a value is not a number in
            (0, 1).
    """
    if isinstance(fractions, (int, float)):
        fractions = [fractions]
    values = list(fractions or ())
    if not values or any(
        isinstance(f, bool) or not isinstance(f, (int, float))
        or not 0.0 < float(f) < 1.0
        for f in values
    ):
        raise ValueError(
            "`fractions` must be a non-empty list of numbers in (0, 1), the "
            "shares of the baseline's backward passes a perfect predictor "
            f"would run. Received: fractions={fractions!r}"
        )
    return tuple(sorted({float(f) for f in values}))


def budget_of(fraction, steps):
    """The backward passes of a perfect predictor that runs `fraction` of
    `steps` (at least 1)."""
    return max(1, int(round(fraction * steps)))


def speed_bound(profile, fraction):
    """A perfect predictor's wall-clock / the baseline's, at best.

    Args:
        profile: median call times in ms (`plain_ms`, `full_ms`,
            `predict_ms`, `skip_ms`), as returned by
            `keras_hybrid.bench.profile.profile_task`.
        fraction: the share of steps that run a backward pass.

    Returns:
        A dict `{"per_step", "jump"}`: `fraction` of the steps at the hybrid
        FULL step's cost and the rest at the forward-only PREDICT step's
        (`per_step`) or the skipped step's (`jump`), over plain steps.
        `None` where a time is missing.
    """
    plain, full = profile.get("plain_ms"), profile.get("full_ms")
    out = {}
    for mode, key in (("per_step", "predict_ms"), ("jump", "skip_ms")):
        rest = profile.get(key)
        out[mode] = figures.ratio(
            None if full is None or rest is None
            else fraction * full + (1.0 - fraction) * rest,
            plain,
        )
    return out


def fraction_key(fraction):
    """The JSON key of a fraction (`0.75` -> `"0.75"`)."""
    return format(fraction, "g")


# =============================================================== per task
def _run_task(task, payload, n_seeds, fractions, quick, backend, epochs,
              profile_calls, log, schedule="constant"):
    from keras_hybrid.config import HybridConfig

    common = harness.arm_common(task, payload, quick, epochs, schedule)
    epochs, eval_every = common["epochs"], common["eval_every"]
    steps = epochs * int(task.steps_per_epoch)
    budgets = {fraction_key(f): budget_of(f, steps) for f in fractions}
    log(f"[{task.name}] profiling step functions (seed 0)")
    profile = harness._run_isolated("profile_task", {
        **common, "seed": 0, "calls": profile_calls,
        "config": HybridConfig.resolve("balanced").to_dict(),
    }, backend, f"[{task.name}] profile")
    per_seed = []
    for seed in range(n_seeds):
        def run(name, **spec):
            label = f"[{task.name}] {name} seed {seed + 1}/{n_seeds}"
            log(f"{label} start")
            out = harness._run_isolated("run_arm", {
                **common, **spec, "name": name, "seed": seed,
                "label": label, "progress": log.enabled,
            }, backend, label)
            log(f"{label} done: train {out['wall_clock_s']:.1f}s, backward "
                f"{out['backward_passes']}")
            return out

        baseline = run("baseline", arm="baseline",
                       probe_steps=sorted(set(budgets.values())))
        equal = {
            key: run(f"equal-budget@{key}", arm="equal-budget", budget=budget)
            for key, budget in budgets.items()
        }
        wsd = {
            key: run(f"wsd@{key}", arm="wsd", budget=budget)
            for key, budget in budgets.items()
        }
        per_seed.append(seed_entry(seed, baseline, equal, budgets, wsd))
    return {
        "description": getattr(task, "description", None),
        "settings": harness._settings(task, epochs, eval_every, schedule),
        "budgets": budgets,
        "profile": profile,
        "per_seed": per_seed,
        "rows": headroom_rows(per_seed, budgets, profile),
    }


def seed_entry(seed, baseline, equal, budgets, wsd=None):
    """The figures of one seed.

    Args:
        seed: the seed.
        baseline: the baseline's `run_arm` result, probed at every budget.
        equal: `fraction key -> equal-budget run_arm result`.
        budgets: `fraction key -> budget`.
        wsd: `fraction key -> wsd run_arm result`, or `None` (no `wsd`
            figures).

    Returns:
        A dict with the seed, the `perfect` figures (the baseline's final
        ones, reached with fewer backward passes) and, per fraction key, the
        `equal-budget`, `truncated` and (with `wsd`) `wsd` figures.
    """
    target = figures.target_loss(
        baseline["evals"][-1]["val_loss"] if baseline["evals"] else None
    )
    perfect = figures.arm_figures(baseline, target)
    entry = {"seed": seed, "perfect": perfect, "fractions": {}}
    for key, budget in budgets.items():
        refs = {
            "equal-budget": figures.arm_figures(equal[key], target),
            "truncated": figures.truncated_figures(baseline, budget, target),
        }
        if wsd is not None:
            refs["wsd"] = figures.arm_figures(wsd[key], target)
        entry["fractions"][key] = {
            "budget": budget,
            **refs,
            "ratios": {
                name: figures.ratio(perfect["final_val_loss"],
                                    ref["final_val_loss"])
                for name, ref in refs.items()
            },
        }
    return entry


def headroom_rows(per_seed, budgets, profile=None):
    """One row per fraction, over seeds.

    Args:
        per_seed: `seed_entry` dicts.
        budgets: `fraction key -> budget`.
        profile: the task's step times (see `speed_bound`), or `None`.

    Returns:
        A list of dicts: `fraction`, `budget`, `skipped` (the share of
        backward passes skipped), `perfect` (the aggregate final validation
        loss), and per reference name its aggregate final validation loss,
        the aggregate per-seed ratio perfect / reference, and whether the
        perfect predictor beats it beyond the seed spread (`summary.beats`),
        and `speed_bound` (see `speed_bound`; `None` without a profile).
    """
    perfect = [s["perfect"]["final_val_loss"] for s in per_seed]
    rows = []
    for key, budget in budgets.items():
        row = {
            "fraction": float(key),
            "budget": budget,
            "skipped": 1.0 - float(key),
            "perfect": figures.aggregate(perfect),
            "speed_bound": None if profile is None
            else speed_bound(profile, float(key)),
        }
        for name in REFERENCES:
            if any(name not in s["fractions"][key] for s in per_seed):
                continue  # headroom.json written before the wsd arms
            values = [s["fractions"][key][name]["final_val_loss"]
                      for s in per_seed]
            row[name] = {
                "final_val_loss": figures.aggregate(values),
                "ratio": figures.aggregate(
                    [s["fractions"][key]["ratios"][name] for s in per_seed]
                ),
                "beats": beats(perfect, values),
            }
        rows.append(row)
    return rows


# ================================================================= output
def _yes_no(flag):
    return "n/a" if flag is None else ("yes" if flag else "no")


def _bound(bound):
    if not bound:
        return "n/a"
    return (f"{table.fmt(bound['per_step'], '.2f')} / "
            f"{table.fmt(bound['jump'], '.2f')}")


def markdown_table(result):
    """One Markdown row per task and fraction of a `headroom.json`.

    The reference columns are those every row has (`wsd` only in files
    written since headroom runs the wsd arms).
    """
    rows = [row for entry in result["tasks"].values()
            for row in entry["rows"]]
    refs = [name for name in REFERENCES
            if all(name in row for row in rows)]
    lines = [
        "| task | backward run | skipped | budget | perfect (baseline final "
        "val loss) | "
        + "".join(f"{name} | " for name in refs)
        + "".join(f"perfect / {name} | " for name in refs)
        + f"perfect beats {' / '.join(refs)} beyond spread | perfect "
        "wall-clock / baseline, at best (per_step / jump) |",
        "| --- " * (7 + 2 * len(refs)) + "|",
    ]
    for name, entry in result["tasks"].items():
        for row in entry["rows"]:
            lines.append(
                f"| {name} | {row['fraction']:.0%} | {row['skipped']:.0%} | "
                f"{row['budget']} | {table.cell(row['perfect'], '.4f')} | "
                + "".join(f"{table.cell(row[r]['final_val_loss'], '.4f')} | "
                          for r in refs)
                + "".join(f"{table.cell(row[r]['ratio'], '.3f')} | "
                          for r in refs)
                + " / ".join(_yes_no(row[r]["beats"]) for r in refs)
                + f" | {_bound(row.get('speed_bound'))} |"
            )
    return "\n".join(lines)
