"""The runner's parts on their own: the jump check, shadow scoring, the
rollback point and queued action, the compiled phases. Each keeps its own
state and saves it (`get_state` / `set_state`)."""

import json
import math
import types

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid import backends
from keras_hybrid.backends import common
from keras_hybrid import divergence as dv
from keras_hybrid.compiled import CompiledPhases
from keras_hybrid.jump_check import JumpCheck
from keras_hybrid.recovery import Recovery
from keras_hybrid.report import RunStatistics
from keras_hybrid.shadow import ShadowScoring
from keras_hybrid.state import RunningMoments
from keras_hybrid.trajectory import VariableSnapshots
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import weights_of

pytestmark = pytest.mark.backends


def _json(state):
    return json.loads(json.dumps(state))


def _numpy(values):
    return [keras.ops.convert_to_numpy(v) for v in values]


def _variables(*values):
    return [keras.Variable(np.asarray(v, "float32")) for v in values]


def _jump_check(**config):
    stats = RunStatistics()
    check = JumpCheck(kh.HybridConfig(**config), stats, sync=lambda: None)
    variables = _variables([1.0, 2.0], [3.0])
    snapshots = VariableSnapshots(variables)
    check.attach(snapshots, snapshots)
    return check, stats, variables


class _Outcome:
    """A jump `scale` times `step` away from `start`; with `in_place` (the
    `VariableSnapshots` of the weights at `start`), applied by moving them
    (`PhaseOutcome.apply`)."""

    def __init__(self, start, step, in_place=None):
        self.start, self.step = start, step
        self.apply = None
        if in_place is not None:
            self.apply = lambda scale: in_place.add_if_finite(
                [keras.ops.convert_to_tensor(d) for d in step],
                [scale] * len(step))

    def targets(self, scale):
        return [keras.ops.convert_to_tensor(s + scale * d)
                for s, d in zip(self.start, self.step)]


# ------------------------------------------------------------ jump check
def test_per_step_losses_end_the_phase_above_the_limit():
    check, _, _ = _jump_check(predict_mode="per_step",
                              divergence_threshold=2.0)
    moments = RunningMoments()
    for value in (1.0, 1.2, 0.8, 1.0):
        moments.update(value)
    check.begin(_Outcome([], []), moments)
    assert check.loss_limit == pytest.approx(
        moments.mean + 2.0 * moments.std)
    check.observe(moments.mean)
    assert check.abort is None
    check.observe(check.loss_limit + 1.0)
    assert check.abort == "divergence_threshold"
    check.observe(float("nan"))
    assert check.abort == "divergence_threshold"  # the first reason stays
    assert check.finish(success=False) == []
    assert check.abort is None and check.loss_limit is None
    check.observe(float("inf"))
    assert check.abort == "non_finite_loss"


def test_jumps_have_no_loss_limit_and_collect_their_check_batches():
    check, _, _ = _jump_check(validation_samples=2)
    moments = RunningMoments()
    moments.update(1.0)
    check.begin(_Outcome([], []), moments)
    assert check.loss_limit is None
    assert check.checking(0) and check.checking(1) and not check.checking(2)
    check.add("a")
    assert not check.ready and check.unverified and check.holds_batches
    check.add("b")
    assert check.ready
    assert check.finish(success=False) == ["a", "b"]  # never checked
    assert not check.holds_batches


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("finite", [True, False])
def test_unchecked_jump_applies_its_first_scale_at_once_if_finite(
        finite, in_place):
    check, stats, variables = _jump_check(
        check_jumps=False, train_check_batches=True, min_predict_steps=3,
        max_predict_steps=3, validation_samples=2,
        predictor={"jump_scales": [0.5, 1.0]},
    )
    assert check.immediate
    # No batch is held: the first two are trained on as they come, the
    # third is skipped.
    assert [check.trains_now(k) for k in range(3)] == [True, True, False]
    assert not any(check.checking(k) for k in range(3))
    start = _numpy(variables)
    step = [np.ones(2, "float32"),
            np.full(1, 1.0 if finite else np.nan, "float32")]
    outcome = _Outcome(start, step, check.weights if in_place else None)
    assert check.jump_now(outcome, step=7) is finite
    check.begin(outcome, RunningMoments())
    assert stats.jumps == [{"step": 7, "base_loss": None, "tried": [],
                            "accepted_scale": 0.5 if finite else None}]
    assert not check.holds_batches and not check.unverified
    if finite:
        np.testing.assert_array_equal(_numpy(variables)[0], [1.5, 2.5])
        np.testing.assert_array_equal(_numpy(variables)[1], [3.5])
    else:  # nothing changed
        for a, b in zip(start, _numpy(variables)):
            np.testing.assert_array_equal(a, b)
    assert check.finish(success=True) == []
    check.close()
    assert check.restore_point is None and check.outcome is None


