"""Prints the default preset's table from this folder's bench.json files:
per task and schedule, the hybrid (the `default` preset) against plain
`fit()` (the baseline) on seeds 3-5: backward passes skipped, final
validation loss / baseline and final test loss / baseline, median
[min-max] of the same-seed ratios.

Run: python benchmarks/results/2026-12-05-tf-cpu2-default-preset/table.py
"""

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _spread(entry):
    return (f"{entry['median']:.3f} [{entry['min']:.3f}-"
            f"{entry['max']:.3f}]")


def main():
    print("| task | schedule | seeds | backward skipped | final val loss / "
          "plain fit() | final test loss / plain fit() |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in sorted(glob.glob(os.path.join(HERE, "*", "bench.json"))):
        with open(path) as f:
            bench = json.load(f)
        schedule = os.path.basename(os.path.dirname(path)).rsplit("-", 1)[1]
        for task, entry in bench["tasks"].items():
            ratios = entry["ratios"]["hybrid-drift/baseline"]
            arms = entry["aggregate"]
            skipped = 1.0 - (arms["hybrid-drift"]["backward_passes"]["median"]
                             / arms["baseline"]["backward_passes"]["median"])
            print(f"| {task} | {schedule} | "
                  f"{ratios['final_val_loss']['n']} | {100 * skipped:.1f}% | "
                  f"{_spread(ratios['final_val_loss'])} | "
                  f"{_spread(ratios['final_test_loss'])} |")


if __name__ == "__main__":
    main()
