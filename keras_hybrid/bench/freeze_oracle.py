"""`run_freeze_oracle`: how much backward work static freezing can save.

Before any method that decides freezes as it trains, this measures the
best a fixed schedule could do on the fine-tuning tasks
(`keras_hybrid.bench.finetune`), at full fine-tuning's quality:

1. Tuning, on seeds that are not reported (`tune_seeds`, default 100-101):
   full fine-tuning's peak learning rate from `lr_grid`, and the linear
   probe's from `probe_lr_grid` (lowest mean final validation loss).
2. References on the reported seeds (default 0-2) at the tuned rates: full
   fine-tuning and the linear probe; and, each tuned the same way on its
   own grid, full fine-tuning with Keras' weight average (`use_ema`,
   `ema_momentum`; `ema_lr_grid`) and Keras LoRA (`enable_lora` of rank
   `lora_rank` below the head; `lora_lr_grid`), counted at full backward
   work (Keras adds the low-rank product to the frozen kernel, so the
   backward pass still runs through every layer).
3. Static freezes at full fine-tuning's tuned rate: the bottom `k` blocks
   (and the embeddings below them) frozen from step 0 (`t = 0`), or frozen
   at `t` of the budget with the optimizer state kept (see
   `keras_hybrid.bench.freeze_runs`).

Each schedule's backward work is a share of full fine-tuning's, from the
forward FLOPs of each layer (`keras_hybrid.bench.flops`). The oracle is the
schedule with the smallest share among those whose median final validation
loss is within `tolerance` (1%) of full fine-tuning's median. A separate
measurement times a step with the bottom half frozen against a full step,
alternated in one process.

Every run's figures are written to `<out>/runs/<task>/<run>.json` as it
ends; a run whose file exists is read back instead of run again, so an
interrupted sweep resumes. `oracle.json` holds the tables; the entries of
tasks run by an earlier call into the same folder are kept (each entry
records the settings it ran with).
"""

import datetime
import json
import os
import shlex
import sys
import time

from keras_hybrid.bench import freeze_runs
from keras_hybrid.bench import harness
from keras_hybrid.serialization import clean_json

SCHEMA_VERSION = 1
DEFAULTS = {
    "tasks": ("ft-docs", "ft-topics"),
    "seeds": (0, 1, 2),
    "tune_seeds": (100, 101),
    "lr_grid": (3e-4, 1e-3, 3e-3, 1e-2),
    "probe_lr_grid": (1e-3, 3e-3, 1e-2),
    "ema_lr_grid": (1e-3, 3e-3, 1e-2),
    "ema_momentum": 0.99,
    "lora_lr_grid": (3e-3, 1e-2, 3e-2),
    "lora_rank": 8,
    "blocks": (1, 2, 3, 4),
    "freeze_at": (0.0, 0.5, 0.75),
    "tolerance": 0.01,
    "timing_steps": 20,
    "timing_repetitions": 5,
}
QUICK = {
    "seeds": (0,), "tune_seeds": (100,), "lr_grid": (1e-3, 3e-3),
    "probe_lr_grid": (3e-3,), "ema_lr_grid": (3e-3,),
    "lora_lr_grid": (1e-2,), "lora_rank": 4,
    "blocks": (2,), "freeze_at": (0.0, 0.5),
    "timing_steps": 3, "timing_repetitions": 2,
}


