"""Where `outer`'s time goes on the 16x16-image CNN: one `fit()` of `run.py`'s
`cnn16` task (seed 1) with the runner's parts timed in place.

Unlike `run.py` this wraps internal methods (of the runner split into
objects: `calls.StepCalls`, `cycle.PhaseCycle`, `shadow.ShadowScoring`,
`jump_check.JumpCheck`, `recovery.Recovery`, the trajectory and the
predictor) with a wall clock, so it follows the code it was written for;
it prints, per part, the calls, the first call (which traces its compiled
functions), the median of the others and the total. With `plain` it times
Keras' own train function of the plain model instead.

Usage: python profile.py [outer|plain] [seed]
"""

import collections
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TIMES = collections.defaultdict(list)


def timed(owner, name, label=None):
    function = getattr(owner, name)
    label = label or f"{owner.__name__}.{name}"

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def instrument_hybrid():
    from keras_hybrid import calls, cycle, jump_check, recovery, runner
    from keras_hybrid import shadow, trajectory
    from keras_hybrid.dynamics import long_window

    parts = [
        (runner.HybridRunner, "_run"), (runner.HybridRunner, "_after_step"),
        (runner.HybridRunner, "read_statistics"),
        (calls.StepCalls, "full"), (calls.StepCalls, "skip"),
        (calls.StepCalls, "train_batches"),
        (cycle.PhaseCycle, "_end_full"), (cycle.PhaseCycle, "_start_predict"),
        (cycle.PhaseCycle, "end_predict"), (cycle.PhaseCycle, "start_full"),
        (jump_check.JumpCheck, "search"),
        (shadow.ShadowScoring, "score_and_predict"),
        (recovery.Recovery, "save_good_point"),
        (trajectory.WeightTrajectory, "finish_phase"),
        (trajectory.WeightTrajectory, "close_half"),
        (long_window.LongWindowPredictor, "update_from_observation"),
        (long_window.LongWindowPredictor, "predict_phase_outcome"),
    ]
    for owner, name in parts:
        timed(owner, name)


def instrument_plain():
    from keras.src.backend.tensorflow import trainer

    make = trainer.TensorFlowTrainer.make_train_function

    def make_train_function(self, force=False):
        make(self, force)
        function = self.train_function
        if getattr(function, "_timed", False):
            return

        def train_function(iterator):
            start = time.perf_counter()
            try:
                return function(iterator)
            finally:
                TIMES["keras train_function"].append(
                    time.perf_counter() - start)

        train_function._timed = True
        self.train_function = train_function

    trainer.TensorFlowTrainer.make_train_function = make_train_function


def main(arm="outer", seed=1):
    import keras

    import keras_hybrid as kh
    import run

    (instrument_plain if arm == "plain" else instrument_hybrid)()
    (x, y), (xv, yv) = run._synthetic_images(seed)
    keras.utils.set_random_seed(seed)
    model = run._small_cnn(None)
    callbacks = []
    if arm != "plain":
        model = kh.HybridModel.wrap(model)
        callbacks = [kh.HybridPredictCallback(arm, verbose=0)]
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=15, validation_data=(xv, yv),
              callbacks=callbacks, verbose=0)
    print(f"{arm}: fit() {time.perf_counter() - start:.2f} s")
    rows = []
    for label, values in TIMES.items():
        rest = values[1:] or values
        rows.append((sum(values), label, len(values), values[0],
                     statistics.median(rest)))
    for total, label, count, first, median in sorted(rows, reverse=True):
        print(f"  {label:46s} calls {count:4d}  first {first * 1e3:7.1f} ms"
              f"  median {median * 1e3:6.2f} ms  total {total * 1e3:7.1f} ms")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["outer"]), *[int(a) for a in sys.argv[2:3]])
