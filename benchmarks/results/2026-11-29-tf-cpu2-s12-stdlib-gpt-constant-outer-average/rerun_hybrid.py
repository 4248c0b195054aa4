"""Times the hybrid arm of stdlib-gpt (constant rate, seed 0) with and
without the weight average, one after the other in one process."""
import time, sys, json
from keras_hybrid.bench import arms, harness
from keras_hybrid.bench.tasks import get_task
from keras_hybrid.config import HybridConfig
task = get_task("stdlib-gpt")
common = harness.arm_common(task, "stdlib-gpt", False, None, "constant")
cfg = harness._with_predictor(HybridConfig.resolve("outer"), "nesterov")
for wa in [0.99, None]:
    t = time.perf_counter()
    r = arms.run_arm({**common, "arm": "hybrid", "name": "h", "seed": 0, "config": cfg, "progress": False, "weight_average": wa})
    print(wa, round(r["wall_clock_s"], 1), round(time.perf_counter() - t, 1), flush=True)
