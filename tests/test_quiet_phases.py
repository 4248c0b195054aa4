"""While prediction does not pay, the FULL phases that fit the predictor
come in windows of two separated by growing stretches of quiet FULL phases
(`HybridConfig.max_quiet_phases`).

Marked `backends`: `tests/test_backends.py` runs these under JAX and
PyTorch too.
"""

import keras
import pytest

import keras_hybrid as kh
from keras_hybrid.control import QuietBackoff
from keras_hybrid.control.quiet import QUIET_WINDOW
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

pytestmark = pytest.mark.backends


def _fit(x, y, epochs=1, saves=None, forgotten=None, **config):
    """A hybrid fit that records the step at which each fitting FULL phase
    ended (`finish_phase` is the fitting phases' end), in `saves` (a list,
    if given) the steps at which the rollback point was taken, and in
    `forgotten` (a list, if given) those at which the drift was forgotten
    (a quiet stretch starts)."""
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(**config))
    fitted = []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            runner = callback.runner
            trajectory = runner.trajectory if runner else None
            if trajectory is not None and not hasattr(trajectory, "_spied"):
                finish = trajectory.finish_phase

                def spied(*args, **kwargs):
                    fitted.append(runner.controller.step)
                    return finish(*args, **kwargs)

                trajectory.finish_phase = spied
                trajectory._spied = True
                if forgotten is not None:
                    forget = trajectory.forget_drift

                    def forgetting():
                        forgotten.append(runner.controller.step)
                        return forget()

                    trajectory.forget_drift = forgetting
                if saves is not None:
                    save = runner.recovery.save_good_point

                    def saving(step):
                        saves.append(step)
                        return save(step)

                    runner.recovery.save_good_point = saving

    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[callback, Recorder()])
    return callback.runner, fitted


def _expected_pattern(phases, limit):
    """`True` (fitting) / `False` (quiet) for each FULL phase when no
    prediction is ever accepted."""
    pattern, misses = [], 0
    while len(pattern) < phases:
        pattern += [True] * QUIET_WINDOW
        pattern += [False] * min(limit, 2 ** misses)
        misses += 1
    return pattern[:phases]


def test_quiet_stretches_double_up_to_the_limit(classification_data):
    x, y = classification_data  # 1000 samples: 31 steps per epoch
    forgotten = []
    runner, fitted = _fit(x, y, epochs=4, forgotten=forgotten,
                          enable_prediction=False, max_quiet_phases=4)
    full_steps = runner.config.full_steps
    warmup = runner.config.warmup_steps
    phases = (runner.controller.step - warmup) // full_steps
    pattern = _expected_pattern(phases, limit=4)
    assert [warmup + (i + 1) * full_steps
            for i, fits in enumerate(pattern) if fits] == fitted
    assert runner.stats.quiet_phases == pattern.count(False)
    assert runner.stats.quiet_phases >= 8
    # Each quiet stretch starts afresh: the drift of the window before it
    # is forgotten where the window ends.
    ahead = _expected_pattern(phases + 1, limit=4)
    starts = [warmup + (i + 1) * full_steps for i in range(phases)
              if ahead[i] and not ahead[i + 1]]
    assert forgotten == starts
    report = runner.stats
    assert report.backward == runner.controller.step  # nothing skipped


def test_rollback_point_moves_at_the_end_of_a_quiet_stretch(
    classification_data,
):
    x, y = classification_data
    saves = []
    runner, _ = _fit(x, y, epochs=4, saves=saves, enable_prediction=False,
                     max_quiet_phases=4)
    full_steps = runner.config.full_steps
    warmup = runner.config.warmup_steps
    phases = (runner.controller.step - warmup) // full_steps
    pattern = _expected_pattern(phases + 1, limit=4)
    # A fitting phase's end and a quiet stretch's last phase take it; the
    # phases inside a stretch do not (other saves fall between phase ends).
    expected = [
        warmup + (i + 1) * full_steps
        for i, fits in enumerate(pattern[:-1])
        if fits or pattern[i + 1]
    ]
    at_phase_ends = [
        step for step in saves
        if step > warmup and (step - warmup) % full_steps == 0
    ]
    assert at_phase_ends == expected
    quiet = pattern[:-1].count(False)
    assert quiet > len(expected) - (len(pattern) - 1 - quiet)
    assert runner.recovery.good_step == saves[-1]


def test_no_quiet_phases_when_disabled(classification_data):
    x, y = classification_data
    runner, fitted = _fit(x, y, enable_prediction=False, max_quiet_phases=0)
    phases = (runner.controller.step - runner.config.warmup_steps) // (
        runner.config.full_steps
    )
    assert len(fitted) == phases
    assert runner.stats.quiet_phases == 0


def test_window_then_doubling_stretch():
    backoff = QuietBackoff(max_quiet_phases=8)
    backoff.misses = 3
    assert not backoff.missed()  # the window is not over
    assert (backoff.quiet_left, backoff.misses) == (0, 3)
    assert backoff.missed()
    assert (backoff.quiet_left, backoff.misses) == (8, 4)  # min(8, 2 ** 3)
    assert backoff.quiet and not backoff.at_stretch_end
    for left in range(7, 0, -1):
        backoff.quiet_phase_done()
        assert backoff.quiet_left == left
    assert backoff.quiet and backoff.at_stretch_end  # the stretch's last
    backoff.quiet_phase_done()
    assert not backoff.quiet


def test_backoff_outcomes_and_state():
    backoff = QuietBackoff(max_quiet_phases=4)
    backoff.rejected()  # a rejection closes the window at the next miss
    assert backoff.missed() and backoff.quiet_left == 1
    fresh = QuietBackoff(max_quiet_phases=4)
    fresh.set_state(backoff.get_state())
    assert fresh.get_state() == backoff.get_state() == {
        "quiet_left": 1, "misses": 1, "window": 0}
    backoff.paid()
    assert (backoff.misses, backoff.window) == (0, 0)
    assert not QuietBackoff(max_quiet_phases=0).missed()  # never quiet


def test_accepted_prediction_ends_the_back_off(classification_data):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(max_quiet_phases=8))
    outcomes = []

    class BackedOff(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            runner = callback.runner
            runner.quiet.misses = 5  # as if many windows had not paid
            record = runner.controller.record_prediction

            def spied(success):
                # (Recorded once the phase's outcome is settled.)
                outcomes.append((success, runner.quiet.misses))
                return record(success)

            runner.controller.record_prediction = spied

    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
              callbacks=[callback, BackedOff()])
    accepted = [misses for success, misses in outcomes if success]
    assert accepted and accepted[0] == 0
    assert callback.runner.stats.predictions_accepted >= 1


def test_max_quiet_phases_is_validated():
    with pytest.raises(ValueError, match="Received: max_quiet_phases=-1"):
        kh.HybridConfig(max_quiet_phases=-1)
    with pytest.raises(ValueError, match="must be an integer"):
        kh.HybridConfig(max_quiet_phases=2.5)
