import pytest

import keras_hybrid as kh
from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseController


def controller(**overrides):
    values = dict(warmup_steps=3, full_steps=4, min_predict_steps=10,
                  max_predict_steps=80, confidence_threshold=0.5)
    values.update(overrides)
    return PhaseController(kh.HybridConfig(**values))


def test_starts_in_warmup_and_counts_steps():
    c = controller()
    assert c.phase == Phase.WARMUP
    c.advance(3)
    assert c.phase_done
    c.transition(Phase.FULL)
    assert c.phase == Phase.FULL and c.phase_length == 4 and c.step == 3


def test_zero_warmup_starts_in_full():
    assert controller(warmup_steps=0).phase == Phase.FULL


@pytest.mark.parametrize(
    "path",
    [
        [Phase.FULL, Phase.FULL, Phase.PREDICT, Phase.CORRECT, Phase.FULL],
        [Phase.FULL, Phase.PREDICT, Phase.FULL, Phase.PREDICT, Phase.CORRECT],
    ],
)
def test_legal_paths(path):
    c = controller()
    for phase in path:
        c.transition(phase, length=12)
    assert c.phase == path[-1]
    assert [r.phase for r in c.history] == ["WARMUP"] + [p.name for p in path]


@pytest.mark.parametrize(
    "path",
    [
        [Phase.PREDICT],
        [Phase.CORRECT],
        [Phase.FULL, Phase.CORRECT],
        [Phase.FULL, Phase.WARMUP],
        [Phase.FULL, Phase.PREDICT, Phase.PREDICT],
        [Phase.FULL, Phase.PREDICT, Phase.CORRECT, Phase.PREDICT],
    ],
)
def test_illegal_transitions_raise(path):
    c = controller()
    with pytest.raises(kh.IllegalTransitionError, match="Illegal phase transition"):
        for phase in path:
            c.transition(phase, length=12)


def test_predict_needs_an_explicit_length():
    c = controller()
    c.transition(Phase.FULL)
    with pytest.raises(ValueError, match="explicit `length`"):
        c.transition(Phase.PREDICT)


def test_confidence_threshold_gates_prediction():
    c = controller(confidence_threshold=0.7)
    assert not c.can_predict(0.69)
    assert c.can_predict(0.7)


def test_horizon_is_quadratic_in_confidence_and_bounded():
    c = controller(horizon_decay=1.0)
    assert c.horizon(0.0) == 10
    assert c.horizon(1.0) == 80
    assert c.horizon(0.5) == round(10 + 70 * 0.25)
    for conf in (0.0, 0.3, 0.9, 1.0):
        assert 10 <= c.horizon(conf) <= 80


def test_consecutive_predictions_shrink_the_horizon():
    c = controller(horizon_decay=0.5)
    first = c.horizon(1.0)
    c.record_prediction(True)
    second = c.horizon(1.0)
    assert second == round(10 + 70 * 0.5) < first
    c.record_prediction(False)
    assert c.horizon(1.0) == first


def test_force_full_blocks_prediction_for_that_many_steps():
    c = controller()
    c.transition(Phase.FULL)
    c.force_full(5)
    assert not c.can_predict(1.0)
    c.advance(4)
    assert not c.can_predict(1.0)
    c.advance(1)
    assert c.can_predict(1.0)
    with pytest.raises(ValueError, match="Received: steps=-1"):
        c.force_full(-1)


def test_repeated_failures_cool_down():
    c = controller()
    c.transition(Phase.FULL)
    for _ in range(c.config.divergence.max_consecutive_failures):
        c.record_prediction(False)
    assert not c.can_predict(1.0)
    for _ in range(c.config.divergence.cooldown_phases):
        c.transition(Phase.FULL)
    assert c.can_predict(1.0)
