"""The benchmark's PNG: validation loss against training wall-clock."""

import os

ARM_COLORS = {"baseline": "tab:blue"}
_CYCLE = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
          "tab:pink", "tab:olive", "tab:cyan")


def plot_task(task_name, seed_entry, path, target=None):
    """Draws one line per arm and shades the PREDICT phases of the hybrid
    arms that skipped backward passes (accepted predictions; nothing for an
    arm that skipped none).

    Uses matplotlib's Agg canvas directly (no pyplot, no global state).

    Args:
        task_name: title of the plot.
        seed_entry: the per-seed entry of `bench.json` (`seed`, `arms`:
            `name -> {"evals": [...], "figures": {...}, "phases": [...]}`);
            the title names its seed, as the progress lines do.
        path: where to write the PNG.
        target: the time-to-target loss, drawn as a dashed line.

    Returns:
        `path`, or `None` if matplotlib is not installed.
    """
    try:
        figure = task_figure(task_name, seed_entry, target)
    except ImportError:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path)
    return path


def task_figure(task_name, seed_entry, target=None):
    """The matplotlib `Figure` that `plot_task` writes.

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colors = iter(_CYCLE)
    span = max(
        [e["time_s"] for arm in seed_entry["arms"].values()
         for e in arm["evals"]] or [1.0]
    )
    for name, arm in seed_entry["arms"].items():
        color = ARM_COLORS.get(name) or next(colors, "black")
        points = [
            (e["time_s"], e["val_loss"]) for e in arm["evals"]
            if e["val_loss"] is not None
        ]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker=".", color=color, label=name)
        if _skipped_any(arm):
            _shade(axes, arm.get("phases") or [], color, name, 0.002 * span)
    if target is not None:
        axes.axhline(target, color="gray", linestyle="--", linewidth=0.8,
                     label="target (baseline final x 1.01)")
    axes.set_xlabel("training wall-clock (s, validation excluded)")
    axes.set_ylabel("validation loss")
    axes.set_title(f"{task_name}, seed {seed_entry['seed']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _skipped_any(arm):
    """Whether the arm ran fewer backward passes than steps."""
    figures = arm.get("figures") or {}
    backward, steps = figures.get("backward_passes"), figures.get("steps")
    return backward is not None and steps is not None and backward < steps


def _shade(axes, phases, color, name, min_width):
    labelled = False
    for record in phases:
        if record.get("phase") != "PREDICT" or str(
            record.get("outcome") or ""
        ).startswith("rejected"):
            continue  # a rejected prediction's batches were trained on
        start, end = record["start_s"], record["end_s"]
        # A jump's skipped steps take almost no time: keep them visible.
        end = max(end, start + min_width)
        axes.axvspan(
            start, end, color=color, alpha=0.15, linewidth=0,
            label=None if labelled else f"{name} PREDICT phases",
        )
        labelled = True
