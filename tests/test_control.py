"""PhaseControl: bandit lengths, auto-tuned threshold, adaptive interval."""

import numpy as np

import keras_hybrid as kh
from keras_hybrid.control import PhaseControl
from keras_hybrid.phases import PhaseController


def test_bandit_learns_the_length_that_pays():
    config = kh.HybridConfig(horizon_policy="ucb1", min_predict_steps=10,
                             max_predict_steps=70)
    control = PhaseControl(config)
    controller = PhaseController(config)
    assert control.arms == [10, 30, 50, 70]
    chosen = []
    for _ in range(200):
        length = control.length(controller, 0.9, control.context(0.9, 0.0))
        chosen.append(length)
        # Long phases are rejected; 30 steps is the longest that holds.
        accepted = length <= 30
        control.outcome(accepted, length, 1.0 if accepted else None)
    assert max(set(chosen[-50:]), key=chosen[-50:].count) == 30


def test_linucb_uses_the_context():
    config = kh.HybridConfig(horizon_policy="linucb", min_predict_steps=10,
                             max_predict_steps=40)
    control = PhaseControl(config)
    controller = PhaseController(config)
    rng = np.random.default_rng(0)
    for _ in range(300):
        confidence = float(rng.uniform())
        length = control.length(controller, confidence,
                                control.context(confidence, 0.0))
        # Long phases only hold when the confidence is high.
        accepted = length <= 10 or confidence > 0.5
        control.outcome(accepted, length, 1.0)
    high = control.length(controller, 0.95, control.context(0.95, 0.0))
    low = control.length(controller, 0.05, control.context(0.05, 0.0))
    assert high == 40 and low == 10


def test_threshold_is_auto_tuned_to_the_target_quality():
    config = kh.HybridConfig(target_quality=1.0, confidence_threshold=0.85)
    control = PhaseControl(config)
    controller = PhaseController(config)
    for confidence in np.linspace(0.1, 0.9, 40):
        control.length(controller, confidence, None)
        control.outcome(confidence >= 0.4, 20, 1.0)
    # The smallest threshold above which every prediction held.
    assert 0.4 <= control.threshold <= 0.43


def test_correction_interval_adapts_to_residuals():
    config = kh.HybridConfig(correction_interval=8)
    control = PhaseControl(config)
    assert control.correction_interval() == 8
    for value in [0.1, 2.0] * 10:  # noisy residuals: correct more often
        control.residual(value)
    assert control.correction_interval() == 2
    steady = PhaseControl(config)
    for _ in range(20):  # steady residuals: correct less often
        steady.residual(0.5)
    assert steady.correction_interval() == 32
    fixed = PhaseControl(kh.HybridConfig(correction_interval=8,
                                         adaptive_correction=False))
    fixed.residual(5.0)
    assert fixed.correction_interval() == 8


def test_state_round_trip():
    config = kh.HybridConfig(horizon_policy="ucb1", target_quality=0.5,
                             correction_interval=6)
    control = PhaseControl(config)
    controller = PhaseController(config)
    for i in range(7):
        length = control.length(controller, 0.7, None)
        control.outcome(i % 2 == 0, length, 1.1)
        control.residual(0.3 * i)
    other = PhaseControl(config)
    other.set_state(control.get_state())
    assert other.get_state() == control.get_state()