def test_immediate_jumps_without_train_check_batches_skip_their_phase():
    check, _, _ = _jump_check(
        check_jumps=False, min_predict_steps=3, max_predict_steps=3,
        validation_samples=2)
    assert check.immediate
    assert not any(check.trains_now(k) or check.checking(k)
                   for k in range(3))
    checked, _, _ = _jump_check(validation_samples=2)
    assert not checked.immediate and not checked.trains_now(0)
    assert checked.checking(1) and not checked.checking(2)


def test_the_restore_point_is_taken_where_the_weights_leave_the_start():
    """A per-step prediction moves the weights at every step: its restore
    point is taken at the start. A jump's weights stay put until its
    search: taken there if the search checks candidates, never if it
    applies the jump unchecked (a rejected one changed nothing)."""
    taken = []

    def counting(check):
        take = check.start.take

        def counted():
            taken.append(1)
            return take()

        check.start.take = counted

    per_step, _, _ = _jump_check(predict_mode="per_step")
    counting(per_step)
    per_step.begin(_Outcome([], []), RunningMoments())
    assert taken == [1] and per_step.restore_point is not None

    taken.clear()
    unchecked, _, variables = _jump_check(
        check_jumps=False, validation_samples=2,
        predictor={"jump_scales": [1.0]})
    counting(unchecked)
    start = _numpy(variables)
    outcome = _Outcome(start, [np.ones(2, "float32"), np.ones(1, "float32")])
    assert unchecked.jump_now(outcome, step=3)
    unchecked.begin(outcome, RunningMoments())
    assert taken == [] and unchecked.restore_point is None

    taken.clear()
    checked, _, variables = _jump_check(
        validation_samples=1, loss_tolerance=0.0,
        predictor={"jump_scales": [1.0]})
    counting(checked)
    start = _numpy(variables)
    checked.begin(_Outcome(start, [np.ones(2, "float32"),
                                   np.ones(1, "float32")]),
                  RunningMoments())
    assert taken == [] and checked.restore_point is None
    checked.add("a")
    # The candidate's loss is higher than the start's: rejected, and the
    # start restored exactly from the point taken by the search.
    losses = iter([1.0, 2.0])

    def eval_loss(batch):
        return keras.ops.convert_to_tensor(next(losses), dtype="float32")

    checked.search({"eval_loss": eval_loss}, step=3)
    assert taken == [1] and checked.abort == "forward_check"
    for a, b in zip(start, _numpy(variables)):
        np.testing.assert_array_equal(a, b)


def test_jump_check_state_round_trip():
    check, _, variables = _jump_check(predict_mode="per_step")
    moments = RunningMoments()
    moments.update(2.0)
    moments.update(3.0)
    check.begin(_Outcome([], []), moments)
    variables[0].assign([5.0, 6.0])
    state, arrays = _json(check.get_state()), check.get_arrays()
    fresh, _, fresh_variables = _jump_check(predict_mode="per_step")
    fresh.set_state(state, arrays)
    assert fresh.loss_limit == check.loss_limit
    fresh.restore_start()  # the restore point it was given
    np.testing.assert_array_equal(_numpy(fresh_variables)[0], [1.0, 2.0])


