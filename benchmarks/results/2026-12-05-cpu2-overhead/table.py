"""Prints this folder's overhead table from its `overhead.json` files: per
task, backend and steps per call, plain `fit()`'s step, the hybrid with
prediction off against plain (ratio of the minima, per-pair median
[min-max], CPU time), Keras' own finite check against plain (the same), and
the verdict against the bar.

Run: python benchmarks/results/2026-12-05-cpu2-overhead/table.py [LABEL]
(LABEL: the subfolder, default `default`).
"""

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def _pair(entry, prefix=""):
    return (f"{entry[prefix + 'ratio_of_min']:.2f} | "
            f"{entry[prefix + 'ratio_median']:.2f} "
            f"[{entry[prefix + 'ratio_min']:.2f}-"
            f"{entry[prefix + 'ratio_max']:.2f}] | "
            f"{entry[prefix + 'cpu_ratio_of_min']:.2f}")


def entries(folder):
    """`(plain step ms, task, entry)` of every `overhead.json` under
    `folder`'s subfolders, short steps first, then by task, backend and
    steps per call."""
    found = []
    for path in glob.glob(os.path.join(folder, "*", "overhead.json")):
        with open(path) as f:
            data = json.load(f)
        for task, entry in data["tasks"].items():
            found.append((entry["plain_step_ms"], task, entry))
    found.sort(key=lambda r: (r[0] >= 10.0, r[1], r[2]["backend"],
                              r[2]["steps_per_execution"]))
    return found


def rows(label):
    for step_ms, task, entry in entries(os.path.join(HERE, label)):
        judged = entry["verdict"]
        yield (f"| {task} | {BACKENDS[entry['backend']]} | "
               f"{entry['steps_per_execution']} | {step_ms:.1f} ms | "
               f"{_pair(entry)} | {_pair(entry, 'guard_')} | "
               f"{judged['bar']:.2f} | "
               f"{'yes' if judged['within'] else '**no**'} |")


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else "default"
    print("| task | backend | steps per call | plain step | hybrid / plain "
          "| per pair | CPU | Keras' check / plain | per pair | CPU | bar "
          "| within |")
    print("| --- " * 12 + "|")
    for row in rows(label):
        print(row)


if __name__ == "__main__":
    main()
