"""Draws the `hybrid/` scalars of a `HybridTensorBoard` log as TensorBoard's
Scalars tab shows them, one panel per tag, into a PNG (for documentation,
where a browser is not at hand).

Run: python examples/plot_tensorboard_logs.py LOG_DIR OUT.png
"""

import os
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_hybrid.tensorboard import read_scalars

PANELS = (
    ("hybrid/loss", "loss (and hybrid/predicted_loss)"),
    ("hybrid/phase", "phase (0 WARMUP, 1 FULL, 2 PREDICT, 3 CORRECT)"),
    ("hybrid/confidence", "confidence"),
    ("hybrid/backward_reduction", "backward_reduction"),
)


def main(log_dir, out):
    series = read_scalars(os.path.join(log_dir, "hybrid"))
    figure = Figure(figsize=(11, 7), dpi=100)
    FigureCanvasAgg(figure)
    events = [step for step, _ in series.get("hybrid/interventions", [])]
    predicting = series.get("hybrid/predicting", [])
    for index, (tag, title) in enumerate(PANELS):
        axes = figure.add_subplot(2, 2, index + 1)
        steps, values = zip(*series[tag])
        axes.plot(steps, values, linewidth=0.8, color="tab:orange"
                  if tag == "hybrid/phase" else "tab:blue", label=tag)
        if tag == "hybrid/loss" and "hybrid/predicted_loss" in series:
            p_steps, p_values = zip(*series["hybrid/predicted_loss"])
            axes.plot(p_steps, p_values, linewidth=0.8, color="tab:green",
                      label="hybrid/predicted_loss")
            axes.legend(fontsize=7)
        for step, value in predicting:
            if value:
                axes.axvspan(step - 0.5, step + 0.5, color="tab:orange",
                             alpha=0.25, linewidth=0)
        for step in events:
            axes.axvline(step, color="tab:red", linestyle="--",
                         linewidth=0.6)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"HybridTensorBoard scalars of {log_dir} (PREDICT steps shaded, "
        "interventions dashed)", fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
