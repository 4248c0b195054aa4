"""Prints this folder's overhead tables from its `overhead.json` files: the
columns of `../2026-12-05-cpu2-overhead/table.py` (whose helpers this
reuses) plus the per-pair median's interval (`median_interval`, at least
90% coverage) and whether it resolves the verdict (lies on one side of the
bar).

Run: python benchmarks/results/2026-12-05-cpu2-overhead-2/table.py [LABEL]
(LABEL: the subfolder, default `default`).
"""

import importlib.util
import os
import sys

from keras_hybrid.bench.overhead import median_interval

HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location(
    "first_table",
    os.path.join(HERE, "..", "2026-12-05-cpu2-overhead", "table.py"))
first = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(first)


def rows(label):
    for step_ms, task, entry in first.entries(os.path.join(HERE, label)):
        judged = entry["verdict"]
        low, high, coverage = median_interval(entry["ratios"])
        resolved = high <= judged["bar"] or low > judged["bar"]
        yield (f"| {task} | {first.BACKENDS[entry['backend']]} | "
               f"{entry['steps_per_execution']} | {step_ms:.1f} ms | "
               f"{entry['repetitions']} | "
               f"{first._pair(entry)} | {first._pair(entry, 'guard_')} | "
               f"{judged['bar']:.2f} | "
               f"{'yes' if judged['within'] else '**no**'} | "
               f"[{low:.2f}-{high:.2f}] ({100 * coverage:.0f}%) | "
               f"{'yes' if resolved else 'no'} |")


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else "default"
    print("| task | backend | steps per call | plain step | repetitions "
          "| hybrid / plain | per pair | CPU | Keras' check / plain "
          "| per pair | CPU | bar | within | median's interval "
          "| resolved |")
    print("| --- " * 15 + "|")
    for row in rows(label):
        print(row)


if __name__ == "__main__":
    main()
