"""What `outer`'s compiled phase-boundary functions cost in one `fit()` on
`cnn16` (TensorFlow): per function, its eager calls before it compiles,
the call that compiles it (trace, instantiation and first run) and its
compiled calls.

Each arm runs in a fresh process, alternated over the repetitions:

- `unoptimized`: the package as it is (the functions' graphs are not
  rewritten by Grappler);
- `grappler`: the same with Grappler's rewrites back on for them
  (`backends._unoptimized` replaced by a context that changes nothing).

Usage: python phase_functions.py [--repetitions 3] [--out results.json]
"""

import collections
import contextlib
import json
import os
import statistics
import sys
import time

import alternate

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ["unoptimized", "grappler"]
RUN = os.path.join(HERE, "..", "2026-12-04-outer-cnn-cost")


def call_kind(function):
    """What a `LazilyCompiled` function's next call is: `"eager"`,
    `"compile"` (the call that compiles it) or `"compiled"`."""
    if function.compiled is not None:
        return "compiled"
    return "compile" if function._due() else "eager"


def child(arm, patch=None):
    """One `outer` `fit()`, every phase function's calls timed;
    `patch(arm)`, if given, changes the package first (`early_compile.py`).
    """
    sys.path.insert(0, RUN)
    import keras

    import keras_hybrid as kh
    from keras_hybrid import backends
    import run

    if patch is not None:
        patch(arm)
    elif arm == "grappler":
        backends._unoptimized = contextlib.nullcontext
    times = collections.defaultdict(
        lambda: {"eager": [], "compile": [], "compiled": []})
    call = backends.LazilyCompiled.__call__

    def timed_call(self, *args):
        kind = call_kind(self)
        start = time.perf_counter()
        try:
            return call(self, *args)
        finally:
            times[self.name][kind].append(time.perf_counter() - start)

    backends.LazilyCompiled.__call__ = timed_call
    (x, y), (xv, yv) = run._synthetic_images(1)
    keras.utils.set_random_seed(1)
    model = kh.HybridModel.wrap(run._small_cnn(None))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=32, epochs=15, validation_data=(xv, yv),
              callbacks=[kh.HybridPredictCallback("outer", verbose=0)],
              verbose=0)
    wall = time.perf_counter() - start
    print("RESULT " + json.dumps({"arm": arm, "wall_s": wall,
                                  "cpu_s": time.process_time() - cpu,
                                  "functions": times}))


def report(runs, repetitions):
    del repetitions
    arms = list(dict.fromkeys(run["arm"] for run in runs))
    for arm in arms:
        mine = [run for run in runs if run["arm"] == arm]
        names = sorted({n for run in mine for n in run["functions"]})
        print(f"{arm} ({len(mine)} runs; medians over the runs, ms):")
        for name in names:
            row = collections.defaultdict(list)
            for run in mine:
                f = run["functions"].get(name, {})
                for kind in ("eager", "compile", "compiled"):
                    row[kind].append(1e3 * sum(f.get(kind, [])))
                row["calls"].append(len(f.get("compiled", [])))
            print(f"  {name:24s} eager {statistics.median(row['eager']):6.1f}"
                  f"  compile {statistics.median(row['compile']):6.1f}"
                  f"  compiled {statistics.median(row['compiled']):6.1f}"
                  f" ({statistics.median(row['calls']):.0f} calls)")
        per_run = [
            {k: 1e3 * sum(sum(f.get(k, [])) for f in run["functions"].values())
             for k in ("eager", "compile", "compiled")} for run in mine]
        print("  all, per run: " + ", ".join(
            f"{k} {statistics.median(p[k] for p in per_run):.0f}"
            for k in ("eager", "compile", "compiled"))
            + f"; fit() {statistics.median(r['wall_s'] for r in mine):.2f} s")


if __name__ == "__main__":
    alternate.main(__file__, child, ARMS, 3, report)