def run_freeze_oracle(tasks=DEFAULTS["tasks"], out_dir="freeze_oracle_out",
                      quick=False, cache_dir=None, progress=True, **options):
    """Runs the sweep (resuming from `out_dir`) and writes `oracle.json`.

    Args:
        tasks: fine-tuning task names.
        out_dir: where the runs and `oracle.json` go.
        quick: quick task sizes and a tiny grid (a smoke run).
        cache_dir: the pretrained checkpoint cache (see
            `keras_hybrid.bench.pretrain.cache_dir`).
        progress: print a line per run and the tables.
        **options: overrides of `DEFAULTS` (`seeds`, `tune_seeds`,
            `lr_grid`, `probe_lr_grid`, `ema_lr_grid`, `ema_momentum`,
            `lora_lr_grid`, `lora_rank`, `blocks`, `freeze_at`, `tolerance`,
            `timing_steps`, `timing_repetitions`; 0 repetitions skips the
            timing).

    Returns:
        The `oracle.json` content as a dict.
    """
    from keras_hybrid.bench.finetune import FINETUNE_TASK_NAMES
    from keras_hybrid.bench.finetune import get_finetune_task

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown options {sorted(unknown)}; expected some of "
            f"{sorted(DEFAULTS)}."
        )
    settings = {**DEFAULTS, **(QUICK if quick else {}), **options}
    settings.pop("tasks")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    bad = [t for t in tasks if t not in FINETUNE_TASK_NAMES]
    if bad or not tasks:
        raise ValueError(
            f"`tasks` must be names from {FINETUNE_TASK_NAMES}. "
            f"Received: tasks={tasks!r}"
        )
    _check_settings(settings)
    log = harness._printer(progress)
    os.makedirs(out_dir, exist_ok=True)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "freeze-oracle",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command_line": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": harness.machine_info(),
        "versions": harness.package_versions(),
        "quick": bool(quick),
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.items()},
        "tasks": {},
    }
    path = os.path.join(out_dir, "oracle.json")
    previous = _previous_tasks(path)
    start = time.perf_counter()
    for name in tasks:
        task = get_finetune_task(name, quick=quick, cache_dir=cache_dir,
                                 progress=progress)
        runs = _Runs(task, os.path.join(out_dir, "runs", name), log)
        entry = _run_task(task, runs, settings, log)
        entry["settings"] = result["settings"]
        entry["elapsed_s"] = time.perf_counter() - start
        result["tasks"][name] = entry
        result["elapsed_s"] = time.perf_counter() - start
        # Tasks run by an earlier call (with their own settings) are kept.
        harness._write_json(
            clean_json({**result, "tasks": {**previous, **result["tasks"]}}),
            path)
        if progress:
            print(markdown_tables({"tasks": {name:
                                             result["tasks"][name]}}),
                  flush=True)
    log(f"wrote {path} ({time.perf_counter() - start:.0f}s)")
    return clean_json(result)


def _previous_tasks(path):
    """The task entries of an existing `oracle.json` (`{}` if none)."""
    try:
        with open(path) as f:
            return dict(json.load(f).get("tasks") or {})
    except (OSError, ValueError):
        return {}


def _check_settings(settings):
    for key in ("seeds", "tune_seeds", "lr_grid", "probe_lr_grid",
                "ema_lr_grid", "lora_lr_grid", "blocks", "freeze_at"):
        if not settings[key]:
            raise ValueError(f"`{key}` must not be empty. "
                             f"Received: {key}={settings[key]!r}")
    overlap = set(settings["seeds"]) & set(settings["tune_seeds"])
    if overlap:
        raise ValueError(
            "`tune_seeds` must differ from the reported `seeds`. Received: "
            f"seeds={settings['seeds']!r}, "
            f"tune_seeds={settings['tune_seeds']!r}"
        )
    if any(not 0.0 <= t < 1.0 for t in settings["freeze_at"]):
        raise ValueError(
            "`freeze_at` values must be in [0, 1). "
            f"Received: freeze_at={settings['freeze_at']!r}"
        )


