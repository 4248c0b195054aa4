"""Where the one-step TensorFlow MLP cost row's time goes, per step, now
that the collecting step adds to the running sums only while a FULL phase
fits (a flag read in the compiled step).

`../2026-12-06-cpu2-overhead-31/split.py` with one arm split in two: the
collecting step with its flag on (the guard plus the running sums) and off
(the guard plus the flag's test: warmup, quiet phases, corrections, as the
runner now runs them). The other arms: plain `fit()`'s step, Keras' finite
check (`LossScaleOptimizer`, scale 1), keras-hybrid's guarded step alone,
and `HybridRunner.run` (the step as the runner picks it plus the runner's
host work). Blocks of 50 steps alternated over 40 rounds; prints each
one's median ms a step and its ratio to plain (median and interquartile
range).

Usage: python split.py (from this folder)
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "2026-12-06-cpu2-overhead-31"))

import split as earlier  # noqa: E402


def main():
    models, runner, iterator, arms = earlier.setup()
    full, collect = runner.functions["full"], runner.functions["collect"]

    def flagged(value):
        def step(data):
            collect(value)
            return full(data)
        return step

    del arms["collecting"]
    arms = {**{k: arms[k] for k in ("plain", "keras-check", "guard")},
            "sums-on": flagged(True), "sums-off": flagged(False),
            "runner.run": arms["runner.run"]}
    earlier.measure(models, iterator, arms)


if __name__ == "__main__":
    main()
