"""What the callback says: intervention messages, re-validation when training
begins, and where the hybrid's log entries go (History, not the progress
bar, unless asked)."""

import io
import contextlib

import keras
import pytest

import keras_hybrid as kh
from keras_hybrid.messages import InterventionLog
from keras_hybrid.messages import describe
from keras_hybrid.messages import describe_jump
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

HYBRID_KEYS = ("phase", "confidence", "backward_reduction", "predicted_loss")


@pytest.mark.parametrize("outcome,kind", [
    ("weights_restored", "restore"),
    ("rejected_before_apply", "discarded"),
    ("ForceFullPhase", "forced_full"),
    ("ReducePredictRatio", "shorter_predictions"),
    ("RollbackAndRetry: to step 40, learning rate -> 0.005", "rollback"),
    ("Abort: weights and optimizer restored to step 40", "abort"),
    ("something new", "other"),
])
def test_describe_names_kind_step_and_signal(outcome, kind):
    got_kind, message = describe(
        {"step": 57, "signal": "loss_spike", "outcome": outcome}
    )
    assert got_kind == kind
    assert message.startswith("step 57: ")
    assert "(signal: loss_spike)" in message
    if kind == "rollback":
        assert message == (
            "step 57: rolled back to the last good weights (to step 40, "
            "learning rate -> 0.005) (signal: loss_spike)."
        )


@pytest.mark.parametrize("kind,outcome,words", [
    ("rollback", "RollbackAndRetry: to step 40, learning rate -> 0.005",
     "rolled back to the last good weights (to step 40, learning rate -> "
     "0.005)"),
    ("abort", "Abort: weights and optimizer restored to step 40",
     "training stopped (weights and optimizer restored to step 40)"),
    ("outer_stopped", "outer_steps_stopped: the loss rose",
     "stopped the outer steps for the rest of the run, as the loss rose"),
    ("restore", "weights_restored", "restored the weights exactly"),
])
def test_describe_takes_the_recorded_kind(kind, outcome, words):
    got_kind, message = describe(
        {"step": 3, "kind": kind, "signal": "s", "outcome": outcome})
    assert got_kind == kind
    assert words in message


def test_the_recorded_kind_decides_over_the_outcome_text():
    # The kind is recorded, not recovered from the outcome's wording.
    kind, message = describe({"step": 3, "kind": "forced_full",
                              "signal": "s", "outcome": "Abort: x"})
    assert kind == "forced_full"
    assert "forced full training" in message
    kind, message = describe({"step": 3, "kind": "something_new",
                              "signal": "s", "outcome": "done: it"})
    assert kind == "something_new" and "step 3: it (signal: s)." == message


def test_every_recovery_action_names_a_kind_with_a_message():
    from keras_hybrid import divergence
    from keras_hybrid.messages import KINDS

    for action in (divergence.ReducePredictRatio, divergence.ForceFullPhase,
                   divergence.RollbackAndRetry, divergence.Abort):
        assert action.kind in KINDS


def test_describe_reads_the_older_rollback_outcome_without_a_stray_comma():
    _, message = describe({
        "step": 1, "signal": "non_finite_loss",
        "outcome": "RollbackAndRetry, learning rate -> 0.005 (to step 0)",
    })
    assert "(," not in message
    assert "last good weights (learning rate -> 0.005 (to step 0))" in message


def test_intervention_log_reports_each_kind_once_per_epoch():
    lines = []
    log = InterventionLog(lines.append)
    events = [{"step": s, "signal": "forward_check",
               "outcome": "weights_restored"} for s in (10, 20, 30)]
    log.update(events[:2], epoch=0)
    log.update(events, epoch=0)
    assert len(lines) == 1 and "Epoch 1" in lines[0] and "step 10" in lines[0]
    events.append({"step": 31, "signal": "loss_spike",
                   "outcome": "ForceFullPhase"})
    log.update(events, epoch=0)
    assert len(lines) == 2 and "forced full training" in lines[1]
    log.end_epoch(0)
    assert lines[2].endswith("forced_full x1, restore x3.")
    events.append({"step": 60, "signal": "forward_check",
                   "outcome": "weights_restored"})
    log.update(events, epoch=1)  # a new epoch reports the kind again
    assert len(lines) == 4 and "Epoch 2" in lines[3] and "step 60" in lines[3]
    log.end_epoch(1)
    assert len(lines) == 4  # nothing repeated in epoch 2


