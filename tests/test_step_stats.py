"""Per-step statistics stay on the device; non-finite updates are refused
inside the compiled step.

Marked `backends`: `tests/test_backends.py` runs these under JAX and
PyTorch too.
"""

import json

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.step_stats import StepStatistics
from tests.helpers import backend_is
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

pytestmark = pytest.mark.backends

BATCH = 32


class Batches(keras.utils.PyDataset):
    """`x`, `y` in fixed batches; the inputs of batch `poisoned` are NaN."""

    def __init__(self, x, y, poisoned=None):
        super().__init__()
        self.x, self.y, self.poisoned = x, y, poisoned

    def __len__(self):
        return len(self.x) // BATCH

    def __getitem__(self, index):
        x = self.x[index * BATCH:(index + 1) * BATCH].copy()
        if index == self.poisoned:
            x[:] = np.nan
        return x, self.y[index * BATCH:(index + 1) * BATCH]


class WeightWatch(keras.callbacks.Callback):
    """At every step boundary: are all weights and optimizer slots finite,
    and how many statistics reads has the runner made so far?"""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback
        self.finite = []
        self.reads = []

    def on_train_batch_end(self, batch, logs=None):
        variables = list(self.model.variables) + list(
            self.model.optimizer.variables
        )
        self.finite.append(all(
            np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
            for v in variables
        ))
        self.reads.append(self.callback.runner.step_stats.host_reads)


def _guard_options(guard, monkeypatch):
    """`compile()` options that make the compiled step guard its update
    with element-wise selects (`guard="select"`): TensorFlow does under
    XLA, JAX where `keras_hybrid.backends.jax.GUARD` says so (on
    accelerators by default). `"default"`: the backend's CPU default."""
    if guard == "default":
        return {}
    if backend_is("tensorflow"):
        return {"jit_compile": True}
    if backend_is("jax"):
        from keras_hybrid.backends import jax as jax_backend

        monkeypatch.setattr(jax_backend, "GUARD", "select")
        return {}
    pytest.skip("PyTorch picks its guard by device (tested below)")


@pytest.mark.parametrize("guard", ["default", "select"])
@pytest.mark.parametrize("poisoned", [0, 5, 11])
def test_nan_step_never_reaches_the_weights(classification_data, poisoned,
                                            guard, monkeypatch):
    x, y = classification_data
    x, y = x[:12 * BATCH], y[:12 * BATCH]
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          **_guard_options(guard, monkeypatch))
    # Long phases and a long read interval: no statistics read during the
    # 12 steps, so only the compiled step can keep the NaN out.
    config = kh.HybridConfig(
        warmup_steps=100, full_steps=50, divergence={
            "check_interval_steps": 1000
        },
    )
    callback = kh.HybridPredictCallback(config)
    watch = WeightWatch(callback)
    model.fit(Batches(x, y, poisoned), epochs=1, verbose=0,
              callbacks=[callback, watch])
    assert watch.finite == [True] * 12
    assert watch.reads == [0] * 12
    # The monitor saw the non-finite step when the statistics were read at
    # the end of fit() and rolled back to its last good point.
    events = callback.report()["divergence_events"]
    assert any("non_finite" in e["signal"] for e in events), events


@pytest.mark.parametrize("guard", ["default", "select"])
def test_refused_step_changes_nothing(classification_data, guard,
                                      monkeypatch):
    """A NaN batch leaves weights and optimizer slots bit for bit as they
    were (only `iterations` advances), with either guard (a conditional
    update or element-wise selects)."""
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          **_guard_options(guard, monkeypatch))
    model.fit(x[:64], y[:64], batch_size=BATCH, epochs=1, verbose=0,
              shuffle=False)
    before = [keras.ops.convert_to_numpy(v).copy()
              for v in model.trainable_variables]
    slots = [keras.ops.convert_to_numpy(v).copy()
             for v in model.optimizer.variables
             if v is not model.optimizer.iterations]
    model.fit(Batches(x[:BATCH], y[:BATCH], poisoned=0), epochs=1, verbose=0)
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    after = [v for v in model.optimizer.variables
             if v is not model.optimizer.iterations]
    for a, b in zip(slots, after):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3


def test_host_transfers_per_full_phase_are_bounded(classification_data,
                                                   monkeypatch):
    """Without prediction, the host reads the statistics once per
    `check_interval_steps` and at phase ends, plus a bounded number of
    transfers of phase-boundary work; never once per step."""
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    config = eager_config(
        warmup_steps=8, full_steps=16, enable_prediction=False,
        divergence={"check_interval_steps": 8},
    )
    callback = kh.HybridPredictCallback(config)
    real = keras.ops.convert_to_numpy
    calls = []

    def counting(value):
        calls.append(1)
        return real(value)

    monkeypatch.setattr(keras.ops, "convert_to_numpy", counting)
    steps = len(x) // BATCH  # 64 steps: warmup 8, then 3.5 FULL phases
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[callback])
    monkeypatch.undo()
    runner = callback.runner
    full_phases = steps // 16 + 1
    # One read per 8 steps: at the phase ends (steps 8, 24, 40, 56), one
    # step late in between (step 17 reads steps 9-16, 33 and 49 likewise),
    # and at the end of fit() (steps 57-64).
    assert runner.step_stats.host_reads == steps // 8
    assert len(runner.step_stats) == 0
    # Each FULL phase end reads a few small figures (drift agreement,
    # finiteness, shadow scores): bounded per phase, far below per step.
    assert len(calls) <= runner.step_stats.host_reads + 6 * full_phases
    assert len(calls) < steps // 2
    summary = callback.report()["training_summary"]
    assert summary["backward_reduction_pct"] == 0.0


