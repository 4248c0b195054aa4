"""Tests of the NumPy dynamics components: basis, calibration, residual
correction, and of the phase policies built the same way: bandits, adaptive
interval."""

import json

import numpy as np
import pytest

from keras_hybrid.control.bandit import LinUCB
from keras_hybrid.control.bandit import UCB1
from keras_hybrid.control.bandit import auto_tune_confidence
from keras_hybrid.control.bandit import phase_reward
from keras_hybrid.control.interval import AdaptiveInterval
from keras_hybrid.dynamics.basis import TrajectoryBasis
from keras_hybrid.dynamics.calibration import ConfidenceCalibrator
from keras_hybrid.dynamics.calibration import expected_calibration_error
from keras_hybrid.dynamics.corrector import ResidualCorrector


def _json_round_trip(state):
    return json.loads(json.dumps(state))


# ----------------------------------------------------------------- basis
def _rank4_trajectory(n=32, dim=2000, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.normal(size=(dim, 4)))
    t = np.arange(n, dtype=np.float64)
    latent = np.stack([3.0 * t / n, np.sin(0.3 * t), 0.5 * np.cos(0.2 * t),
                       0.3 * np.sin(0.9 * t)], axis=1)
    base = rng.normal(size=dim)
    return base + latent @ directions.T * 10.0 + noise * rng.normal(
        size=(n, dim)), directions


@pytest.mark.parametrize("method", ["pca", "power", "dmd"])
def test_basis_captures_rank4_trajectory(method):
    snapshots, directions = _rank4_trajectory()
    basis = TrajectoryBasis(rank=4, method=method)
    for s in snapshots:
        basis.add(s)
    basis.fit()
    assert basis.explained_variance_ratio() >= 0.9
    assert basis.explained_variance_ratio() <= 1.0
    comps = basis.components
    assert comps.shape == (4, 2000)
    np.testing.assert_allclose(comps @ comps.T, np.eye(4), atol=1e-8)
    # The basis spans the true directions.
    overlap = np.linalg.svd(comps @ directions, compute_uv=False)
    assert overlap.min() > 0.99
    # encode/decode reproduce a snapshot up to the noise.
    x = snapshots[5] - basis.mean
    recon = basis.decode(basis.encode(x))
    assert np.linalg.norm(recon - x) < 0.05 * np.linalg.norm(x)


def test_basis_power_warm_start_matches_pca():
    # Noisy enough that one cold power iteration is visibly off.
    snapshots, _ = _rank4_trajectory(n=48, noise=0.1)
    pca = TrajectoryBasis(rank=4, max_snapshots=32, method="pca")
    power = TrajectoryBasis(rank=4, max_snapshots=32, method="power",
                            power_iterations=1)
    cold = TrajectoryBasis(rank=4, max_snapshots=32, method="power",
                           power_iterations=1)
    for i, s in enumerate(snapshots):
        pca.add(s)
        power.add(s)
        cold.add(s)
        if i >= 4:
            power.fit()  # One iteration per fit: relies on the warm start.
    pca.fit()
    cold.fit()

    def overlap(basis):
        return np.linalg.svd(pca.components @ basis.components.T,
                             compute_uv=False).min()

    assert overlap(power) > 0.99
    assert overlap(cold) < 0.98
    assert power.num_snapshots == 32


def test_basis_rank_above_data_rank_pads_zero_rows():
    basis = TrajectoryBasis(rank=5)
    for s in np.eye(3, 10):
        basis.add(s)
    basis.fit()
    assert basis.active_rank == 2  # 3 centered points span a plane.
    assert basis.components.shape == (5, 10)
    np.testing.assert_array_equal(basis.components[2:], 0.0)
    assert basis.explained_variance_ratio() == pytest.approx(1.0)


