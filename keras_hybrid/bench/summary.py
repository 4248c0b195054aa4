"""The per-predictor summary of a `bench.json`: one Markdown row per task and
predictor, and the verdict against both same-budget references.

```
keras-hybrid summary bench_out/bench.json
```

Every figure is read from the file; nothing is re-run. A hybrid arm "beats"
a same-budget reference (`equal-budget`, `truncated`, `wsd`) when its median final validation loss is below the reference's
by more than the seed-to-seed spread (the larger of the two arms' max - min
over seeds), so with one seed any lower loss counts and the verdict says how
many seeds it rests on.
"""

import json

import numpy as np

from keras_hybrid.bench import figures
from keras_hybrid.bench import table

# (prediction_accuracy key, column title, format) of the shadow checks.
SHADOW_COLUMNS = (
    ("checked_predictions", "shadow checks", ".0f"),
    ("weight_cosine_similarity", "weight cosine", ".2f"),
    ("weight_relative_error", "rel. error", ".2f"),
    ("improving_share", "improving share", ".2f"),
    ("loss_mae", "loss MAE", ".3f"),
    ("loss_correlation", "loss corr.", ".2f"),
    ("calibration_error", "ECE", ".2f"),
)
# (reference arm prefix, column title) of the final-loss ratios.
REFERENCES = (
    ("baseline", "final val loss / baseline"),
    ("equal-budget", "/ equal-budget"),
    ("truncated", "/ truncated"),
    ("wsd", "/ wsd"),
)


def beats(values, references):
    """Whether `values` are lower than `references` beyond the seed spread.

    Args:
        values: the hybrid arm's figure, one per seed (`None` skipped).
        references: the reference arm's figure, one per seed.

    Returns:
        `True` if `median(references) - median(values)` exceeds the larger
        of the two ranges (max - min), `None` if either has no value.
    """
    values = [float(v) for v in values if v is not None]
    references = [float(v) for v in references if v is not None]
    if not values or not references:
        return None
    spread = max(np.ptp(values), np.ptp(references))
    return bool(np.median(references) - np.median(values) > spread)


def _per_seed(entry, arm, figure):
    return [
        (s["arms"].get(arm) or {}).get("figures", {}).get(figure)
        for s in entry["per_seed"]
    ]


def _shadow(entry, arm, key):
    values = []
    for seed in entry["per_seed"]:
        report = (seed["arms"].get(arm) or {}).get("report") or {}
        accuracy = (report.get("phase_statistics") or {}).get(
            "prediction_accuracy"
        ) or {}
        if accuracy.get(key) is not None:
            values.append(float(accuracy[key]))
    return float(np.median(values)) if values else None


def predictor_rows(result):
    """One dict per (task, predictor) of a `bench.json` content.

    Returns:
        A list of dicts: `task`, `predictor`, `seeds`, `skipped` (share of
        the baseline's backward passes not run, median), `ratios` (reference
        prefix -> aggregate of the final validation loss ratio),
        `test_ratio`, `wall_clock_ratio`, `time_to_target_ratio` and
        `backward_to_target_ratio` (compute-to-target; vs the baseline), `beats` (reference prefix -> `beats(...)`), `shadow`
        (prediction_accuracy key -> median over seeds) and
        `overhead_pct`.
    """
    rows = []
    for task, entry in result["tasks"].items():
        for predictor in result["predictors"]:
            arm = f"hybrid-{predictor}"
            if arm not in entry["aggregate"]:
                continue
            ratios = entry["ratios"]
            backward = ratios[f"{arm}/baseline"]["backward_passes"]
            mine = _per_seed(entry, arm, "final_val_loss")
            references = {
                prefix: prefix if prefix == "baseline"
                else f"{prefix}-{predictor}"
                for prefix, _ in REFERENCES
            }
            rows.append({
                "task": task,
                "predictor": predictor,
                "seeds": len(entry["per_seed"]),
                "skipped": None if backward["median"] is None
                else 1.0 - backward["median"],
                "ratios": {
                    prefix: ratios.get(f"{arm}/{name}", {}).get(
                        "final_val_loss"
                    )
                    for prefix, name in references.items()
                },
                "test_ratio": ratios[f"{arm}/baseline"].get("final_test_loss"),
                "wall_clock_ratio": ratios[f"{arm}/baseline"]["wall_clock_s"],
                "time_to_target_ratio": ratios[f"{arm}/baseline"][
                    "time_to_target_s"
                ],
                "backward_to_target_ratio": ratios[f"{arm}/baseline"].get(
                    "backward_to_target"
                ),
                "beats": {
                    prefix: beats(mine, _per_seed(entry, name,
                                                  "final_val_loss"))
                    for prefix, name in references.items()
                },
                "shadow": {
                    key: _shadow(entry, arm, key)
                    for key, _, _ in SHADOW_COLUMNS
                },
                "overhead_pct": entry["aggregate"][arm][
                    "predictor_overhead_pct"
                ]["median"],
            })
    return rows