def test_statistics_reach_state_and_monitor_in_step_order(classification_data):
    x, y = classification_data
    _, runner = _fit(x, y, divergence={"check_interval_steps": 5})
    steps = [s for s, _, _ in runner.state.losses]
    assert steps == sorted(steps)
    assert len(runner.step_stats) == 0
    assert runner.monitor.steps_seen == runner.stats.backward


def test_read_interval_one_reads_every_step_one_step_late(
    classification_data, monkeypatch,
):
    sizes = []
    read = StepStatistics.read

    def spied(self, keep_newest=0):
        records = read(self, keep_newest)
        if records:
            sizes.append((keep_newest, [r.step for r in records]))
        return records

    monkeypatch.setattr(StepStatistics, "read", spied)
    x, y = classification_data
    _, runner = _fit(x[:640], y[:640], enable_prediction=False,
                     divergence={"check_interval_steps": 1})
    steps = [step for _, read_steps in sizes for step in read_steps]
    assert steps == list(range(1, 640 // BATCH + 1))
    # Between phase ends each read takes the step before the newest one.
    assert all(read_steps[-1] == read_steps[0] + len(read_steps) - 1
               for _, read_steps in sizes)
    late = [read_steps for keep, read_steps in sizes if keep]
    assert late and all(len(read_steps) == 1 for read_steps in late)
    assert runner.step_stats.host_reads == len(sizes)


def test_step_statistics_read_order_and_reset():
    stats = StepStatistics()
    stats.add(1, keras.ops.convert_to_tensor(2.0),
              keras.ops.convert_to_tensor(0.5))
    stats.add(2, keras.ops.convert_to_tensor(float("nan")), kind="predict")
    stats.add(3, None)  # a step without statistics is not kept
    assert len(stats) == 2
    records = stats.read()
    assert [(r.step, r.backward, r.kind) for r in records] == [
        (1, True, "full"), (2, False, "predict")
    ]
    assert records[0].loss == 2.0 and records[0].grad_norm == 0.5
    assert np.isnan(records[1].loss) and records[1].grad_norm is None
    assert stats.host_reads == 1 and len(stats) == 0
    assert stats.read() == [] and stats.host_reads == 1
    for step in (4, 5, 6):
        stats.add(step, keras.ops.convert_to_tensor(float(step)))
    assert [r.step for r in stats.read(keep_newest=1)] == [4, 5]
    assert len(stats) == 1 and stats.read(keep_newest=1) == []
    assert stats.host_reads == 2  # nothing read, nothing transferred
    assert [r.loss for r in stats.read()] == [6.0]


def test_pending_statistics_survive_a_checkpoint_state():
    stats = StepStatistics()
    stats.add(7, keras.ops.convert_to_tensor(float("nan")),
              keras.ops.convert_to_tensor(float("inf")))
    stats.add(8, keras.ops.convert_to_tensor(1.25), kind="predict")
    state = json.loads(json.dumps(stats.get_state(), allow_nan=False))
    assert len(stats) == 2  # nothing consumed
    restored = StepStatistics()
    restored.set_state(state)
    records = restored.read()
    assert [(r.step, r.kind) for r in records] == [(7, "full"),
                                                   (8, "predict")]
    assert np.isnan(records[0].loss) and records[0].grad_norm == np.inf
    assert records[1].loss == 1.25 and records[1].grad_norm is None


def test_rejected_jump_trains_its_check_batches(classification_data):
    """Every batch of a rejected jump's forward checks is trained on after
    the weights are restored: the backward count equals the steps that were
    not skipped plus those check batches."""
    x, y = classification_data
    # loss_tolerance 0 and jump scales that overshoot far: rejections.
    _, runner = _fit(
        x, y, loss_tolerance=0.0, correction_interval=0,
        predictor={"jump_scales": [10.0, 9.0]},
    )
    s = runner.stats
    assert s.predictions_rejected >= 1
    rejected = sum(1 for j in s.jumps if j["accepted_scale"] is None)
    assert rejected == s.predictions_rejected
    checks = runner.config.validation_samples
    skipped_steps = s.steps["PREDICT"] - rejected * checks
    total = sum(s.steps.values())
    assert s.backward == total - skipped_steps
    assert int(keras.ops.convert_to_numpy(
        runner.model.optimizer.iterations)) == total


def test_line_search_stops_when_losses_stop_improving(classification_data):
    x, y = classification_data
    _, runner = _fit(
        x, y, predictor={"jump_scales": [10.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.0]},
    )
    assert runner.stats.jumps
    for jump in runner.stats.jumps:
        losses = [loss for _, loss in jump["tried"]]
        # Only the last tried candidate may fail to improve on the one
        # before it: the search stops there.
        for earlier, later in zip(losses[:-2], losses[1:-1]):
            assert later < earlier, jump


@pytest.mark.skipif(not backend_is("jax"), reason="JAX jaxprs")
@pytest.mark.parametrize("guard", ["cond", "select"])
def test_jax_full_step_has_no_host_callback(classification_data, guard,
                                            monkeypatch):
    from keras_hybrid.backends import jax as jax_backend

    monkeypatch.setattr(jax_backend, "GUARD", guard)
    x, y = classification_data
    model, _ = _fit(x[:256], y[:256])
    deltas = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    counts = jax_backend.primitive_counts(
        jax_backend.step_jaxpr(model, "full", deltas, (x[:32], y[:32]))
    )
    if guard == "cond":
        assert counts["cond"] == 1  # the finite guard of the update
    else:
        # One select per weight and optimizer slot, no conditional.
        assert counts.get("cond", 0) == 0, counts
        assert counts["select_n"] >= 3 * len(model.trainable_variables)
    assert not [p for p in counts if "callback" in p], counts


@pytest.mark.skipif(not backend_is("torch"), reason="PyTorch device path")
def test_torch_device_side_guard_keeps_old_values():
    import torch

    from keras_hybrid.backends import torch as torch_backend

    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build([variable])
    grads = [torch.tensor([1.0, float("nan"), 1.0])]
    torch_backend._guarded_apply(
        optimizer, grads, [variable], torch.tensor(False), on_device=True
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                  np.ones(3))
    for slot in optimizer.variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(slot)))
    torch_backend._guarded_apply(
        optimizer, [torch.ones(3)], [variable], torch.tensor(True),
        on_device=True,
    )
    assert np.all(keras.ops.convert_to_numpy(variable) < 1.0)


