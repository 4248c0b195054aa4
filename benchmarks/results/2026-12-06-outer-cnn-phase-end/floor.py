"""What `outer` on the small CNN cannot get under: a ladder of floors.

Each arm adds one piece of what `outer` does to plain `fit()` on `cnn16`
(as in `../2026-12-04-outer-cnn-cost/run.py`), in a fresh process,
alternated (`alternate.py`):

- `plain`: `keras.Model.fit`;
- `keras-check`: Keras' own finite check (`LossScaleOptimizer`, scale 1);
- `guard`: `HybridModel`, no callback: keras-hybrid's guarded step (the
  update applied only if the loss and gradients are finite, the batch loss
  and gradient norm returned), what every run with the callback pays;
- `guard+sums`: that step plus the running sums of a FULL phase (one
  `assign_add` per variable, a step counter and a `cond`);
- `guard+in-graph`: that step plus `outer`'s whole phase end in the graph
  (`in_graph.py`'s arithmetic: half averages, drift, momentum buffer, a
  finite-checked jump), with no monitor, rollback point or report;
- `outer`: the package's `outer` preset.

Usage: python floor.py [--repetitions 7] [--out floor.json]
"""

import statistics

import alternate
import in_graph

ARMS = ["plain", "keras-check", "guard", "guard+sums", "guard+in-graph",
        "outer"]


def child(arm):
    if arm in ("plain", "outer"):
        in_graph.child(arm)
        return
    in_graph.child(arm, build=_build)


def _build(arm, model):
    import keras

    import keras_hybrid as kh

    if arm == "keras-check":
        return model, keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(1e-3), initial_scale=1.0,
            dynamic_growth_steps=2**31 - 1)
    if arm == "guard":
        return kh.HybridModel.wrap(model), None
    wrapped = in_graph._in_graph_model(
        model, 1e-3, guarded=True, phase_end=arm == "guard+in-graph")
    wrapped.build_outer()
    return wrapped, None


def report(runs, repetitions):
    def of(arm, r, key):
        return next(x[key] for x in runs
                    if x["arm"] == arm and x["repetition"] == r)

    print("| arm | / plain, wall | / plain, CPU | final val loss |")
    print("| --- | --- | --- | --- |")
    for arm in ARMS:
        cells = []
        for key in ("wall_s", "cpu_s"):
            ratios = [of(arm, r, key) / of("plain", r, key)
                      for r in range(repetitions)]
            cells.append(f"{statistics.median(ratios):.3f} "
                         f"[{min(ratios):.3f}-{max(ratios):.3f}]")
        losses = [x["final_val_loss"] for x in runs if x["arm"] == arm]
        print(f"| {arm} | {cells[0]} | {cells[1]} | "
              f"{statistics.median(losses):.4f} |")


if __name__ == "__main__":
    alternate.main(__file__, child, ARMS, 7, report)