# --------------------------------------------------------------- shadow
class _Trajectory:
    def __init__(self, count=6, lag=2.5, agreement=(None, None)):
        self.count, self.lag = count, lag
        self.shadow_agreement = agreement
        self.drift = [keras.ops.ones((2,))]
        self.drift_finite = True
        self.second_mean = [keras.ops.zeros((2,))]


class _Predictor:
    def __init__(self, ready=True, per_step=None):
        self.calls = []
        self._ready, self.per_step = ready, per_step

    def ready(self):
        return self._ready

    def record_shadow(self, confidence, success, error):
        self.calls.append(("record_shadow", confidence, success, error))

    def begin_shadow(self):
        self.calls.append(("begin_shadow",))

    def predict_phase_outcome(self, state, length):
        self.calls.append(("predict", length))
        return types.SimpleNamespace(per_step_delta=self.per_step,
                                     predicted_loss=0.5)


class _Control:
    def __init__(self):
        self.residuals = []

    def residual(self, error):
        self.residuals.append(error)


def test_shadow_prediction_is_scored_against_the_next_phase_only():
    stats, control = RunStatistics(), _Control()
    shadow = ShadowScoring(stats, control)
    trajectory = _Trajectory()
    predictor = _Predictor(per_step=trajectory.drift)
    shadow.score_and_predict(trajectory, predictor, None, [], 0.7, 6)
    assert stats.shadow == [] and control.residuals == []  # nothing yet
    assert shadow.contiguous and shadow.pending["confidence"] == 0.7
    assert predictor.calls == [("begin_shadow",), ("predict", 6)]
    # Scored 6 steps on, from the averages' lags (2.5 then (6 - 1) / 2).
    per_step, mean, distance = shadow.to_score(trajectory, 6)
    assert per_step[0] is trajectory.drift[0] and distance == 6 + 2.5 - 2.5
    scored = _Trajectory(agreement=(0.9, 0.4))
    shadow.score_and_predict(scored, _Predictor(ready=False), None,
                             [(1, 2.0), (2, 1.0)], 0.1, 6)
    assert control.residuals == [0.4]
    assert stats.shadow[0][:2] == [0.9, 0.4] and stats.shadow[0][-1]
    assert shadow.pending is None  # not ready: no new prediction
    shadow.score_and_predict(trajectory, predictor, None, [], 0.7, 6)
    shadow.interrupt()
    assert shadow.to_score(trajectory, 6) is None
    assert not shadow.contiguous


def test_non_finite_shadow_prediction_is_dropped():
    shadow = ShadowScoring(RunStatistics(), _Control())
    predictor = _Predictor(per_step=[keras.ops.full((2,), np.nan)])
    shadow.score_and_predict(_Trajectory(), predictor, None, [], 0.7, 6)
    assert shadow.pending is None and shadow.contiguous


def test_shadow_state_round_trip():
    shadow = ShadowScoring(RunStatistics(), _Control())
    trajectory = _Trajectory()
    shadow.score_and_predict(trajectory, _Predictor(per_step=trajectory.drift),
                             None, [], 0.7, 6)
    fresh = ShadowScoring(RunStatistics(), _Control())
    fresh.set_state(_json(shadow.get_state()), shadow.get_arrays())
    assert fresh.contiguous
    assert {k: v for k, v in fresh.pending.items()
            if k not in ("per_step", "mean")} == {
        "lag": 2.5, "loss": 0.5, "confidence": 0.7}
    np.testing.assert_array_equal(_numpy(fresh.pending["per_step"])[0],
                                  [1.0, 1.0])
    empty = ShadowScoring(RunStatistics(), _Control())
    fresh.set_state(_json(empty.get_state()), empty.get_arrays())
    assert fresh.pending is None and not fresh.contiguous


# ------------------------------------------------------------- recovery
def _trained_model():
    model = compile_model(build_mlp(0))
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    y = np.arange(64) % 10
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return model, x, y


