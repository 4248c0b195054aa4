"""The long-window estimators (`nesterov`, `holt`) on synthetic weight
trajectories, and the schedule arithmetic they use."""

import numpy as np
import keras
import pytest

import keras_hybrid as kh
from keras_hybrid.bench.schedules import WarmupDecay
from keras_hybrid.dynamics import schedule as lr_schedule
from keras_hybrid.dynamics.holt import HoltPredictor
from keras_hybrid.dynamics.nesterov import NesterovPredictor
from keras_hybrid.state import TrainingState
from keras_hybrid.trajectory import VariableSnapshots

L = 20  # FULL phase length
SIZES = ((400,), (20, 30))


class SyntheticTrajectory:
    """The parts of `WeightTrajectory` the estimators read, fed from a
    given sequence of per-step weights."""

    def __init__(self, sizes=SIZES):
        self.variables = [keras.Variable(np.zeros(s, "float32"))
                          for s in sizes]
        self.snapshots = VariableSnapshots(self.variables)
        self.drift = None
        self.num_parameters = int(sum(np.prod(s) for s in sizes))

    def memory_mb(self):
        return 0.0

    def phase(self, weights):
        """`weights`: list over steps of lists of arrays (one per
        variable); sets the halves' averages, the drift and the current
        weights as a FULL phase does."""
        half = len(weights) // 2
        first = [np.mean([w[i] for w in weights[:half]], axis=0)
                 for i in range(len(self.variables))]
        second = [np.mean([w[i] for w in weights[half:]], axis=0)
                  for i in range(len(self.variables))]
        self.first_count, self.second_count = half, len(weights) - half
        distance = len(weights) / 2.0
        self.first_mean = [keras.ops.convert_to_tensor(a) for a in first]
        self.second_mean = [keras.ops.convert_to_tensor(a) for a in second]
        self.drift = [keras.ops.convert_to_tensor((b - a) / distance)
                      for a, b in zip(first, second)]
        for v, value in zip(self.variables, weights[-1]):
            v.assign(value)


def _config(kind, **predictor):
    return kh.HybridConfig(
        full_steps=L, max_predict_steps=40,
        predictor={"type": kind, **predictor},
    )


def _run(predictor, trajectory, weight_at, phases, start=0):
    """Feeds `phases` FULL phases of `L` steps (weights after step t:
    `weight_at(t)`, t = start+1, start+2, ...)."""
    t = start
    for _ in range(phases):
        weights = [weight_at(s) for s in range(t + 1, t + L + 1)]
        trajectory.phase(weights)
        t += L
        predictor.update_from_observation(
            None, None, [(s, 1.0) for s in range(t - L + 1, t + 1)]
        )
    return t


def _run_scheduled(predictor, trajectory, optimizer, weight_at, phases,
                   start=0):
    """`_run` with the optimizer's step counter moved along (so that the
    predictor reads its schedule's learning rates)."""
    t = start
    for _ in range(phases):
        trajectory.phase([weight_at(s) for s in range(t + 1, t + L + 1)])
        t += L
        optimizer.iterations.assign(t)
        predictor.update_from_observation(None, None, [])
    return t


def _linear(velocity, noise, seed=0):
    rng = np.random.default_rng(seed)
    w0 = [rng.normal(size=s).astype("float32") for s in SIZES]

    def weight_at(t):
        return [(a + t * v + noise * rng.normal(size=a.shape)).astype(
            "float32") for a, v in zip(w0, velocity)]

    return weight_at, w0


def _random_walk(step, seed=0):
    rng = np.random.default_rng(seed)
    state = [np.zeros(s, "float32") for s in SIZES]
    cache = {}

    def weight_at(t):
        while len(cache) < t:
            for a in state:
                a += step * rng.normal(size=a.shape).astype("float32")
            cache[len(cache) + 1] = [a.copy() for a in state]
        return cache[t]

    return weight_at


def _velocity(seed=1):
    rng = np.random.default_rng(seed)
    return [0.01 * rng.normal(size=s).astype("float32") for s in SIZES]


def _arrays(tensors):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in tensors]