def test_dmd_extrapolation_beats_constant_prediction():
    rng = np.random.default_rng(1)
    dim, n, ahead = 2000, 24, 6
    u, _ = np.linalg.qr(rng.normal(size=(dim, 4)))
    theta, rho = 0.3, 0.95
    m = np.zeros((4, 4))
    m[:2, :2] = rho * np.array([[np.cos(theta), -np.sin(theta)],
                                [np.sin(theta), np.cos(theta)]])
    m[2, 2], m[3, 3] = 0.9, 0.8
    fixed_point = rng.normal(size=dim)
    z = np.array([5.0, 0.0, 4.0, 3.0])
    xs = []
    for _ in range(n + ahead):
        xs.append(fixed_point + u @ z + 1e-3 * rng.normal(size=dim))
        z = m @ z
    basis = TrajectoryBasis(rank=4, method="dmd")
    for x in xs[:n]:
        basis.add(x)
    basis.fit()
    truth = xs[n - 1 + ahead]
    predicted = basis.mean + basis.decode(basis.extrapolate(ahead))
    dmd_error = np.linalg.norm(predicted - truth)
    constant_error = np.linalg.norm(xs[n - 1] - truth)
    assert dmd_error < 0.2 * constant_error
    assert basis.dynamics_matrix.shape == (4, 4)
    np.testing.assert_allclose(
        np.sort(np.abs(basis.modes()[0])), [0.8, 0.9, 0.95, 0.95], atol=0.02)
    np.testing.assert_allclose(basis.extrapolate(0),
                               basis.encode(xs[n - 1] - basis.mean))


def test_pca_trend_extrapolation_beats_constant_prediction():
    rng = np.random.default_rng(2)
    v = rng.normal(size=500)
    xs = [t * v + 0.01 * rng.normal(size=500) for t in range(20)]
    basis = TrajectoryBasis(rank=2, method="pca")
    for x in xs[:15]:
        basis.add(x)
    basis.fit()
    predicted = basis.mean + basis.decode(basis.extrapolate(4))
    assert np.linalg.norm(predicted - xs[18]) < 0.1 * np.linalg.norm(
        xs[14] - xs[18])


@pytest.mark.parametrize("method", ["pca", "power", "dmd"])
def test_basis_state_round_trip(method):
    snapshots, _ = _rank4_trajectory(n=10, dim=50)
    basis = TrajectoryBasis(rank=3, max_snapshots=8, method=method, seed=3)
    for s in snapshots:
        basis.add(s)
    basis.fit()
    state = _json_round_trip(basis.get_state())
    restored = TrajectoryBasis(rank=1)
    restored.set_state(state)
    assert restored.get_state() == basis.get_state()
    np.testing.assert_array_equal(restored.extrapolate(3), basis.extrapolate(3))
    # Further fitting stays identical (the power method's rng included).
    basis.add(snapshots[0])
    restored.add(snapshots[0])
    np.testing.assert_array_equal(basis.fit().components,
                                  restored.fit().components)
    assert basis.memory_mb() > 0


def test_basis_validation():
    with pytest.raises(ValueError, match="`rank` must be"):
        TrajectoryBasis(rank=0)
    with pytest.raises(ValueError, match="`method` must be"):
        TrajectoryBasis(rank=2, method="svd")
    basis = TrajectoryBasis(rank=2)
    basis.add(np.zeros(5))
    with pytest.raises(ValueError, match="dimension 5"):
        basis.add(np.zeros(6))
    with pytest.raises(ValueError, match="1-D"):
        basis.add(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        basis.fit()
    with pytest.raises(ValueError, match="fit"):
        basis.encode(np.zeros(5))


# ----------------------------------------------------------- calibration
def _overconfident(n, seed):
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0.0, 1.0, size=n)
    outcomes = (rng.uniform(size=n) < raw ** 3).astype(int)
    return raw, outcomes


def test_expected_calibration_error():
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == (
        pytest.approx(0.0))
    # Two bins: |0.0 - 0.25| and |1.0 - 0.75|, each with half the weight.
    assert expected_calibration_error(
        [0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], num_bins=2) == pytest.approx(
            0.25)
    assert expected_calibration_error([1.0], [0]) == pytest.approx(1.0)
    assert expected_calibration_error([], []) == 0.0
    with pytest.raises(ValueError, match="`outcomes` must be 0 or 1"):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([1.5], [1])


@pytest.mark.parametrize("method", ["temperature", "binning"])
def test_calibrator_reduces_ece_on_overconfident_data(method):
    raw, outcomes = _overconfident(512, seed=0)
    calibrator = ConfidenceCalibrator(method=method)
    for r, o in zip(raw, outcomes):
        calibrator.update(r, o)
    assert calibrator.ece() < 0.5 * calibrator.ece(calibrated=False)
    test_raw, test_outcomes = _overconfident(4000, seed=1)
    raw_ece = expected_calibration_error(test_raw, test_outcomes)
    calibrated_ece = expected_calibration_error(
        calibrator.calibrate(test_raw), test_outcomes)
    assert raw_ece > 0.15
    assert calibrated_ece < 0.4 * raw_ece
    assert calibrator.calibrate(0.5) < 0.35  # True probability: 0.125.


