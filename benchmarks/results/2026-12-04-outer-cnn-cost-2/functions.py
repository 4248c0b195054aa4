"""What `outer`'s phase-boundary functions cost on the 16x16-image CNN, run
eagerly until compiling pays (`lazy`, the default) or compiled from their
first call (`compiled`, as before).

One `fit()` of `../2026-12-04-outer-cnn-cost/run.py`'s `cnn16` task (seed 1)
with every `keras_hybrid.backends.LazilyCompiled` call timed (wall clock and
CPU time of the process): per function, its calls, the first call (a trace
where it is compiled at once), the median of the others, the totals, and
whether it ended compiled. Prints the fit's wall-clock and CPU time too.

Usage: python functions.py [lazy|compiled] [seed]
"""

import collections
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "2026-12-04-outer-cnn-cost"))

TIMES = collections.defaultdict(list)


def instrument(compile_at_once):
    from keras_hybrid.backends import LazilyCompiled

    if compile_at_once:
        LazilyCompiled.min_calls = 0
        LazilyCompiled.min_seconds = 0.0
    call = LazilyCompiled.__call__

    def timed(function, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return call(function, *args)
        finally:
            TIMES[function].append((time.perf_counter() - wall,
                                    time.process_time() - cpu))

    LazilyCompiled.__call__ = timed


def main(mode="lazy", seed=1):
    import keras

    import keras_hybrid as kh
    import run

    instrument(mode == "compiled")
    (x, y), (xv, yv) = run._synthetic_images(seed)
    keras.utils.set_random_seed(seed)
    model = kh.HybridModel.wrap(run._small_cnn(None))
    callback = kh.HybridPredictCallback("outer", verbose=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    wall, cpu = time.perf_counter(), os.times()
    history = model.fit(x, y, batch_size=32, epochs=15,
                        validation_data=(xv, yv), callbacks=[callback],
                        verbose=0)
    after = os.times()
    print(f"{mode}: fit() {time.perf_counter() - wall:.2f} s wall, "
          f"{after.user - cpu.user + after.system - cpu.system:.2f} s CPU; "
          f"final val loss {history.history['val_loss'][-1]:.6f}, "
          f"{len(callback.report()['jumps'])} jumps")
    total_wall = total_cpu = 0.0
    rows = sorted(TIMES.items(), key=lambda kv: -sum(c for _, c in kv[1]))
    for function, values in rows:
        walls = [w for w, _ in values]
        cpus = [c for _, c in values]
        total_wall += sum(walls)
        total_cpu += sum(cpus)
        name = function.name
        state = "compiled" if function.compiled is not None else "eager"
        print(f"  {name:22s} {state:8s} calls {len(values):4d}  first "
              f"{walls[0] * 1e3:7.1f} ms  median "
              f"{statistics.median(walls[1:] or walls) * 1e3:6.2f} ms  "
              f"total {sum(walls) * 1e3:7.1f} ms wall, "
              f"{sum(cpus) * 1e3:7.1f} ms CPU")
    print(f"  all: {total_wall * 1e3:.1f} ms wall, "
          f"{total_cpu * 1e3:.1f} ms CPU")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["lazy"]), *[int(a) for a in sys.argv[2:3]])