def _rel(a, b):
    a, b = np.concatenate([x.ravel() for x in a]), np.concatenate(
        [x.ravel() for x in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_holt_recovers_a_linear_drift_under_noise():
    velocity = _velocity()
    weight_at, w0 = _linear(velocity, noise=0.05)
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(_config("holt"), trajectory)
    now = _run(holt, trajectory, weight_at, phases=10)
    assert holt.ready()
    # Per-step noise 0.05 against a drift of 0.01 a step: one step's
    # velocity is buried; the long window recovers it within 10%.
    assert _rel(_arrays(holt.velocity), velocity) < 0.1
    assert np.all(holt.shrinkage > 0.8)
    outcome = holt.predict_phase_outcome(TrainingState(), 30)
    assert outcome.judge_from_start
    truth_now = [a + now * v for a, v in zip(w0, velocity)]
    truth_ahead = [a + (now + 30) * v for a, v in zip(w0, velocity)]
    # The denoised position is far closer to the noiseless trajectory than
    # the raw current weights are.
    raw = _arrays(trajectory.variables)
    assert _rel(_arrays(outcome.start), truth_now) < 0.3 * _rel(raw, truth_now)
    assert _rel(_arrays(outcome.targets(1.0)), truth_ahead) < 0.3 * _rel(
        raw, truth_now)


def test_holt_shrinkage_vanishes_for_a_random_walk():
    trajectory = SyntheticTrajectory()
    holt = HoltPredictor(_config("holt"), trajectory)
    _run(holt, trajectory, _random_walk(0.05), phases=10)
    assert holt.shrinkage is not None
    assert float(np.max(holt.shrinkage)) < 0.2
    assert abs(holt.agreement) < 0.2
    assert not holt.ready()  # The drift-to-noise gate holds it back.


def test_nesterov_momentum_extrapolates_a_linear_drift():
    velocity = _velocity()
    weight_at, _ = _linear(velocity, noise=0.01)
    trajectory = SyntheticTrajectory()
    nesterov = NesterovPredictor(
        _config("nesterov", momentum=0.5, outer_learning_rate=1.0),
        trajectory,
    )
    _run(nesterov, trajectory, weight_at, phases=12)
    assert nesterov.ready()
    # b = mu b + s converges to s / (1 - mu).
    assert _rel(_arrays(nesterov.momentum_buffer),
                [2.0 * v for v in velocity]) < 0.05
    raw = _arrays(trajectory.variables)
    outcome = nesterov.predict_phase_outcome(TrainingState(), 30)
    assert not outcome.judge_from_start
    # The jump starts at the current weights and, with eta * mu * b = s,
    # moves 30 steps along the drift.
    moved = [t - r for t, r in zip(_arrays(outcome.targets(1.0)), raw)]
    assert _rel(moved, [30 * v for v in velocity]) < 0.05
    # Scales beyond 1 reach past the phase (the rates are read that far).
    nesterov.config = _config("nesterov", jump_scales=(2.0, 1.0, 0.0))
    outcome = nesterov.predict_phase_outcome(TrainingState(), 30)
    moved = [t - r for t, r in zip(_arrays(outcome.targets(2.0)), raw)]
    assert _rel(moved, [60 * v for v in velocity]) < 0.05
    # A larger outer momentum accelerates: mu = 0.8 moves 4x as far.
    fast = NesterovPredictor(_config("nesterov", momentum=0.8), trajectory)
    _run(fast, trajectory, weight_at, phases=40, start=0)
    moved = [t - r for t, r in zip(
        _arrays(fast.predict_phase_outcome(TrainingState(), 30).targets(1.0)),
        _arrays(trajectory.variables))]
    assert _rel(moved, [4 * 30 * v for v in velocity]) < 0.05


def test_nesterov_applies_an_unchecked_jump_in_place(monkeypatch):
    """`PhaseOutcome.apply` moves the weights to `targets(scale)` exactly,
    without copying them first, and moves nothing where the target is not
    finite; `holt`, whose jump starts elsewhere, offers none."""
    weight_at, _ = _linear(_velocity(), noise=0.01)
    trajectory = SyntheticTrajectory()
    nesterov = NesterovPredictor(_config("nesterov"), trajectory)
    _run(nesterov, trajectory, weight_at, phases=6)
    before = _arrays(trajectory.variables)
    expected = _arrays(
        nesterov.predict_phase_outcome(TrainingState(), 30).targets(1.0))
    takes = []
    take = trajectory.snapshots.take
    monkeypatch.setattr(trajectory.snapshots, "take",
                        lambda: takes.append(1) or take())
    outcome = nesterov.predict_phase_outcome(TrainingState(), 30)
    assert bool(keras.ops.convert_to_numpy(outcome.apply(1.0)))
    assert takes == []
    for a, b in zip(_arrays(trajectory.variables), expected):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before[0], expected[0])
    # A non-finite direction: nothing moves.
    nesterov.momentum_buffer = [
        keras.ops.full_like(b, np.nan) for b in nesterov.momentum_buffer]
    outcome = nesterov.predict_phase_outcome(TrainingState(), 30)
    assert not bool(keras.ops.convert_to_numpy(outcome.apply(1.0)))
    for a, b in zip(_arrays(trajectory.variables), expected):
        np.testing.assert_array_equal(a, b)
    holt = HoltPredictor(_config("holt"), trajectory)
    _run(holt, trajectory, weight_at, phases=6)
    assert holt.predict_phase_outcome(TrainingState(), 30).apply is None


def test_nesterov_gate_closes_for_a_random_walk():
    trajectory = SyntheticTrajectory()
    nesterov = NesterovPredictor(_config("nesterov"), trajectory)
    _run(nesterov, trajectory, _random_walk(0.05), phases=8)
    assert nesterov.agreement is not None
    assert nesterov.agreement < 0.2
    assert not nesterov.ready()


@pytest.mark.parametrize("shrinkage", ["tensor", "none"])
def test_nesterov_shrinks_a_random_walk_per_tensor(shrinkage):
    # With the gate open, `shrinkage='tensor'` still scales each tensor's
    # jump by its drift's agreement with the buffer: about 0 for a random
    # walk, about 1 for a steady drift.
    config = _config("nesterov", min_agreement=-1.0, shrinkage=shrinkage,
                     momentum=0.5, outer_learning_rate=2.0)
    trajectory = SyntheticTrajectory()
    walk = NesterovPredictor(config, trajectory)
    _run(walk, trajectory, _random_walk(0.05), phases=8)
    assert walk.ready()
    coefficients = walk._jump_parts()[2]
    trajectory = SyntheticTrajectory()
    steady = NesterovPredictor(config, trajectory)
    _run(steady, trajectory, _linear(_velocity(), noise=0.001)[0], phases=8)
    full = steady._jump_parts()[2]
    if shrinkage == "none":
        np.testing.assert_allclose(coefficients, 1.0)
        np.testing.assert_allclose(full, 1.0)
    else:
        assert coefficients.shape == (len(SIZES),)
        assert np.all(coefficients < 0.25)
        assert np.all(full > 0.95)


def _optimizer(schedule, step):
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.iterations.assign(step)
    return optimizer


def test_horizon_follows_a_decaying_schedule():
    schedule = WarmupDecay(1.0, total_steps=400, decay="linear")
    optimizer = _optimizer(schedule, 200)
    ahead = lr_schedule.learning_rates(optimizer, 200, 100)
    np.testing.assert_allclose(ahead, 1.0 - np.arange(200, 300) / 400.0,
                               rtol=1e-5)
    # 100 steps from rate 0.5 down to 0.25 are worth 75 steps at 0.5.
    assert lr_schedule.horizon(ahead, 0.5) == pytest.approx(
        (0.5 + 0.2525) / 2 * 100 / 0.5, rel=1e-3)
    assert lr_schedule.horizon(ahead, 0.5) < 100
    constant = keras.optimizers.SGD(learning_rate=0.1)
    assert lr_schedule.horizon(
        lr_schedule.learning_rates(constant, 0, 50), 0.1) == pytest.approx(50)


def test_jump_allowed_not_in_warmup_nor_cooldown():
    schedule = WarmupDecay(1.0, total_steps=1000, warmup_steps=100,
                           decay="wsd", cooldown_steps=200)

    def allowed(step, length=20, window=20):
        before = schedule(np.arange(step - window, step))
        ahead = schedule(np.arange(step, step + length))
        return lr_schedule.jump_allowed(
            keras.ops.convert_to_numpy(before),
            keras.ops.convert_to_numpy(ahead), 1.0, 0.2)

    assert not allowed(60)  # warmup
    assert allowed(500)  # stable
    assert allowed(820)  # early cooldown, rate still above 20%
    assert not allowed(980)  # late cooldown


def test_nesterov_forgets_the_warmup():
    # Phases measured while the rate rises feed no momentum: the buffer
    # starts with the first phase after the warmup.
    schedule = WarmupDecay(1.0, total_steps=2000, warmup_steps=3 * L,
                           decay="constant")
    velocity = _velocity()
    weight_at, _ = _linear(velocity, noise=0.0)
    trajectory = SyntheticTrajectory()
    optimizer = _optimizer(schedule, 0)
    nesterov = NesterovPredictor(_config("nesterov", min_lr_fraction=0.0),
                                 trajectory, optimizer)
    for phase in range(5):
        _run_scheduled(nesterov, trajectory, optimizer, weight_at, 1,
                       start=phase * L)
        if phase < 3:  # the rate rose within each of these phases
            assert nesterov.momentum_buffer is None
            assert not nesterov.ready()
    # Two phases at the peak rate 1: b = mu * s + s, and the gate is open.
    assert _rel(_arrays(nesterov.momentum_buffer),
                [1.5 * v for v in velocity]) < 1e-4
    assert nesterov.agreement == pytest.approx(1.0, abs=1e-4)
    assert nesterov.ready()


def test_holt_scales_its_jump_by_the_schedule():
    # A trajectory linear in learning-rate time under a linear decay: the
    # jump must follow the learning rates ahead, not the steps ahead.
    schedule = WarmupDecay(1.0, total_steps=600, decay="linear")
    velocity = _velocity()
    rng = np.random.default_rng(3)
    w0 = [rng.normal(size=s).astype("float32") for s in SIZES]
    rates = keras.ops.convert_to_numpy(schedule(np.arange(600)))
    time = np.concatenate([[0.0], np.cumsum(rates)])

    def weight_at(t):
        return [(a + time[t] * v).astype("float32")
                for a, v in zip(w0, velocity)]

    trajectory = SyntheticTrajectory()
    optimizer = _optimizer(schedule, 0)
    holt = HoltPredictor(_config("holt", min_lr_fraction=0.0), trajectory,
                         optimizer)
    t = _run_scheduled(holt, trajectory, optimizer, weight_at, 15)
    assert holt.ready()
    outcome = holt.predict_phase_outcome(TrainingState(), 100)
    now = weight_at(t)
    expected = [(time[t + 100] - time[t]) * v for v in velocity]
    naive = [100 * rates[t - 1] * v for v in velocity]
    moved = [a - b for a, b in zip(_arrays(outcome.targets(1.0)), now)]
    assert _rel(moved, expected) < 0.02
    assert _rel(naive, expected) > 0.1  # what ignoring the decay gives


@pytest.mark.parametrize("kind", ["nesterov", "holt"])
def test_state_round_trip(kind):
    weight_at, _ = _linear(_velocity(), noise=0.01)
    trajectory = SyntheticTrajectory()
    predictor = kh.dynamics.get(_config(kind), trajectory)
    _run(predictor, trajectory, weight_at, phases=5)
    state, arrays = predictor.get_state(), predictor.get_arrays()
    other = kh.dynamics.get(_config(kind), trajectory)
    other.set_state(state)
    other.set_arrays(arrays)
    a = _arrays(predictor.predict_phase_outcome(TrainingState(), 20).targets(1.0))
    b = _arrays(other.predict_phase_outcome(TrainingState(), 20).targets(1.0))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6)


@pytest.mark.parametrize("kind", ["nesterov", "holt"])
def test_hybrid_fit_jumps_with_long_window_predictors(kind):
    from helpers import fit_long_window

    _, callback = fit_long_window({"type": kind})
    summary = callback.report()["training_summary"]
    assert summary["predictions_attempted"] > 0
    assert summary["backward_passes"] < 64
    if kind == "holt":
        # Every tried jump was judged against its denoised start as well.
        jumps = callback.runner.stats.jumps
        assert jumps and all(j["tried"] for j in jumps)