class _Runs:
    """Runs a fine-tuning run or reads its saved figures back."""

    def __init__(self, task, folder, log):
        self.task, self.folder, self.log = task, folder, log
        os.makedirs(folder, exist_ok=True)

    def __call__(self, label, seed, **kwargs):
        path = os.path.join(self.folder, f"{label}-seed{seed}.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        self.log(f"[{self.task.name}] {label} seed {seed} start")
        out = freeze_runs.run_finetune(self.task, seed, **kwargs)
        out["label"] = label
        harness._write_json(clean_json(out), path)
        self.log(f"[{self.task.name}] {label} seed {seed}: val_loss "
                 f"{out['val_loss']:.4f}, backward share "
                 f"{out['backward_share']:.3f}, {out['train_seconds']:.0f}s")
        return out


def _lr_label(prefix, lr):
    return f"{prefix}-lr{lr:g}"


def _tune(runs, prefix, grid, seeds, **kwargs):
    """`(best rate, {rate: [val losses]})` by mean final validation loss."""
    losses = {}
    for lr in grid:
        losses[lr] = [runs(_lr_label(prefix, lr), seed, learning_rate=lr,
                           **kwargs)["val_loss"] for seed in seeds]
    best = min(grid, key=lambda lr: sum(losses[lr]) / len(losses[lr]))
    return best, {format(lr, "g"): v for lr, v in losses.items()}


def _run_task(task, runs, settings, log):
    seeds, tune_seeds = settings["seeds"], settings["tune_seeds"]
    lr, lr_losses = _tune(runs, "full", settings["lr_grid"], tune_seeds)
    probe_lr, probe_losses = _tune(runs, "probe", settings["probe_lr_grid"],
                                   tune_seeds, probe=True)
    log(f"[{task.name}] tuned on seeds {list(tune_seeds)}: full lr {lr:g}, "
        f"probe lr {probe_lr:g}")
    full = [runs(_lr_label("full", lr), s, learning_rate=lr) for s in seeds]
    probe = [runs(_lr_label("probe", probe_lr), s, learning_rate=probe_lr,
                  probe=True) for s in seeds]
    momentum, rank = settings["ema_momentum"], settings["lora_rank"]
    variants = {
        "ema": (f"ema{momentum:g}", settings["ema_lr_grid"],
                {"ema_momentum": momentum}),
        "lora": (f"lora-r{rank}", settings["lora_lr_grid"],
                 {"lora_rank": rank}),
    }
    references, reference_tuning = {}, {}
    for key, (prefix, grid, kwargs) in variants.items():
        best, losses = _tune(runs, prefix, grid, tune_seeds, **kwargs)
        log(f"[{task.name}] {key}: tuned lr {best:g}")
        reference_tuning[key] = {"lr": best, "val_losses": losses}
        references[key] = [runs(_lr_label(prefix, best), s,
                                learning_rate=best, **kwargs)
                           for s in seeds]
    schedules = {}
    for t in sorted(settings["freeze_at"]):
        for k in settings["blocks"]:
            label = f"freeze-k{k}-t{t:g}-lr{lr:g}"
            schedules[(k, t)] = [
                runs(label, s, learning_rate=lr, depth=k + 1, freeze_at=t)
                for s in seeds
            ]
    start = freeze_runs.evaluate_start(task, seeds[0])
    timing = None
    if settings["timing_repetitions"]:
        half = max(1, max(settings["blocks"]) // 2)
        log(f"[{task.name}] timing steps: bottom {half} blocks frozen "
            "against full fine-tuning")
        timing = freeze_runs.time_steps(
            task, half + 1, steps=settings["timing_steps"],
            repetitions=settings["timing_repetitions"])
    return {
        "description": task.description,
        "budget_steps": freeze_runs.budget_steps(task),
        "batch_size": int(task.batch_size),
        "warmup_steps": int(task.warmup_steps),
        "pretrain": task.pretrain,
        "pretrained_start": start,
        "tuning": {"seeds": list(tune_seeds), "full_lr": lr,
                   "full_val_losses": lr_losses, "probe_lr": probe_lr,
                   "probe_val_losses": probe_losses, **reference_tuning},
        "rows": oracle_rows(full, probe, schedules,
                            settings["tolerance"], references),
        "timing": timing,
    }


# ============================================================ the figures
def _figures(runs_of_seeds):
    """Medians and per-seed values of one schedule's runs."""
    out = {"seeds": [r["seed"] for r in runs_of_seeds],
           "backward_share": freeze_runs.median(
               [r["backward_share"] for r in runs_of_seeds]),
           "train_seconds": freeze_runs.median(
               [r["train_seconds"] for r in runs_of_seeds])}
    for key in ("val_loss", "val_acc", "test_loss", "test_acc",
                "source_loss"):
        values = [r.get(key) for r in runs_of_seeds]
        if any(v is not None for v in values):
            out[key] = freeze_runs.median(values)
            out[f"{key}_per_seed"] = values
    return out


def oracle_rows(full, probe, schedules, tolerance=0.01, references=None):
    """The table of one task, and its oracle.

    Args:
        full: full fine-tuning's runs (one per reported seed).
        probe: the linear probe's runs.
        schedules: `{(blocks, freeze_at): runs}` of the static freezes.
        tolerance: the allowed relative excess of the median final
            validation loss over full fine-tuning's.
        references: `{name: runs}` of other full-backward references
            (e.g. `ema`, `lora`), or `None`.

    Returns:
        A dict: `full`, `probe` and `schedules` (a list; each with `blocks`,
        `freeze_at`, its figures, `val_ratio` = its median final validation
        loss / full fine-tuning's, `within` (the ratio <= 1 + tolerance) and
        `saving` = 1 / backward share), `oracle` (the qualifying schedule
        with the smallest backward share, or `None`), `probe_gap` (the
        probe's median over full fine-tuning's, minus 1), `references`
        (`{name: figures}`, each with `val_ratio`) and `best_reference`
        (the name of the lowest median validation loss among `full` and
        `references`).
    """
    reference = _figures(full)
    target = reference["val_loss"]
    rows = []
    for (blocks, freeze_at), runs in sorted(schedules.items(),
                                            key=lambda kv: (kv[0][1],
                                                            kv[0][0])):
        row = {"blocks": blocks, "freeze_at": freeze_at, **_figures(runs)}
        row["val_ratio"] = row["val_loss"] / target
        row["per_seed_ratio"] = [
            r["val_loss"] / f["val_loss"] for r, f in zip(runs, full)
        ]
        row["within"] = row["val_ratio"] <= 1.0 + tolerance
        row["saving"] = 1.0 / row["backward_share"]
        rows.append(row)
    qualifying = [r for r in rows if r["within"]]
    oracle = min(qualifying, key=lambda r: (r["backward_share"],
                                            r["val_ratio"]),
                 default=None)
    probe_figures = _figures(probe)
    others = {}
    for name, runs in (references or {}).items():
        others[name] = _figures(runs)
        others[name]["val_ratio"] = others[name]["val_loss"] / target
    best = min([("full", target)] + [(n, f["val_loss"])
                                      for n, f in others.items()],
               key=lambda pair: pair[1])[0]
    return {
        "tolerance": tolerance,
        "full": reference,
        "probe": probe_figures,
        "probe_gap": probe_figures["val_loss"] / target - 1.0,
        "schedules": rows,
        "references": others,
        "best_reference": best,
        "oracle": None if oracle is None else {
            "blocks": oracle["blocks"], "freeze_at": oracle["freeze_at"],
            "backward_share": oracle["backward_share"],
            "saving": oracle["saving"], "val_ratio": oracle["val_ratio"],
        },
    }


def _blocks(count):
    return f"{count} block" + ("" if count == 1 else "s")


def _fmt(value, spec=".4f"):
    return "n/a" if value is None else format(value, spec)


def markdown_tables(result):
    """One Markdown table per task of an `oracle.json`, with its oracle."""
    lines = []
    for name, entry in result["tasks"].items():
        rows = entry["rows"]
        full, probe = rows["full"], rows["probe"]
        source = "source_loss" in full
        lines += [
            f"### {name}", "",
            "| schedule | backward work / full | saving | median val loss "
            "| / full | per-seed / full | "
            + ("held-out source loss | " if source else "val acc | ")
            + "median train s |",
            "| --- " * (8) + "|",
        ]

        def row_line(label, fig, ratio, per_seed, share):
            extra = _fmt(fig.get("source_loss") if source
                         else fig.get("val_acc"))
            saving = f"{1 / share:.2f}x" if share > 0.01 else ">100x"
            return (
                f"| {label} | {share:.3f} | {saving} | "
                f"{_fmt(fig['val_loss'])} | {ratio} | {per_seed} | {extra} "
                f"| {_fmt(fig['train_seconds'], '.0f')} |"
            )

        lines.append(row_line(
            f"full fine-tuning (lr {entry['tuning']['full_lr']:g})", full,
            "1.000", "-", 1.0))
        lines.append(row_line(
            f"linear probe (lr {entry['tuning']['probe_lr']:g})", probe,
            f"{probe['val_loss'] / full['val_loss']:.3f}", "-",
            max(probe["backward_share"], 1e-9)))
        names = {"ema": "with Keras' weight average", "lora": "Keras LoRA"}
        for key, fig in (rows.get("references") or {}).items():
            tuned = entry["tuning"].get(key, {}).get("lr")
            label = names.get(key, key) + (
                f" (lr {tuned:g})" if tuned is not None else "")
            lines.append(row_line(label, fig, f"{fig['val_ratio']:.3f}",
                                  "-", fig["backward_share"]))
        for r in rows["schedules"]:
            label = (f"bottom {_blocks(r['blocks'])} frozen at "
                     f"t={r['freeze_at']:.0%}")
            per_seed = ", ".join(f"{v:.3f}" for v in r["per_seed_ratio"])
            mark = " (within)" if r["within"] else ""
            lines.append(row_line(label, r, f"{r['val_ratio']:.3f}{mark}",
                                  per_seed, r["backward_share"]))
        oracle = rows["oracle"]
        lines.append("")
        if oracle is None:
            lines.append(f"Oracle: no schedule within "
                         f"{rows['tolerance']:.0%} of full fine-tuning.")
        else:
            lines.append(
                f"Oracle: bottom {_blocks(oracle['blocks'])} frozen at "
                f"t={oracle['freeze_at']:.0%}: {oracle['backward_share']:.3f}"
                f" of full fine-tuning's backward work "
                f"({oracle['saving']:.2f}x less) at "
                f"{oracle['val_ratio']:.3f}x its median validation loss.")
        lines.append(f"Linear probe gap: {rows['probe_gap']:+.1%}.")
        if rows.get("references"):
            lines.append("Best full-backward reference: "
                         f"{rows['best_reference']}.")
        timing = entry.get("timing")
        if timing:
            ratios = sorted(timing["ratios"])
            lines.append(
                f"Step wall-clock, bottom {_blocks(timing['depth'] - 1)} "
                f"frozen / full: median {freeze_runs.median(ratios):.2f} (range "
                f"{ratios[0]:.2f}-{ratios[-1]:.2f}, {len(ratios)} alternated"
                f" repetitions of {timing['steps']} steps; full step median "
                f"{1000 * freeze_runs.median(timing['full_s']):.0f} ms); "
                f"backward FLOP share {timing['backward_share']:.3f}.")
        lines.append("")
    return "\n".join(lines)


# ====================================================== the command line
def add_subcommand(commands):
    """Adds `keras-hybrid freeze-oracle` to an argparse subparsers object."""
    parser = commands.add_parser(
        "freeze-oracle",
        help="the best static freeze schedule on the fine-tuning tasks: "
        "backward work saved at full fine-tuning's validation loss",
        description="Tunes full fine-tuning's, the linear probe's, the "
        "weight average's and LoRA's learning rates on unreported seeds, "
        "runs them on the reported seeds, and static freezes of the bottom k blocks (from the "
        "start or at a share t of the budget) on the reported seeds, and "
        "prints the schedule with the least backward work whose median "
        "validation loss is within the tolerance of full fine-tuning's. "
        "Resumes from the runs saved in --out.",
    )
    parser.add_argument(
        "--task", default=",".join(DEFAULTS["tasks"]),
        help="comma-separated fine-tuning tasks (default: ft-docs,ft-topics)")
    parser.add_argument("--out", default="freeze_oracle_out",
                        help="output folder (default: freeze_oracle_out)")
    parser.add_argument("--quick", action="store_true",
                        help="quick task sizes and a tiny grid")
    parser.add_argument(
        "--cache-dir", default=None,
        help="pretrained checkpoint cache (default: $KERAS_HYBRID_CACHE, "
        "else ~/.cache/keras-hybrid)")
    for key, kind, what in (
        ("seeds", int, "reported seeds"),
        ("tune-seeds", int, "seeds the learning rates are tuned on"),
        ("lr-grid", float, "full fine-tuning's learning rates"),
        ("probe-lr-grid", float, "the linear probe's learning rates"),
        ("ema-lr-grid", float, "learning rates with the weight average"),
        ("lora-lr-grid", float, "LoRA's learning rates"),
        ("blocks", int, "numbers of bottom blocks frozen"),
        ("freeze-at", float, "shares of the budget before the freeze"),
    ):
        default = DEFAULTS[key.replace("-", "_")]
        parser.add_argument(
            f"--{key}", default=None, type=_list_of(kind),
            help=f"comma-separated {what} (default: "
            f"{','.join(format(v, 'g') for v in default)})")
    parser.add_argument(
        "--lora-rank", type=int, default=None,
        help=f"LoRA's rank (default: {DEFAULTS['lora_rank']})")
    parser.add_argument(
        "--ema-momentum", type=float, default=None,
        help="the weight average's momentum (default: "
        f"{DEFAULTS['ema_momentum']})")
    parser.add_argument(
        "--timing-repetitions", type=int, default=None,
        help="alternated repetitions of the step timing (default: "
        f"{DEFAULTS['timing_repetitions']}; 0 skips it)")
    parser.set_defaults(command_parser=parser)
    return parser


def _list_of(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            import argparse

            raise argparse.ArgumentTypeError(
                f"must be a comma-separated list of {kind.__name__} values. "
                f"Received: {text!r}") from None

    return parse


def main(args):
    """Runs `keras-hybrid freeze-oracle` from parsed arguments; returns the
    exit status."""
    options = {
        key: getattr(args, key) for key in (
            "seeds", "tune_seeds", "lr_grid", "probe_lr_grid",
            "ema_lr_grid", "lora_lr_grid", "lora_rank", "ema_momentum",
            "blocks", "freeze_at", "timing_repetitions")
        if getattr(args, key) is not None
    }
    try:
        run_freeze_oracle(
            tasks=[t.strip() for t in args.task.split(",")],
            out_dir=args.out, quick=args.quick, cache_dir=args.cache_dir,
            **options)
    except ValueError as e:
        args.command_parser.error(str(e))
    return 0