def test_calibrator_identity_until_min_samples():
    calibrator = ConfidenceCalibrator(min_samples=5)
    for _ in range(4):
        calibrator.update(0.9, 0)
    assert calibrator.calibrate(0.9) == pytest.approx(0.9)
    calibrator.update(0.9, False)
    assert calibrator.calibrate(0.9) < 0.5
    with pytest.raises(ValueError, match="`outcome` must be 0 or 1"):
        calibrator.update(0.5, 0.5)
    with pytest.raises(ValueError, match="raw_confidence"):
        calibrator.update(1.2, 1)
    with pytest.raises(ValueError, match="`method` must be"):
        ConfidenceCalibrator(method="isotonic")


@pytest.mark.parametrize("method", ["temperature", "binning"])
def test_calibrator_state_round_trip(method):
    raw, outcomes = _overconfident(600, seed=3)
    calibrator = ConfidenceCalibrator(method=method, history_size=100)
    for r, o in zip(raw, outcomes):
        calibrator.update(r, o)
    restored = ConfidenceCalibrator()
    restored.set_state(_json_round_trip(calibrator.get_state()))
    assert restored.num_samples == 100
    np.testing.assert_array_equal(restored.calibrate(raw),
                                  calibrator.calibrate(raw))
    assert restored.get_state() == calibrator.get_state()
    assert calibrator.memory_mb() > 0


# ---------------------------------------------------------------- bandits
def test_ucb1_converges_to_best_arm():
    rng = np.random.default_rng(0)
    means = {5: 0.2, 10: 0.5, 20: 0.8, 40: 0.4}
    bandit = UCB1(list(means))
    assert [bandit.select() for _ in range(1)] == [5]
    pulls = []
    for _ in range(2000):
        arm = bandit.select()
        bandit.update(arm, float(rng.uniform() < means[arm]))
        pulls.append(arm)
    assert pulls[:4] == [5, 10, 20, 40]  # Every arm once, in order.
    assert np.mean(np.asarray(pulls[-200:]) == 20) > 0.8


def test_linucb_converges_to_context_dependent_best_arm():
    rng = np.random.default_rng(0)
    bandit = LinUCB([4, 8, 16], context_dim=2, alpha=0.5)

    def expected(arm, s):
        return {4: 0.5 + 0.4 * s, 8: 0.5 - 0.4 * s, 16: 0.3}[arm]

    hits = []
    for _ in range(1000):
        s = rng.uniform(-1.0, 1.0)
        context = [1.0, s]
        arm = bandit.select(context)
        bandit.update(arm, expected(arm, s) + 0.1 * rng.normal(), context)
        best = max([4, 8, 16], key=lambda a: expected(a, s))
        hits.append(arm == best)
    assert np.mean(hits[-200:]) > 0.8


def test_bandit_state_round_trip_and_validation():
    ucb = UCB1([3, 6])
    ucb.update(3, 1.0)
    lin = LinUCB([3, 6], context_dim=2)
    lin.update(6, 0.5, [1.0, 0.2])
    for bandit, fresh in ((ucb, UCB1([1])), (lin, LinUCB([1], 1))):
        fresh.set_state(_json_round_trip(bandit.get_state()))
        assert fresh.get_state() == bandit.get_state()
        assert fresh.select([1.0, -0.3]) == bandit.select([1.0, -0.3])
        assert bandit.memory_mb() > 0
    with pytest.raises(ValueError, match="non-empty"):
        UCB1([])
    with pytest.raises(ValueError, match="positive integers"):
        UCB1([4, 0])
    with pytest.raises(ValueError, match="distinct"):
        UCB1([4, 4])
    with pytest.raises(ValueError, match="`arm` must be one of"):
        ucb.update(7, 1.0)
    with pytest.raises(ValueError, match="`reward` must be"):
        ucb.update(3, float("nan"))
    with pytest.raises(ValueError, match="`context` must be"):
        lin.select(None)
    with pytest.raises(ValueError, match="`context_dim` must be"):
        LinUCB([1], context_dim=0)


def test_phase_reward():
    assert phase_reward(0.8, 0.0) == pytest.approx(0.8)
    assert phase_reward(0.8, -0.5) == pytest.approx(0.8)  # No bonus.
    assert phase_reward(0.8, 0.1, penalty_weight=2.0) == pytest.approx(0.6)
    assert phase_reward(0.5, 10.0) == -1.0
    assert phase_reward(0.5, 0.2) > phase_reward(0.5, 0.3)
    with pytest.raises(ValueError, match="`backward_saved` must be"):
        phase_reward(1.5, 0.0)
    with pytest.raises(ValueError, match="`penalty_weight` must be"):
        phase_reward(0.5, 0.0, penalty_weight=-1.0)


