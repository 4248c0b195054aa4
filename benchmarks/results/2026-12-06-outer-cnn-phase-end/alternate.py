"""What `phase_functions.py` and `in_graph.py` share: each arm's `fit()`
in a fresh process (TensorFlow), the arms alternated (the order reversed
every other repetition)."""

import argparse
import json
import os
import subprocess
import sys


def main(script, child, arms, repetitions, report):
    """Runs `script --child ARM` for every arm and repetition, or, given
    `--child`, calls `child(arm)` (which prints `RESULT {json}`).

    Args:
        script: the calling script's path.
        child: callable `arm -> None`, run in the child process.
        arms: the arms' names.
        repetitions: the default number of repetitions.
        report: callable `(runs, repetitions) -> None`, given every run's
            result (with its `repetition`) once all have run.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--repetitions", type=int, default=repetitions)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow")
    runs = []
    for r in range(args.repetitions):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            out = subprocess.run([sys.executable, script, "--child", arm],
                                 capture_output=True, text=True, env=env)
            line = [s for s in out.stdout.splitlines()
                    if s.startswith("RESULT ")]
            if not line:
                raise RuntimeError(out.stderr[-3000:])
            result = json.loads(line[0][len("RESULT "):])
            result["repetition"] = r
            runs.append(result)
            if "final_val_loss" in result:
                print(f"rep {r + 1} {arm}: {result['wall_s']:.2f} s wall, "
                      f"{result['cpu_s']:.2f} s CPU, val loss "
                      f"{result['final_val_loss']:.4f}"
                      + (f", {result['jumps']} jumps" if "jumps" in result
                         else ""), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(runs, f, indent=1)
    report(runs, args.repetitions)
