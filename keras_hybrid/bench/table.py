"""The benchmark's stdout table."""

from keras_hybrid.bench import figures
from keras_hybrid.bench.overhead import format_fit_overhead

COLUMNS = (
    ("wall_clock_s", "train s", ".1f"),
    ("backward_passes", "backward", ".0f"),
    ("forward_passes", "forward", ".0f"),
    ("final_val_loss", "final val loss", ".4f"),
    ("best_val_loss", "best val loss", ".4f"),
    ("final_test_loss", "final test loss", ".4f"),
    ("final_val_acc", "final val acc", ".4f"),
    ("time_to_target_s", "time-to-target s", ".1f"),
    ("backward_to_target", "backward-to-target", ".0f"),
    ("peak_memory_mb", "peak MB", ".0f"),
)
RATIO_COLUMNS = (
    ("wall_clock_s", "wall-clock", ".3f"),
    ("backward_passes", "backward", ".3f"),
    ("final_val_loss", "final val loss", ".3f"),
    ("best_val_loss", "best val loss", ".3f"),
    ("final_test_loss", "final test loss", ".3f"),
    ("time_to_target_s", "time-to-target", ".3f"),
    ("backward_to_target", "backward-to-target", ".3f"),
)
CHECK_LABELS = {
    "full_over_plain": "(b) hybrid FULL step (with trajectory sums) / plain",
    "predict_over_full": "(c) forward-only PREDICT step / FULL step",
    "skip_over_full": "(d) jump skip step / FULL step",
}


def fmt(value, spec):
    """Formats a number, or `"n/a"` for a missing one."""
    return "n/a" if value is None else format(value, spec)


def cell(stats, spec, not_reached=False):
    """`median [min-max]` of an aggregate (just the value for one seed).

    Args:
        stats: a dict from `figures.aggregate`.
        spec: the number format.
        not_reached: missing values mean "not reached" (time-to-target).
    """
    if stats is None:
        return "n/a"
    n, missing = stats["n"], stats["missing"]
    empty = "not reached" if not_reached else "n/a"
    if missing == n:
        return empty

    def one(value):
        return empty if value is None else format(value, spec)

    text = one(stats["median"])
    if n > 1:
        text += f" [{one(stats['min'])}-{one(stats['max'])}]"
    if missing:
        text += f" ({n - missing}/{n} {'reached' if not_reached else 'valid'})"
    return text


def format_task(name, entry, n_seeds, profile=False):
    """The table of one task: arms, ratios, overhead figures (with their
    checks against the internal targets if `profile`)."""
    settings = entry["settings"]
    lines = [
        "",
        f"== {name}: {n_seeds} seed(s), {settings['epochs']} epochs x "
        f"{settings['steps_per_epoch']} steps, batch {settings['batch_size']},"
        f" {settings.get('schedule', 'constant')} learning rate, backend "
        f"{entry.get('backend')} ==",
        "median [min-max] over seeds; train s excludes validation; "
        "time- and backward-to-target: first val loss <= same seed's "
        f"baseline final x {1 + figures.TARGET_SLACK:g}",
    ]
    rows = [["arm"] + [title for _, title, _ in COLUMNS]]
    for arm, stats in entry["aggregate"].items():
        rows.append([arm] + [
            cell(stats.get(key), spec, not_reached=key in (
                "time_to_target_s", "backward_to_target"))
            for key, _, spec in COLUMNS
        ])
    lines += _align(rows)
    lines.append("ratios, pair by pair per seed (arm / reference):")
    rows = [["pair"] + [title for _, title, _ in RATIO_COLUMNS]]
    for pair, stats in entry["ratios"].items():
        rows.append([pair] + [
            cell(stats.get(key), spec) for key, _, spec in RATIO_COLUMNS
        ])
    lines += _align(rows, indent="  ")
    lines += format_overhead(name, entry["overhead"], profile)
    if entry.get("fit_overhead"):
        lines.append(format_fit_overhead(entry["fit_overhead"]))
    return "\n".join(lines)


def format_overhead(name, overhead, profile=True):
    """The overhead lines; with `profile`, each check against its internal
    target, with OK / MISS."""
    lines = [
        f"overhead (seed {overhead.get('seed')}, median of "
        f"{overhead.get('calls')} calls after {overhead.get('warmup')} "
        "warm-up calls, same batches):",
        f"  {'(a) ' if profile else ''}plain Keras train step: "
        f"{fmt(overhead.get('plain_ms'), '.3f')}"
        f" ms (hybrid FULL {fmt(overhead.get('full_ms'), '.3f')} ms, "
        f"PREDICT {fmt(overhead.get('predict_ms'), '.3f')} ms, "
        f"skip {fmt(overhead.get('skip_ms'), '.3f')} ms)",
    ]
    for check in overhead["checks"] if profile else ():
        label = CHECK_LABELS.get(check["name"])
        if label is None:
            label = f"(e) predictor overhead {check['name'].split('[')[-1]}"
            label = label.rstrip("]") + ", % of step time"
            value = fmt(check["value"], ".2f") + "%"
            target = f"<= {check['target']:g}%"
            extra = f"  (memory {fmt(check.get('memory_mb'), '.2f')} MB)"
        else:
            value = fmt(check["value"], ".3f")
            target = f"<= {check['target']:g}"
            extra = ""
            if not check["applies"]:
                target += f" on {figures.PREDICT_TARGET_TASK} only"
        status = (
            "n/a" if check["ok"] is None else "OK" if check["ok"] else "MISS"
        )
        if not check["applies"]:
            status = "-"
        lines.append(f"  {label:<46} {value:>9}  target {target:<24} "
                     f"{status}{extra}")
    split = overhead["step_split"]
    lines.append(
        "  per-step split: forward (PREDICT step) "
        f"{fmt(split['forward_ms'], '.3f')} ms | backward+update (plain step"
        f" - forward) {fmt(split['backward_ms'], '.3f')} ms | hybrid "
        f"overhead (hybrid FULL - plain) {fmt(split['overhead_ms'], '.3f')}"
        " ms"
    )
    return lines


def _align(rows, indent=""):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:])
        ]
        out.append(indent + "  ".join(cells))
    return out
