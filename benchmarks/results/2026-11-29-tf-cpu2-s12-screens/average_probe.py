"""Probe: Keras' optimizer EMA (use_ema) on plain and outer arms.
python probe.py TASK SCHEDULE SEED ARM EMA_MOMENTUM(0=off)"""
import json, os, sys, time
task_name, schedule, seed, arm_kind, ema = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
from keras_hybrid.bench import tasks as T, harness, arms, figures
from keras_hybrid.config import HybridConfig
orig = T.Task._optimizer if hasattr(T, "Task") else None
cls = type(T.get_task(task_name))
base_opt = cls._optimizer
def patched(self, lr):
    o = base_opt(self, lr)
    if ema > 0:
        cfg = o.get_config(); cfg.update(use_ema=True, ema_momentum=ema)
        o = type(o).from_config(cfg)
    return o
cls._optimizer = patched
task = T.get_task(task_name)
POST = []
_end = arms.EvalClock.on_train_end if hasattr(arms.EvalClock, "on_train_end") else None
def on_train_end(self, logs=None):
    if _end: _end(self, logs)
    POST.append(self.validator(self.model)[0])
arms.EvalClock.on_train_end = on_train_end
common = harness.arm_common(task, harness._payload(task, task_name), False, None, schedule)
spec = {**common, "seed": seed, "label": arm_kind, "progress": False, "arm": arm_kind, "name": arm_kind}
if arm_kind == "hybrid":
    c = harness._with_predictor(HybridConfig.resolve("outer"), "nesterov")
    spec["config"] = c if isinstance(c, dict) else c.to_dict()
if arm_kind in ("wsd", "equal-budget"):
    spec["budget"] = int(sys.argv[6])
t = time.time()
r = arms.run_arm(spec)
ev = r["evals"]
best = min(e["val_loss"] for e in ev)
out = {"task": task_name, "schedule": schedule, "seed": seed, "arm": arm_kind, "ema": ema,
       "final": ev[-1]["val_loss"], "post_fit": POST[-1] if POST else None, "best": best, "backward": r["backward_passes"],
       "curve": [(e["step"], e["val_loss"]) for e in ev], "s": time.time() - t}
print(json.dumps({k: v for k, v in out.items() if k != "curve"}), flush=True)
with open("/tmp/ema/rows.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