def test_auto_tune_confidence():
    confidences = np.linspace(0.0, 1.0, 101)
    history = [(c, c >= 0.5, 1.0) for c in confidences]
    assert auto_tune_confidence(history, 1.0) == pytest.approx(0.5)
    # Above t the acceptance rate is 0.5 / (1 - t) (t <= 0.5): >= 0.8 for
    # t >= 0.375; the first record confidence at or above it is 0.38.
    assert auto_tune_confidence(history, 0.8) == pytest.approx(0.38)
    assert auto_tune_confidence(history, 0.0) == pytest.approx(0.05)
    assert auto_tune_confidence([], 0.9) == 0.85
    assert auto_tune_confidence([(0.99, False, 1.0)], 0.5) == 0.95
    # With a loss cap, accepted-but-lossy predictions count as failures.
    lossy = [(c, True, 2.0 if c < 0.7 else 1.0) for c in confidences]
    assert auto_tune_confidence(lossy, 1.0) == pytest.approx(0.05)
    assert auto_tune_confidence(lossy, 1.0, max_loss_ratio=1.5) == (
        pytest.approx(0.7))
    with pytest.raises(ValueError, match="`target_quality` must be"):
        auto_tune_confidence(history, 1.5)
    with pytest.raises(ValueError, match="records"):
        auto_tune_confidence([(0.5, True)], 0.5)


# -------------------------------------------------------------- corrector
def _drift_residual(x):
    return np.array([0.5 + x[0], -0.8 * x[1]])


def test_corrector_reduces_error_on_context_dependent_bias():
    rng = np.random.default_rng(0)
    corrector = ResidualCorrector(capacity=64, bandwidth=0.5)
    tests = rng.uniform(-1.0, 1.0, size=(200, 2))

    def mean_error():
        return np.mean([np.linalg.norm(_drift_residual(x)
                                       - corrector.correction(x))
                        for x in tests])

    without = np.mean([np.linalg.norm(_drift_residual(x)) for x in tests])
    errors = {}
    for i in range(1, 61):
        x = rng.uniform(-1.0, 1.0, size=2)
        corrector.add(x, _drift_residual(x) + 0.1 * rng.normal(size=2))
        if i in (3, 60):
            errors[i] = mean_error()
    assert errors[60] < 0.5 * without
    assert errors[60] < 0.7 * errors[3]
    assert corrector.residual_variance() > 0


def test_corrector_empty_state_and_validation():
    corrector = ResidualCorrector(capacity=3)
    np.testing.assert_array_equal(corrector.correction([0.0]), [0.0])
    assert corrector.residual_variance() == 0.0
    for i in range(5):
        corrector.add([float(i), 1.0], [float(i)])
    assert len(corrector) == 3
    restored = ResidualCorrector()
    restored.set_state(_json_round_trip(corrector.get_state()))
    assert restored.get_state() == corrector.get_state()
    np.testing.assert_array_equal(restored.correction([3.5, 1.0]),
                                  corrector.correction([3.5, 1.0]))
    assert corrector.memory_mb() > 0
    with pytest.raises(ValueError, match="`context` must have 2 entries"):
        corrector.add([1.0], [0.0])
    with pytest.raises(ValueError, match="`bandwidth` must be"):
        ResidualCorrector(bandwidth=0.0)
    with pytest.raises(ValueError, match="`capacity` must be"):
        ResidualCorrector(capacity=0)


def test_adaptive_interval():
    steady = AdaptiveInterval(initial=10, minimum=2, maximum=50)
    for _ in range(40):
        steady.update(0.1)
    assert steady.value == 50
    erratic = AdaptiveInterval(initial=10, minimum=2, maximum=50)
    for i in range(40):
        erratic.update(1.0 if i % 4 == 0 else 0.01)
    assert erratic.value == 2
    restored = AdaptiveInterval()
    restored.set_state(_json_round_trip(erratic.get_state()))
    assert restored.get_state() == erratic.get_state()
    assert restored.update(0.5) == erratic.update(0.5)
    with pytest.raises(ValueError, match=r"`initial` must lie"):
        AdaptiveInterval(initial=1, minimum=2)
    with pytest.raises(ValueError, match="`residual_norm` must be"):
        steady.update(-1.0)
