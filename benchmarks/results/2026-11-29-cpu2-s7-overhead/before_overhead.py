"""The same fit() overhead measurement on the code before this round (f4e521e):
plain fit against the hybrid that never predicts (confidence_threshold 1.0),
alternated, the window after the warmup and two FULL phases."""
import sys, time, json
import keras, numpy as np
import keras_hybrid as kh
from keras_hybrid.bench.tasks import get_task
from keras_hybrid.bench.arms import compile_model
task_name, reps, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
task = get_task(task_name, quick=True)
cfg = kh.HybridConfig.preset("balanced"); cfg.confidence_threshold = 1.0
start = cfg.warmup_steps + 2 * cfg.full_steps + 1
b = task.batch_size; n = b * (start + steps)
r = -(-n // len(task.x_train))
x = np.concatenate([task.x_train] * r)[:n]; y = np.concatenate([task.y_train] * r)[:n]
class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == start:
            keras.ops.convert_to_numpy(self.model.trainable_variables[0]); self.t = time.perf_counter()
    def on_train_end(self, logs=None):
        keras.ops.convert_to_numpy(self.model.trainable_variables[0]); self.s = time.perf_counter() - self.t
keras.utils.set_random_seed(0)
p = compile_model(task.build_model(0), task, task.learning_rate)
keras.utils.set_random_seed(0)
m = kh.HybridModel.wrap(task.build_model(0)); compile_model(m, task, task.learning_rate)
def fit(model, h):
    c = Clock(); cbs = [c]
    if h: cbs.insert(0, kh.HybridPredictCallback(cfg))
    model.fit(x, y, batch_size=b, epochs=1, verbose=0, shuffle=False, callbacks=cbs); return c.s
fit(p, False); fit(m, True)
t = {False: [], True: []}
for i in range(reps):
    order = [(p, False), (m, True)]
    if i % 2: order.reverse()
    for model, h in order: t[h].append(fit(model, h))
ratios = [h / q for q, h in zip(t[False], t[True])]
print(json.dumps({"task": task_name, "backend": keras.backend.backend(), "code": "f4e521e", "plain_s": t[False], "hybrid_s": t[True],
                  "ratio_of_min": min(t[True]) / min(t[False]), "ratio_median": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios)}))