def test_describe_jump_names_step_and_scale_and_the_checked_losses():
    assert describe_jump(
        {"step": 393, "base_loss": None, "tried": [], "accepted_scale": 10.0}
    ) == "step 393: jumped the weights ahead (scale 10)."
    assert describe_jump({
        "step": 226, "base_loss": 1.8432, "accepted_scale": 2.0,
        "tried": [(1.0, 1.8201), (2.0, 1.8012), (4.0, 1.9)],
    }) == "step 226: jumped the weights ahead (scale 2; check loss 1.843 -> 1.801)."


def _jump(step, scale=10.0):
    return {"step": step, "base_loss": None, "tried": [],
            "accepted_scale": scale}


def test_intervention_log_reports_accepted_jumps_once_per_epoch_with_a_count():
    lines = []
    log = InterventionLog(lines.append)
    jumps = [_jump(121), _jump(155)]
    log.update([], epoch=1, jumps=jumps[:1])
    log.update([], epoch=1, jumps=jumps)
    assert lines == ["\nEpoch 2, HybridPredictCallback: step 121: jumped "
                     "the weights ahead (scale 10)."]
    # A rejected jump is reported by its event (restore), not as a jump.
    jumps.append(dict(_jump(189), accepted_scale=None))
    events = [{"step": 191, "signal": "forward_check",
               "outcome": "weights_restored"}]
    log.update(events, epoch=1, jumps=jumps)
    assert len(lines) == 2 and "restored the weights" in lines[1]
    log.end_epoch(1)
    assert lines[2] == ("Epoch 2, HybridPredictCallback: jumps this epoch: "
                        "2; interventions: restore x1.")
    jumps.append(_jump(223))
    log.update(events, epoch=2, jumps=jumps)  # reported again in epoch 3
    assert lines[3].startswith("\nEpoch 3, HybridPredictCallback: step 223")
    log.end_epoch(2)
    assert len(lines) == 4  # one jump in epoch 3: no count line


class _InjectShorter(keras.callbacks.Callback):
    """Records a prediction-error caution (a shorter horizon), as the
    runner does, at every batch."""

    def __init__(self, hybrid):
        super().__init__()
        self.hybrid = hybrid

    def on_train_batch_end(self, batch, logs=None):
        runner = self.hybrid.runner
        runner.stats.event(runner.controller.step, "shorter_predictions",
                           "prediction_error", "ReducePredictRatio")


@pytest.mark.parametrize("fixed", [False, True])
def test_shorter_predictions_are_not_reported_where_lengths_are_fixed(
        classification_data, fixed):
    # outer's PREDICT phases are 2 steps, always: "shortened the next
    # predictions" would be false (the report keeps the event).
    x, y = classification_data
    config = eager_config(max_predict_steps=6 if fixed else 10)
    callback = kh.HybridPredictCallback(config, verbose=1)
    _, text = _fit(x, y, callback, verbose=0,
                   extra=[_InjectShorter(callback)], epochs=1)
    assert ("shortened the next predictions" in text) != fixed, text
    assert ("shorter_predictions x" in text) != fixed, text
    events = callback.report()["divergence_events"]
    assert sum(e["outcome"] == "ReducePredictRatio" for e in events) >= 7


def test_intervention_log_ignores_the_kinds_it_is_told_to():
    lines = []
    log = InterventionLog(lines.append, ignore=("shorter_predictions",))
    events = [{"step": s, "signal": "prediction_error",
               "outcome": "ReducePredictRatio"} for s in (3, 4)]
    log.update(events, epoch=0, jumps=[_jump(2), _jump(5)])
    log.end_epoch(0)
    assert lines == [
        "\nEpoch 1, HybridPredictCallback: step 2: jumped the weights ahead "
        "(scale 10).",
        "Epoch 1, HybridPredictCallback: jumps this epoch: 2."]


class _InjectJumps(keras.callbacks.Callback):
    """Records accepted jumps in the runner's statistics, as the runner
    does, at given batches."""

    def __init__(self, hybrid, batches):
        super().__init__()
        self.hybrid, self.batches = hybrid, batches

    def on_train_batch_end(self, batch, logs=None):
        if batch in self.batches:
            runner = self.hybrid.runner
            runner.stats.jumps.append(_jump(runner.controller.step))


