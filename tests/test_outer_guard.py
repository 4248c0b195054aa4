"""The guard that stops `outer`'s outer steps when they make the loss worse
(`keras_hybrid.control.OuterGuard`, config `outer_patience`)."""

import json

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.control import OuterGuard
from keras_hybrid.messages import describe
from keras_hybrid.report import RunStatistics
from tests.helpers import build_mlp
from tests.helpers import compile_model

# `outer` with short phases: a jump every 12 steps from step 8 on.
SHORT_OUTER = {"preset": "outer", "warmup_steps": 8, "full_steps": 8,
               "max_quiet_phases": 0}


def guard(patience=2, check_batches=True):
    return OuterGuard(patience, post_steps=4, pre_steps=8,
                      stats=RunStatistics(), check_batches=check_batches)


def jump_with(g, before, after, step=0):
    """Feeds 8 losses of `before`, a jump, then 4 losses of `after`."""
    for _ in range(8):
        g.observe(before)
    g.jumped(step)
    for _ in range(4):
        g.observe(after)


# ---------------------------------------------------------------- the rule
def test_held_out_loss_worse_for_patience_epochs_stops_the_outer_steps():
    g = guard(patience=2)
    g.epoch_end(10, 1.0)  # before any outer step: the first best
    jump_with(g, 1.0, 1.0)
    g.epoch_end(20, 1.1)
    assert not g.stopped and g.wait == 1
    jump_with(g, 1.0, 1.0)
    g.epoch_end(30, 1.05)
    assert g.stopped and g.stop_step == 30
    (event,) = g.stats.events
    assert event["signal"] == "held_out_loss"
    kind, message = describe(event)
    assert kind == "outer_stopped"
    assert message.startswith("step 30: stopped the outer steps for the "
                              "rest of the run, as the held-out loss did not "
                              "improve on 1 in 2 epochs with outer steps")
    assert "training goes on as plain fit()" in message
    summary = g.summary()
    assert summary["stopped"] and summary["best_val_loss"] == 1.0
    assert summary["reason"].startswith("the held-out loss did not improve")


def test_a_new_best_resets_and_epochs_without_outer_steps_do_not_count():
    g = guard(patience=2)
    g.epoch_end(10, 1.0)
    jump_with(g, 1.0, 1.0)
    g.epoch_end(20, 1.2)
    jump_with(g, 1.0, 1.0)
    g.epoch_end(30, 0.9)  # a new best
    assert g.wait == 0
    g.epoch_end(40, 1.5)  # no outer step in this epoch
    g.epoch_end(50, 1.5)
    assert not g.stopped and g.wait == 0
    g.epoch_end(60, None)  # an epoch that did not validate
    assert not g.stopped and not g.stats.events


def test_patience_zero_never_stops():
    g = guard(patience=0)
    g.epoch_end(10, 1.0)
    for step in range(20, 100, 10):
        jump_with(g, 1.0, 2.0)
        g.epoch_end(step, 1.0 + step)
    assert not g.stopped and not g.stats.events


def test_check_batch_loss_rising_after_jumps_stops_without_validation():
    g = guard(patience=2)
    jump_with(g, 1.0, 1.25)
    assert not g.stopped
    jump_with(g, 1.0, 1.0)  # one harmless jump counts the harm down
    jump_with(g, 1.0, 1.25)
    assert not g.stopped
    jump_with(g, 1.0, 1.25)
    assert g.stopped
    assert g.check_ratios == [1.25, 1.0, 1.25, 1.25]
    (event,) = g.stats.events
    assert event["signal"] == "check_batch_loss"
    assert "rose over 10% above the loss before them" in describe(event)[1]


def test_check_batch_loss_only_records_unless_asked():
    g = guard(patience=2, check_batches=False)
    for _ in range(5):
        jump_with(g, 1.0, 1.5)
    assert not g.stopped and g.check_ratios == [1.5] * 5


def test_check_batch_loss_within_tolerance_never_stops():
    g = guard(patience=2)
    for _ in range(20):
        jump_with(g, 1.0, 1.08)  # the usual small rise after a jump
    assert not g.stopped and len(g.check_ratios) == 20


def test_once_a_held_out_loss_is_seen_it_alone_decides():
    g = guard(patience=2)
    g.epoch_end(10, 1.0)
    for _ in range(4):
        jump_with(g, 1.0, 1.5)
    assert not g.stopped


def test_state_round_trips_through_json_and_continues_the_same():
    g = guard(patience=3)
    g.epoch_end(10, 1.0)
    jump_with(g, 1.0, 1.0)
    g.epoch_end(20, 1.2)
    for _ in range(8):
        g.observe(1.0)
    g.jumped(25)
    g.observe(1.3)  # in the middle of a comparison
    state = json.loads(json.dumps(g.get_state()))
    other = guard(patience=3)
    other.set_state(state)
    for each in (g, other):
        for _ in range(3):
            each.observe(1.3)
        each.epoch_end(30, 1.1)
    assert other.get_state() == g.get_state()
    assert other.wait == 2 and other.check_ratios == [1.0, 1.3]


# ------------------------------------------------------------------ config
def test_outer_preset_enables_the_guard_and_others_do_not():
    assert kh.HybridConfig.preset("outer").outer_patience == 2
    for name in ("default", "balanced", "plain"):
        assert kh.HybridConfig.preset(name).outer_patience == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", None])
