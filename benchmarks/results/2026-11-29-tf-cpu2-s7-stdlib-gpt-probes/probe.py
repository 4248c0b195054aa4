"""Single-arm probes (seed 100+): hybrid arm in-process, with the
long-window predictors' gate values logged."""
import json, sys, time, collections
import numpy as np
from keras_hybrid.bench import arms, harness
from keras_hybrid.bench.tasks import get_task
from keras_hybrid.config import HybridConfig
from keras_hybrid.dynamics import long_window

log = collections.Counter()
agreements = []
orig = long_window.LongWindowPredictor.update_from_observation
def patched(self, *a, **k):
    orig(self, *a, **k)
    agreements.append(None if self.agreement is None else round(self.agreement, 3))
long_window.LongWindowPredictor.update_from_observation = patched

task_name, schedule, kind, seed = sys.argv[1:5]
overrides = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
task = get_task(task_name)
import os
if os.environ.get("TASK_LR"):
    task.learning_rate = float(os.environ["TASK_LR"])
common = harness.arm_common(task, task, False, None, schedule)
base = HybridConfig.resolve("balanced").to_dict()
pred = overrides.pop("predictor", {})
base["predictor"].update({"type": kind if kind in ("holt", "nesterov", "drift") else "drift", **pred})
base.update(overrides)
config = HybridConfig.from_dict(base).to_dict()
spec = {**common, "seed": int(seed), "progress": True, "label": f"{kind}"}
if kind in ("baseline",):
    r = arms.run_arm({**spec, "arm": "baseline"})
elif kind.startswith("wsd") or kind.startswith("equal"):
    r = arms.run_arm({**spec, "arm": kind.split(":")[0], "budget": int(kind.split(":")[1])})
else:
    r = arms.run_arm({**spec, "arm": "hybrid", "config": config})
    rep = r["report"]
    ts = rep["training_summary"]
    print("summary", {k: ts.get(k) for k in ("backward_passes", "forward_passes", "predictions_attempted", "predictions_accepted", "backward_reduction_pct")})
    print("agreements", agreements[:80])
    jumps = rep.get("jumps") or rep.get("phase_statistics", {}).get("jumps")
    print("jumps", [(j["step"], round(j["base_loss"],4), [(s, round(l,4)) for s,l in j["tried"]], j["accepted_scale"]) for j in rep["jumps"]][:40])
evals = [(e["step"], e.get("backward"), round(e["val_loss"], 4)) for e in r["evals"]]
print("evals", evals)
print("final", r["evals"][-1]["val_loss"], "backward", r["backward_passes"], "wall", round(r["wall_clock_s"], 1))