def test_rollback_restores_the_good_point_exactly():
    model, x, y = _trained_model()
    recovery = Recovery(model, dv.DivergenceMonitor(kh.DivergenceConfig()))
    assert not recovery.roll_back()  # no good point yet
    recovery.save_good_point(12)
    good = weights_of(model) + [np.array(v) for v in model.optimizer.variables]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert recovery.roll_back()
    now = weights_of(model) + [np.array(v) for v in model.optimizer.variables]
    for a, b in zip(good, now):
        np.testing.assert_array_equal(a, b)
    # Saved and restored into a fresh one (the snapshot built for the
    # model's variables).
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    fresh = Recovery(model, recovery.monitor)
    fresh.set_state(_json(recovery.get_state()))
    fresh.set_arrays(recovery.get_arrays())
    assert fresh.good_step == 12 and fresh.roll_back()
    for a, b in zip(good, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_the_most_severe_action_of_a_read_is_queued():
    model, _, _ = _trained_model()
    monitor = dv.DivergenceMonitor(kh.DivergenceConfig(), full_steps=5)
    recovery = Recovery(model, monitor)
    recovery.save_good_point(3)
    recovery.check(1.0, 1.0, None, step=4)
    assert recovery.action is None and not recovery.alarm
    recovery.check(math.nan, None, None, step=5)
    assert recovery.calls_for_rollback and recovery.alarm
    signals, action = recovery.action
    assert isinstance(action, dv.RollbackAndRetry)
    assert action.checkpoint_step == 3
    assert signals[0].name == "non_finite_loss"
    recovery.check(math.inf, None, None, step=6)  # not more severe
    assert recovery.take_action()[1] is action
    assert recovery.action is None
    learning_rate = float(
        keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert recovery.rollback_outcome(action) == (
        f"RollbackAndRetry: to step 3, learning rate -> "
        f"{learning_rate * action.learning_rate_factor:.3g}"
    )
    assert recovery.abort_outcome() == (
        "Abort: weights and optimizer restored to step 3")


# ------------------------------------------------------------- compiled
def test_compiled_phases_are_kept_with_the_model():
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    backend = backends.get()
    compiled = CompiledPhases.of(model, backend)
    assert compiled.variables == list(model.trainable_variables)
    assert set(compiled.functions[None]) >= {
        "full", "predict", "train_batch", "eval_loss", "collect"}
    assert compiled.live_functions(model, backend) is compiled.functions[None]
    assert CompiledPhases.of(model, backend) is compiled
    compile_model(model)  # a new optimizer: traced again
    assert CompiledPhases.of(model, backend) is not compiled


def test_training_steps_add_to_the_sums_only_while_collecting():
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    y = np.arange(64) % 10
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    backend = backends.get()
    compiled = CompiledPhases.of(model, backend)
    functions = compiled.functions[None]
    sums = compiled.trajectory.accumulators
    batch = (keras.ops.convert_to_tensor(x[:32]),
             keras.ops.convert_to_tensor(y[:32]))
    for sum_ in sums:
        sum_.assign(keras.ops.ones(sum_.shape))

    functions["collect"](False)
    before = weights_of(model)
    functions["train_batch"](batch)
    backend.sync(model)
    after = weights_of(model)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    for sum_ in _numpy(sums):
        np.testing.assert_array_equal(sum_, np.ones(sum_.shape))

    functions["collect"](True)
    functions["train_batch"](batch)
    backend.sync(model)
    for sum_, weight in zip(_numpy(sums), weights_of(model)):
        np.testing.assert_allclose(sum_, 1.0 + weight, rtol=1e-6)


def test_a_switch_passes_on_changes_only():
    applied = []
    switch = common.Switch(apply=applied.append)
    for value in (True, True, 0, False, 1):
        switch(value)
    assert applied == [True, False, True] and switch.value is True
    quiet = common.Switch(False)
    quiet(False)
    assert quiet.value is False
