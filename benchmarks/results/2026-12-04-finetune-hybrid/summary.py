"""Prints the fine-tuning table of this folder's runs next to the freeze
oracle's references (../2026-12-04-finetune-oracle/runs): per arm, the
median [min-max] over the reported seeds of the final validation loss (and
test loss) against tuned full fine-tuning's, the validation accuracy
(next-byte on ft-docs, topic on ft-topics), the loss on held-out library
source against full fine-tuning's (forgetting; ft-docs), the backward work as a
share of full fine-tuning's (from per-layer FLOPs), and whether the arm's median final validation loss is
within 1% of the best full-backward reference's (full fine-tuning, with
the weight average, or LoRA). Wall-clock is not compared run by run: the
runs shared a loaded machine with other runs (their `train_seconds` moved
by up to 4x); the step-time ratios below come from alternated repetitions
in one process.

Run: python benchmarks/results/2026-12-04-finetune-hybrid/summary.py
"""

import collections
import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.path.join(HERE, "..", "2026-12-04-finetune-oracle", "runs")
SEEDS = (0, 1, 2)


def _runs(folder):
    out = collections.defaultdict(dict)
    for path in glob.glob(os.path.join(folder, "*.json")):
        name = os.path.basename(path)[:-5]
        if "-seed" not in name:
            continue
        arm, seed = name.rsplit("-seed", 1)
        if int(seed) in SEEDS:
            with open(path) as f:
                out[arm][int(seed)] = json.load(f)
    return out


def _spread(values):
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return (f"{np.median(values):.3f} [{values.min():.3f}-"
            f"{values.max():.3f}]")


def _is_reference(arm):
    """Full-backward references: full fine-tuning, with the weight
    average, LoRA."""
    return arm.startswith(("full-", "ema", "lora-"))


def table(task):
    oracle = _runs(os.path.join(ORACLE, task))
    hybrid = _runs(os.path.join(HERE, "runs", task))
    full = [k for k in oracle if k.startswith("full-")]
    if not full:
        return None
    reference = oracle[full[0]]
    # The best full-backward reference: the lowest median over the seeds
    # of its validation loss / full fine-tuning's (same seed); an arm
    # "reaches" it when the median over the seeds of its validation loss /
    # the best reference's (same seed) is at most 1.01 (final values only:
    # the runs are evaluated at their end).
    def paired(runs, against):
        return float(np.median([runs[s]["val_loss"] / against[s]["val_loss"]
                                for s in against if s in runs]))

    candidates = {arm: runs for arm, runs in oracle.items()
                  if _is_reference(arm) and len(runs) == len(SEEDS)}
    best = min(candidates, key=lambda arm: paired(candidates[arm],
                                                  reference))
    best_runs = candidates[best]
    lines = [
        f"{task} (reference: {full[0]}, seeds "
        f"{sorted(reference)}; best full-backward reference: {best}, "
        f"{paired(best_runs, reference):.3f} of full FT)",
        "",
        "| arm | seeds | val loss / full FT | test loss / full FT | "
        "val accuracy | source loss / full FT | backward work / full FT | "
        "reaches best x1.01 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    arms = sorted(oracle.items()) + sorted(
        (f"callback: {k}", v) for k, v in hybrid.items())
    # Earlier versions of a rule, kept in subfolders (e.g. `mean-rule`).
    folder = os.path.join(HERE, "runs", task)
    for sub in sorted(os.listdir(folder)):
        if os.path.isdir(os.path.join(folder, sub)):
            arms += sorted((f"callback: {k} ({sub})", v) for k, v in
                           _runs(os.path.join(folder, sub)).items())
    for arm, runs in arms:
        seeds = sorted(s for s in runs if s in reference)
        if not seeds:
            continue
        val = [runs[s]["val_loss"] / reference[s]["val_loss"] for s in seeds]
        test = [runs[s]["test_loss"] / reference[s]["test_loss"]
                for s in seeds]
        work = [runs[s]["backward_share"] for s in seeds]
        # Accuracy and forgetting (the loss on held-out library source,
        # ft-docs only), where the run recorded them.
        accuracy = ("-" if "val_acc" not in runs[seeds[0]] else
                    _spread([runs[s]["val_acc"] for s in seeds]))
        source = ("-" if "source_loss" not in runs[seeds[0]] else
                  _spread([runs[s]["source_loss"]
                           / reference[s]["source_loss"] for s in seeds]))
        reached = (all(s in best_runs for s in seeds)
                   and paired(runs, best_runs) <= 1.01)
        lines.append(f"| {arm} | {len(seeds)} | {_spread(val)} | "
                     f"{_spread(test)} | {accuracy} | {source} | "
                     f"{_spread(work)} | "
                     f"{'yes' if reached else 'no'} |")
    return "\n".join(lines)


def main():
    for task in ("ft-docs", "ft-topics"):
        text = table(task)
        if text:
            print(text + "\n")
        for path in sorted(glob.glob(os.path.join(HERE, "runs", task,
                                                  "timing-*.json"))):
            with open(path) as f:
                timing = json.load(f)
            ratios = timing["ratios"]
            print(f"{task}: step time with the bottom {timing['depth']} "
                  f"groups frozen / nothing frozen (callback, alternated, "
                  f"{timing['repetitions']} repetitions of "
                  f"{timing['steps']} steps): median "
                  f"{timing['median_ratio']:.3f} [{min(ratios):.3f}-"
                  f"{max(ratios):.3f}]\n")


if __name__ == "__main__":
    main()