def _fit(x, y, **config):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(**config))
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[callback], shuffle=False)
    return model, callback.runner


class NoHostRead:
    """A log value that fails the test if anything brings it to the host."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("a per-step log value was read on the host")

    __float__ = __array__ = __bool__ = item = numpy = _fail


def test_callbacks_read_no_log_value_per_step(classification_data):
    """The hybrid's per-batch hooks never convert a log value (that would
    sync the host with the device after every step)."""
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    model.fit(x[:256], y[:256], batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[callback])
    logs = {"loss": NoHostRead(), "accuracy": NoHostRead()}
    callback.on_train_batch_begin(0, logs)
    callback.on_train_batch_end(0, logs)


class TraceCounter(keras.layers.Layer):
    """Counts how often its `call()` runs in Python: once per trace where
    the step is compiled (TensorFlow, JAX), once per step where it is not
    (PyTorch)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


def _counted_fit(x, y, hybrid, **config):
    counter = TraceCounter()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((x.shape[1],)), counter,
        keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10),
    ])
    callbacks = []
    if hybrid:
        model = kh.HybridModel.wrap(model)
        callbacks.append(kh.HybridPredictCallback(
            eager_config(**(config or {"enable_prediction": False}))
        ))
    compile_model(model)
    before = counter.calls
    # 320 samples: ten full batches, no partial batch to retrace for.
    model.fit(x[:320], y[:320], batch_size=BATCH, epochs=2, verbose=0,
              shuffle=False, callbacks=callbacks)
    runner = callbacks[0].runner if hybrid else None
    return counter.calls - before, runner


def test_model_step_traced_as_often_as_plain_fit(classification_data):
    """Every backward step of the hybrid runs one compiled function: the
    model is traced (compiled) no more often than in a plain `fit()` (once
    on TensorFlow and JAX, where a second backward function used to trace
    it again), over WARMUP, FULL phases and their ends."""
    x, y = classification_data
    plain, _ = _counted_fit(x, y, hybrid=False)
    hybrid, _ = _counted_fit(x, y, hybrid=True)
    assert hybrid == plain
    if not backend_is("torch"):
        assert plain <= 2  # traced, not run per step


@pytest.mark.skipif(backend_is("torch"), reason="PyTorch traces nothing")
def test_rejected_jump_adds_only_the_forward_check_trace(classification_data):
    """A rejected jump's check batches are retrained through the FULL
    step's own trace: the only new trace is the forward check's."""
    x, y = classification_data
    plain, _ = _counted_fit(x, y, hybrid=False)
    hybrid, runner = _counted_fit(
        x, y, hybrid=True, loss_tolerance=0.0, correction_interval=0,
        predictor={"jump_scales": [10.0, 9.0]},
    )
    assert runner.stats.predictions_rejected >= 1
    assert hybrid == plain + 1