def test_bad_outer_patience_is_refused(value):
    with pytest.raises(ValueError, match=r"outer_patience.*Received: "
                                         r"outer_patience="):
        kh.HybridConfig(outer_patience=value)
    with pytest.raises(ValueError, match="outer_patience"):
        kh.HybridConfig.from_dict({"preset": "outer", "outer_patience": value})


@pytest.mark.parametrize("value", [1, "yes", None])
def test_bad_outer_check_batches_is_refused(value):
    with pytest.raises(ValueError, match=r"`outer_check_batches` must be a "
                                         r"boolean. Received: "
                                         r"outer_check_batches="):
        kh.HybridConfig(outer_check_batches=value)


# ------------------------------------------------------------- in a fit()
def fit_outer(x, y, validation, config, epochs=8, callbacks=(), model=None):
    model = model or compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(config, verbose=1)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
              validation_data=validation,
              callbacks=[callback, *callbacks])
    return model, callback.report()


def made_jumps(report):
    return [j["step"] for j in report["jumps"]
            if j["accepted_scale"] is not None]


@pytest.mark.backends
def test_fit_stops_outer_steps_once_the_held_out_loss_worsens(
        classification_data, capsys):
    x, y = classification_data
    x, y = x[:256], y[:256]
    # Held-out labels shifted by one: the better the model fits, the worse
    # its held-out loss.
    model, report = fit_outer(x, y, (x, (y + 1) % 10), SHORT_OUTER)
    guard_entry = report["outer_guard"]
    assert guard_entry["stopped"] and guard_entry["patience"] == 2
    stop = guard_entry["stop_step"]
    assert stop < 64
    jumps = made_jumps(report)
    assert jumps and max(jumps) <= stop
    events = [e for e in report["divergence_events"]
              if e["signal"] == "held_out_loss"]
    assert len(events) == 1 and events[0]["step"] == stop
    printed = capsys.readouterr().out
    assert printed.count("stopped the outer steps for the rest of the run, "
                         "as the held-out loss did not improve") == 1
    # The same run with the guard off keeps jumping to the end.
    _, unguarded = fit_outer(x, y, (x, (y + 1) % 10),
                             dict(SHORT_OUTER, outer_patience=0))
    assert not unguarded["outer_guard"]["stopped"]
    assert max(made_jumps(unguarded)) > stop


@pytest.mark.backends
def test_fit_keeps_outer_steps_where_the_held_out_loss_improves():
    # A smooth problem: noiseless least squares, still converging at the
    # end; its held-out loss falls every epoch.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 8)).astype("float32")
    w = rng.normal(size=(8, 1)).astype("float32")
    xv = rng.normal(size=(128, 8)).astype("float32")
    keras.utils.set_random_seed(0)
    model = kh.HybridModel.wrap(keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(1)]))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    callback = kh.HybridPredictCallback(SHORT_OUTER, verbose=0)
    history = model.fit(x, x @ w, batch_size=32, epochs=8, verbose=0,
                        validation_data=(xv, xv @ w), callbacks=[callback])
    val = history.history["val_loss"]
    assert all(b < a for a, b in zip(val, val[1:]))
    report = callback.report()
    assert not report["outer_guard"]["stopped"]
    assert max(made_jumps(report)) > 60  # still jumping in the last epoch


def test_fit_without_validation_judges_the_check_batch_loss_if_asked(
        classification_data):
    x, y = classification_data
    # Jumps far too long for this problem: the loss after each is higher.
    config = dict(SHORT_OUTER, predictor={"outer_learning_rate": 10.0,
                                          "momentum": 0.9})
    _, default = fit_outer(x[:256], y[:256], None, config)
    assert not default["outer_guard"]["stopped"]
    assert max(default["outer_guard"]["check_ratios"]) > 1.1
    config["outer_check_batches"] = True
    _, report = fit_outer(x[:256], y[:256], None, config)
    entry = report["outer_guard"]
    assert entry["stopped"] and entry["best_val_loss"] is None
    assert all(r > 1.1 for r in entry["check_ratios"][-2:])
    assert max(made_jumps(report)) <= entry["stop_step"]
    (event,) = [e for e in report["divergence_events"]
                if e["signal"] == "check_batch_loss"]
    assert event["outcome"].startswith("outer_steps_stopped")


def test_resume_keeps_the_stop(classification_data, tmp_path):
    x, y = classification_data
    x, y = x[:256], y[:256]
    directory = tmp_path / "ckpts"
    config = dict(SHORT_OUTER, checkpoint={"directory": str(directory),
                                           "save_interval": 8})
    _, report = fit_outer(x, y, (x, (y + 1) % 10), config)
    stop = report["outer_guard"]["stop_step"]
    assert report["outer_guard"]["stopped"] and stop < 64
    # The last checkpoint (step 64) was written after the stop.
    resumed = compile_model(kh.HybridModel.wrap(build_mlp(1)))
    resumed.load_checkpoint(kh.latest_checkpoint(directory))
    _, after = fit_outer(x, y, (x, (y + 1) % 10), config, epochs=12,
                         model=resumed)
    entry = after["outer_guard"]
    assert entry["stopped"] and entry["stop_step"] == stop
    assert max(made_jumps(after)) <= stop  # no jump after the resume
    assert after["training_summary"]["total_steps"] == 96
