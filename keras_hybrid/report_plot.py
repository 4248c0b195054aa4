"""`keras-hybrid report`: a training report as a short text summary and a PNG
timeline (loss, phases shaded, accepted and rejected jumps, interventions).
"""

import collections
import json
import os

from keras_hybrid.messages import describe
from keras_hybrid.phases import Phase

PHASE_COLORS = {
    "WARMUP": "0.85",
    "FULL": "tab:blue",
    "PREDICT": "tab:orange",
    "CORRECT": "tab:green",
}


def load_report(path):
    """Reads a training report written by `save_report`.

    Args:
        path: the JSON file.

    Returns:
        The report as a dict.

    Raises:
        ValueError: the file is missing or is not a training report.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Report file not found. Received: path={path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"The report is not valid JSON ({e}). Received: path={path!r}"
            ) from None
    if not isinstance(report, dict) or "training_summary" not in report:
        raise ValueError(
            "Not a training report (written by "
            "`HybridPredictCallback.save_report`): no `training_summary`. "
            f"Received: path={path!r}"
        )
    return report


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def summary_text(report):
    """A short text summary of a training report.

    Args:
        report: the report dict.

    Returns:
        A few lines of plain text.
    """
    s = report["training_summary"]
    phases = report.get("phase_statistics") or {}
    accuracy = phases.get("prediction_accuracy") or {}
    total = s.get("total_steps") or 0
    names = [phase.name for phase in Phase]
    by_phase = s.get("steps_by_phase") or {
        # Version 1 reports.
        name: s.get(f"{name.lower()}_steps") for name in names
    }
    lines = [
        f"{total} steps: {s.get('backward_passes')} with a backward pass, "
        f"{_fmt(s.get('backward_reduction_pct'), '.1f')}% without ("
        + ", ".join(f"{name} {by_phase.get(name)}" for name in names)
        + ").",
        f"predictions: {s.get('predictions_attempted')} attempted, "
        f"{s.get('predictions_accepted')} accepted, "
        f"{s.get('predictions_rejected')} rejected; PREDICT phases of "
        f"{_fmt(phases.get('avg_predict_length'), '.1f')} steps on average "
        f"(longest {phases.get('max_predict_length')}), confidence "
        f"{_fmt(phases.get('avg_confidence'), '.2f')} on average.",
    ]
    if accuracy.get("checked_predictions"):
        lines.append(
            f"prediction quality ({accuracy['checked_predictions']} checked "
            "against real training): weight cosine "
            f"{_fmt(accuracy.get('weight_cosine_similarity'), '.2f')}, "
            "predicted loss error "
            f"{_fmt(accuracy.get('loss_mae'), '.4f')}."
        )
    kinds = collections.Counter(
        describe(e)[0] for e in report.get("divergence_events") or []
    )
    lines.append(
        "interventions: " + (
            ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
            if kinds else "none"
        ) + "."
    )
    val_loss = s.get("final_val_loss")
    lines.append(
        "final training loss (last epoch's mean) "
        f"{_fmt(s.get('final_loss'), '.4f')}"
        + ("" if val_loss is None
           else f", final validation loss {_fmt(val_loss, '.4f')}")
        + f", wall-clock {_fmt(s.get('wall_time_s'), '.1f')} s."
    )
    return "\n".join(lines)


def plot_report(report, path):
    """Draws the report's timeline into a PNG.

    The training loss (the report's `loss_curve`: the batch loss of the
    steps that trained) against the step, each phase shaded
    in its color, every jump's loss before (x: rejected) and after (triangle:
    accepted), and the interventions as dashed red lines.

    Args:
        report: the report dict.
        path: where to write the PNG.

    Returns:
        `path`.

    Raises:
        ImportError: matplotlib is not installed (names the extra).
    """
    from keras_hybrid.dependencies import require

    require("matplotlib", "Drawing the report's timeline")
    figure = timeline_figure(report)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path)
    return path


def timeline_figure(report):
    """The matplotlib `Figure` that `plot_report` writes (matplotlib must be
    installed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    shaded = set()
    for record in report.get("phases") or []:
        name = record["phase"]
        start = record["start_step"]
        axes.axvspan(
            start, start + record["length"], color=PHASE_COLORS.get(name,
                                                                    "0.5"),
            alpha=0.35 if name == "PREDICT" else 0.12, linewidth=0,
            label=None if name in shaded else f"{name} phase",
        )
        shaded.add(name)
    curve = report.get("loss_curve") or []
    if curve:
        steps, losses = zip(*curve)
        axes.plot(steps, losses, color="black", linewidth=1.2,
                  label="training loss (batch loss of the steps that trained)")
    accepted = [(j["step"], min(t[1] for t in j["tried"]))
                for j in report.get("jumps") or []
                if j.get("accepted_scale") is not None and j.get("tried")]
    rejected = [(j["step"], j["base_loss"]) for j in report.get("jumps") or []
                if j.get("accepted_scale") is None
                and j.get("base_loss") is not None]
    if accepted:
        axes.scatter(*zip(*accepted), marker="^", color="tab:green",
                     zorder=3, label="accepted jump (loss after)")
    if rejected:
        axes.scatter(*zip(*rejected), marker="x", color="tab:red", zorder=3,
                     label="rejected jump (loss kept)")
    labelled = False
    for event in report.get("divergence_events") or []:
        if event.get("signal") == "forward_check":
            continue  # a rejected jump: already marked
        axes.axvline(event["step"], color="tab:red", linestyle="--",
                     linewidth=0.8,
                     label=None if labelled else "intervention")
        labelled = True
    s = report["training_summary"]
    axes.set_title(
        f"{s.get('total_steps')} steps, "
        f"{_fmt(s.get('backward_reduction_pct'), '.1f')}% without a "
        f"backward pass, {s.get('predictions_accepted')} of "
        f"{s.get('predictions_attempted')} predictions accepted"
    )
    axes.set_xlabel("training step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return figure
