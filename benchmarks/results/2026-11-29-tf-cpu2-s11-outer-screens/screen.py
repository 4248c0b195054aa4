"""Screens: the hybrid arm alone (the bench's arm runner) against the
baseline of the same seed (run once, cached). Usage:
python screen.py SCHEDULE NAME CONFIG.yaml SEED [SEED ...]"""
import json, os, sys, time
import numpy as np
from keras_hybrid.bench import harness, figures
from keras_hybrid.bench.tasks import get_task
from keras_hybrid.config import HybridConfig

OUT = "/tmp/gs/out"
TASK = os.environ.get("TASK", "stdlib-gpt")
MID = int(os.environ.get("MID", "1152"))

def arm(common, seed, spec, label):
    return harness._run_isolated("run_arm", {**common, **spec, "seed": seed,
        "label": label, "progress": False}, "tensorflow", label)

def curve(result):
    return [(e["step"], e.get("backward", e["step"]), e["val_loss"]) for e in result["evals"]]

def step_of_loss(base, loss):
    """Baseline step (interpolated) whose val loss first falls to `loss`."""
    pts = [(0, np.inf)] + [(s, l) for s, _, l in curve(base)]
    for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
        if l1 <= loss:
            if not np.isfinite(l0):
                return float(s1)
            return s0 + (l0 - loss) / (l0 - l1) * (s1 - s0)
    return None

def main():
    schedule, name, path, seeds = sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]]
    task = get_task(TASK)
    common = harness.arm_common(task, harness._payload(task, TASK), False, None, schedule)
    config = harness._with_predictor(HybridConfig.from_yaml(path), os.environ.get("PRED", "nesterov"))
    rows = []
    for seed in seeds:
        bpath = f"{OUT}/{TASK}-baseline-{schedule}-{seed}.json"
        if not os.path.exists(bpath):
            t = time.time()
            base = arm(common, seed, {"arm": "baseline", "name": "baseline"}, f"baseline {seed}")
            json.dump(base, open(bpath, "w"))
            print(f"baseline {schedule} {seed}: {time.time()-t:.0f}s", flush=True)
        base = json.load(open(bpath))
        t = time.time()
        hyb = arm(common, seed, {"arm": "hybrid", "name": "hybrid-nesterov", "config": config}, f"{name} {seed}")
        json.dump(hyb, open(f"{OUT}/{TASK}-{name}-{schedule}-{seed}.json", "w"))
        target = figures.target_loss(base["evals"][-1]["val_loss"])
        fb, fh = figures.arm_figures(base, target), figures.arm_figures(hyb, target)
        summ = hyb["report"]["training_summary"]
        jumps = hyb["report"].get("jumps") or []
        h_final = fh["final_val_loss"]
        seq = step_of_loss(base, h_final)
        # hybrid's loss at the eval nearest 75% of the run, and its baseline-equivalent step
        hc = curve(hyb)
        mid = min(hc, key=lambda p: abs(p[0] - MID))
        seq_mid = step_of_loss(base, mid[2])
        row = {
            "name": name, "schedule": schedule, "seed": seed,
            "skipped": 1 - fh["backward_passes"] / fh["steps"],
            "final_ratio": h_final / fb["final_val_loss"],
            "b2t": fh["backward_to_target"], "b2t_base": fb["backward_to_target"],
            "t2t": fh["time_to_target_s"], "t2t_base": fb["time_to_target_s"],
            "wall": fh["wall_clock_s"], "wall_base": fb["wall_clock_s"],
            "s_eq_final": seq, "s_eq_288": seq_mid, "mid_step": mid[0],
            "attempted": summ.get("predictions_attempted"), "accepted": summ.get("predictions_accepted"),
            "process_s": time.time() - t,
        }
        rows.append(row)
        r = lambda a, b: "n/r" if a is None or b is None else f"{a/b:.3f}"
        print(f"{name} {schedule} seed {seed}: skipped {row['skipped']:.1%} final/base {row['final_ratio']:.4f} "
              f"b2t {row['b2t']}/{row['b2t_base']} ({r(row['b2t'], row['b2t_base'])}) "
              f"t2t {r(row['t2t'], row['t2t_base'])} wall {row['wall']:.1f}/{row['wall_base']:.1f} "
              f"s_eq(final) {seq if seq is None else round(seq,1)} s_eq@{mid[0]} {seq_mid if seq_mid is None else round(seq_mid,1)} "
              f"jumps {row['accepted']}/{row['attempted']} ({row['process_s']:.0f}s)", flush=True)
        with open(f"{OUT}/rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    main()