def _verdict(row):
    marks = []
    for prefix in figures.SAME_BUDGET_REFERENCES:
        won = row["beats"].get(prefix)
        marks.append(
            f"{'n/a' if won is None else 'yes' if won else 'no'}"
        )
    return " / ".join(marks)


def markdown_table(result):
    """The per-predictor Markdown table and the bar lines of a bench.

    Args:
        result: the content of a `bench.json`.

    Returns:
        The text: a table (median [min-max] over seeds for the ratios,
        medians for the shadow figures) and one line per reference counting
        the tasks where some hybrid arm beats it.
    """
    rows = predictor_rows(result)
    header = (
        ["task", "predictor", "seeds", "backward skipped"]
        + [title for _, title in REFERENCES]
        + ["test loss / baseline", "wall-clock / baseline",
           "time-to-target / baseline", "backward-to-target / baseline",
           "beats equal-budget / truncated / wsd beyond spread"]
        + [title for _, title, _ in SHADOW_COLUMNS]
        + ["predictor overhead"]
    )
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for row in rows:
        cells = [
            row["task"], row["predictor"], str(row["seeds"]),
            table.fmt(None if row["skipped"] is None
                      else 100.0 * row["skipped"], ".1f") + "%",
        ]
        cells += [
            table.cell(row["ratios"][prefix], ".3f") for prefix, _ in REFERENCES
        ]
        cells += [
            table.cell(row["test_ratio"], ".3f"),
            table.cell(row["wall_clock_ratio"], ".2f"),
            table.cell(row["time_to_target_ratio"], ".2f", not_reached=True),
            table.cell(row.get("backward_to_target_ratio"), ".2f",
                       not_reached=True),
            _verdict(row),
        ]
        cells += [
            table.fmt(row["shadow"][key], spec)
            for key, _, spec in SHADOW_COLUMNS
        ]
        cells.append(table.fmt(row["overhead_pct"], ".1f") + "%")
        lines.append("| " + " | ".join(cells) + " |")
    tasks = list(result["tasks"])
    for prefix in figures.SAME_BUDGET_REFERENCES:
        won = sorted({r["task"] for r in rows if r["beats"].get(prefix)})
        lines.append("")
        lines.append(
            f"tasks where a hybrid arm beats {prefix} beyond the seed "
            f"spread: {len(won)}/{len(tasks)}"
            + (f" ({', '.join(won)})" if won else "")
        )
    both = sorted({
        r["task"] for r in rows
        if all(r["beats"].get(p) for p in figures.SAME_BUDGET_REFERENCES)
    })
    lines.append("")
    lines.append(
        f"tasks where one hybrid arm beats all three: {len(both)}/"
        f"{len(tasks)}"
        + (f" ({', '.join(both)})" if both else "")
    )
    return "\n".join(lines)


def load(path):
    """Reads a `bench.json` (or a `headroom.json`), with a clear error for
    anything else."""
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Could not read a bench.json. Received: path={path!r} ({e})"
        ) from None
    if isinstance(result, dict) and result.get("kind") == "headroom" and (
        "tasks" in result
    ):
        return result
    if not isinstance(result, dict) or not {"tasks", "predictors"} <= set(
        result
    ):
        raise ValueError(
            "Not a bench.json written by `keras-hybrid bench` nor a "
            "headroom.json written by `keras-hybrid headroom` (no `tasks` "
            f"and `predictors`). Received: path={path!r}"
        )
    return result