def test_accepted_jumps_are_printed_once_per_epoch_with_a_count(
        classification_data):
    x, y = classification_data
    callback = kh.HybridPredictCallback(
        eager_config(enable_prediction=False), verbose=1)
    extra = [_InjectJumps(callback, batches={1, 4, 6})]
    _, text = _fit(x, y, callback, verbose=0, extra=extra)
    jumped = [line for line in text.splitlines()
              if "jumped the weights ahead (scale 10)" in line]
    assert len(jumped) == 2, text  # epochs 1 and 2, first jump of each
    assert jumped[0].startswith("Epoch 1, HybridPredictCallback: step ")
    assert text.count("jumps this epoch: 3.") == 2, text


class _Inject(keras.callbacks.Callback):
    """Records an intervention in the runner's statistics, as the runner
    does, at given batches."""

    def __init__(self, hybrid, batches):
        super().__init__()
        self.hybrid, self.batches = hybrid, batches

    def on_train_batch_end(self, batch, logs=None):
        if batch in self.batches:
            self.hybrid.runner.stats.event(
                self.hybrid.runner.controller.step, "rollback", "loss_spike",
                "RollbackAndRetry: to step 4, learning rate -> 0.005",
            )


def _fit(x, y, callback, verbose, extra=(), epochs=2):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.fit(
            x[:256], y[:256], batch_size=32, epochs=epochs, verbose=verbose,
            callbacks=[*extra, callback],
        )
    return history, out.getvalue()


def test_interventions_are_printed_once_per_kind_per_epoch(
        classification_data):
    x, y = classification_data
    callback = kh.HybridPredictCallback(eager_config(), verbose=1)
    extra = [_Inject(callback, batches={2, 3, 5})]
    _, text = _fit(x, y, callback, verbose=0, extra=extra)
    rollback = [line for line in text.splitlines()
                if "rolled back to the last good weights" in line]
    assert len(rollback) == 2, text  # epochs 1 and 2, first event of each
    assert rollback[0].startswith("Epoch 1, HybridPredictCallback: step ")
    assert "(signal: loss_spike)" in rollback[0]
    assert text.count("rollback x3") == 2


def test_messages_follow_fit_verbose(classification_data):
    x, y = classification_data
    callback = kh.HybridPredictCallback(eager_config())  # verbose="auto"
    _, text = _fit(x, y, callback, verbose=0,
                   extra=[_Inject(callback, batches={2})])
    assert "HybridPredictCallback" not in text
    callback = kh.HybridPredictCallback(eager_config(), verbose=0)
    _, text = _fit(x, y, callback, verbose=2,
                   extra=[_Inject(callback, batches={2})])
    assert "HybridPredictCallback" not in text


def test_bad_verbose_is_refused():
    with pytest.raises(ValueError, match="Received: verbose='loud'"):
        kh.HybridPredictCallback(verbose="loud")


def test_config_changed_after_building_is_validated_at_train_begin(
        classification_data):
    x, y = classification_data
    config = eager_config()
    callback = kh.HybridPredictCallback(config)
    config.warmup_steps = -5
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    with pytest.raises(ValueError, match="`warmup_steps` must be >= 0. "
                       "Received: warmup_steps=-5"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callback])


def test_history_keeps_hybrid_entries_off_the_progress_bar(
        classification_data):
    x, y = classification_data
    callback = kh.HybridPredictCallback(eager_config())
    history, text = _fit(x, y, callback, verbose=2)
    assert "loss:" in text
    for key in HYBRID_KEYS:
        assert f"{key}:" not in text
        assert len(history.history[key]) == 2, key
    assert all(isinstance(p, int) and 0 <= p <= 3
               for p in history.history["phase"])
    summary = callback.report()["training_summary"]
    assert history.history["backward_reduction"][-1] == pytest.approx(
        summary["backward_reduction_pct"] / 100
    )


def test_log_to_progbar_shows_hybrid_entries(classification_data):
    x, y = classification_data
    config = eager_config()
    config.metrics.log_to_progbar = True
    callback = kh.HybridPredictCallback(config)
    history, text = _fit(x, y, callback, verbose=2)
    for key in HYBRID_KEYS:
        assert f"{key}:" in text
        assert len(history.history[key]) == 2, key
