"""What `outer` computes stays the same while its cost falls: phase-boundary
functions that run eagerly until compiling pays (`LazilyCompiled`), no
shadow prediction where a jump follows, and no trace of the train step
beyond plain training's."""

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid import backends
from keras_hybrid.backends import LazilyCompiled
from keras_hybrid.shadow import ShadowScoring

from helpers import assert_same_weights
from helpers import backend_is
from helpers import build_mlp
from helpers import compile_model
from helpers import weights_of

pytestmark = pytest.mark.backends


def _data():
    """768 samples of 10 noisy classes (the larger of two halves of x)."""
    x = np.random.default_rng(0).normal(size=(768, 20)).astype("float32")
    return x, np.argmax(x[:, :10] + 0.5 * x[:, 10:], axis=1).astype("int32")


def _outer_fit(monkeypatch=None, shadow_always=False, wrapped_only=False):
    """Three epochs (72 steps) of the `outer` preset with short phases
    (warmup 8, FULL 10: five jumps); returns `(model, report)`.

    Args:
        shadow_always: make the shadow prediction at every fitting phase
            end, before the jump decision (what the phase cycle did before
            it learned to skip it).
        wrapped_only: the wrapper without the callback (`report` is
            `None`).
    """
    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          learning_rate=1e-3)
    if wrapped_only:
        model.fit(x, y, batch_size=32, epochs=3, verbose=0)
        return model, None
    callback = kh.HybridPredictCallback(
        {"preset": "outer", "warmup_steps": 8, "full_steps": 10,
         "outer_patience": 0}, verbose=0)
    if shadow_always:
        score = ShadowScoring.score

        def score_then_predict(shadow, trajectory, predictor, losses):
            score(shadow, trajectory, predictor, losses)
            cycle = callback.runner.cycle
            shadow.predict(trajectory, predictor, cycle.state,
                           cycle.confidence, cycle.config.full_steps)

        monkeypatch.setattr(ShadowScoring, "score", score_then_predict)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0,
              validation_data=(x[:128], y[:128]), callbacks=[callback])
    return model, callback.report()


# ----------------------------------------------------------- lazily compiled
def test_lazily_compiled_runs_eagerly_until_compiling_pays(monkeypatch):
    monkeypatch.setattr(LazilyCompiled, "min_calls", 3)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 0.0)
    calls = []

    def compile():
        calls.append("compile")
        return lambda value: ("compiled", value)

    function = LazilyCompiled(lambda value: ("eager", value), compile)
    assert [function(i)[0] for i in range(3)] == ["eager"] * 3
    assert function.compiled is None and function.calls == 3
    assert [function(i) for i in range(3, 6)] == [("compiled", i)
                                                   for i in range(3, 6)]
    assert calls == ["compile"]  # compiled once


def test_lazily_compiled_waits_for_the_eager_time_too(monkeypatch):
    monkeypatch.setattr(LazilyCompiled, "min_calls", 1)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 3600.0)
    function = LazilyCompiled(lambda: "eager", lambda: lambda: "compiled")
    assert {function() for _ in range(50)} == {"eager"}
    assert function.compiled is None and function.seconds > 0.0


class _Clock:
    """A fake `time.perf_counter` that an eager call advances by 10 ms."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def eager(self):
        self.now += 0.01
        return "eager"


@pytest.mark.parametrize("ahead, eager_calls", [(0, 3), (7, 3), (8, 1),
                                                (100, 1)])
def test_lazily_compiled_compiles_early_when_the_calls_to_come_pay(
        monkeypatch, ahead, eager_calls):
    """With 10 ms eager calls and a 30 ms threshold it compiles after three
    eager calls, or after the first where at least `trace_per_call` (8)
    more calls can come in the run."""
    clock = _Clock()
    monkeypatch.setattr(backends.time, "perf_counter", clock)
    monkeypatch.setattr(LazilyCompiled, "min_calls", 1)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 0.03)
    monkeypatch.setattr(LazilyCompiled, "calls_ahead",
                        staticmethod(lambda: ahead))
    function = LazilyCompiled(clock.eager, lambda: lambda: "compiled")
    results = [function() for _ in range(6)]
    assert results == ["eager"] * eager_calls + ["compiled"] * (
        6 - eager_calls)


def test_a_fit_tells_the_phase_functions_how_many_phases_are_left():
    seen = []

    class Read(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(LazilyCompiled.calls_ahead())

    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)),
                          learning_rate=1e-3)
    callback = kh.HybridPredictCallback({"full_steps": 10}, verbose=0)
    # 24 steps an epoch, 48 in all: 4 phase ends of 10 steps at most.
    model.fit(x, y, batch_size=32, epochs=2, verbose=0,
              callbacks=[callback, Read()])
    assert seen[0] == 4 and seen[24] == 2 and seen[-1] == 0
    assert sorted(seen, reverse=True) == seen
    assert LazilyCompiled.calls_ahead() == 0  # nothing attached after it


@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="only TensorFlow compiles lazily")
def test_phase_boundary_functions_compile_lazily_on_tensorflow():
    variable = keras.Variable(np.ones((3,), "float32"))
    update = backends.compile_update(
        lambda values, scale: ([v * scale for v in values], None),
        [variable])
    pure = backends.compile_function(lambda values: [v + 1 for v in values])
    assert isinstance(update, LazilyCompiled)
    assert isinstance(pure, LazilyCompiled)
    update(keras.ops.convert_to_tensor(2.0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                  [2.0, 2.0, 2.0])


def test_a_compiled_phase_function_serves_models_of_any_shapes(monkeypatch):
    """One compiled function serves every model in the process: lists of
    the same length whose tensors differ in rank (two models trained one
    after the other) each get their own trace, not one of unknown rank."""
    monkeypatch.setattr(LazilyCompiled, "min_calls", 0)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 0.0)
    mix = backends.compile_function(
        lambda a, b, w: [keras.ops.add(keras.ops.multiply(w, x),
                                       keras.ops.multiply(1.0 - w, y))
                         for x, y in zip(a, b)])
    weight = keras.ops.convert_to_tensor(np.float32(0.25))
    for shapes in ([(8, 1), (1,)], [(3,), (3,)], [(2, 2, 2), (4,)],
                   [(5,), (1, 1)], [(8, 1), (1,)]):
        a = [keras.ops.ones(shape) for shape in shapes]
        b = [keras.ops.zeros(shape) for shape in shapes]
        out = mix(a, b, weight)
        assert [tuple(o.shape) for o in out] == shapes
        for o in out:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(o),
                                          0.25)


@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="ConcreteCalls serves TensorFlow's functions")
def test_concrete_calls_run_the_trace_of_the_arguments_shapes():
    """`ConcreteCalls` returns what the `tf.function` returns, keeps one
    concrete function per structure, dtypes and shapes (the same shapes
    nested differently are another key), and leaves arguments that are not
    all tensors to the `tf.function`."""
    import tensorflow as tf

    traced = []

    def combine(pairs, scale):
        traced.append(1)
        return [a * scale + b for a, b in pairs]

    calls = backends.ConcreteCalls(tf.function(combine, autograph=False))
    ones, twos = tf.ones((2, 3)), tf.fill((2, 3), 2.0)
    out = calls([(ones, twos)], tf.constant(3.0))
    np.testing.assert_array_equal(out[0].numpy(), np.full((2, 3), 5.0))
    calls([(twos, ones)], tf.constant(0.5))
    assert len(traced) == 1 and len(calls._concrete) == 1
    # Other shapes, another structure of the same tensors, another dtype.
    out = calls([(tf.ones((4,)), tf.ones((4,)))], tf.constant(1.0))
    np.testing.assert_array_equal(out[0].numpy(), np.full((4,), 2.0))
    out = calls([(ones, twos), (twos, ones)], tf.constant(1.0))
    np.testing.assert_array_equal(out[1].numpy(), np.full((2, 3), 3.0))
    calls([[ones, twos]], tf.constant(1.0))
    calls([(tf.ones((2, 3), "float64"), tf.ones((2, 3), "float64"))],
          tf.constant(1.0, "float64"))
    assert len(calls._concrete) == 5
    # A Python number is not a tensor: the tf.function's own path.
    out = calls([(ones, twos)], 2.0)
    np.testing.assert_array_equal(out[0].numpy(), np.full((2, 3), 4.0))
    assert len(calls._concrete) == 5


@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="ConcreteCalls serves TensorFlow's functions")
def test_concrete_calls_run_without_grappler_and_restore_the_options(
        monkeypatch):
    """A `ConcreteCalls` call runs with the thread's function options set
    to Grappler off; outside, and after an error inside, they are the ones
    the user had."""
    import contextlib

    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    def disabled():
        config = config_pb2.ConfigProto()
        config.ParseFromString(
            context.context().function_call_options.config_proto_serialized)
        return config.graph_options.rewrite_options.disable_meta_optimizer

    seen = []
    real = backends._unoptimized

    @contextlib.contextmanager
    def spy():
        with real():
            seen.append(disabled())
            yield

    monkeypatch.setattr(backends, "_unoptimized", spy)
    before = context.context().function_call_options
    calls = backends.ConcreteCalls(tf.function(lambda value: value + 1.0,
                                               autograph=False))
    assert float(calls(tf.constant(1.0))) == 2.0
    assert float(calls(tf.constant(2.0))) == 3.0
    assert seen == [True, True]
    assert not disabled()
    assert context.context().function_call_options is before
    with pytest.raises(RuntimeError, match="inside"):
        with real():
            assert disabled()
            raise RuntimeError("inside")
    assert context.context().function_call_options is before
    assert not disabled()


@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="ConcreteCalls serves TensorFlow's functions")
def test_a_compiled_update_reads_and_writes_its_variables(monkeypatch):
    """Through `ConcreteCalls`, a compiled update still reads the
    variables' current values and assigns its results on every call."""
    monkeypatch.setattr(LazilyCompiled, "min_calls", 0)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 0.0)
    variables = [keras.Variable(np.ones((3,), "float32")),
                 keras.Variable(np.full((2, 2), 2.0, "float32"))]
    scale = backends.compile_update(
        lambda values, factor: ([v * factor for v in values],
                                keras.ops.sum(values[0])),
        variables)
    factor = keras.ops.convert_to_tensor(np.float32(2.0))
    assert float(scale(factor)) == 3.0
    assert isinstance(scale.compiled, backends.ConcreteCalls)
    assert float(scale(factor)) == 6.0
    variables[0].assign(np.zeros((3,), "float32"))
    assert float(scale(factor)) == 0.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variables[1]),
                                  np.full((2, 2), 16.0))


def test_outer_computes_the_same_eagerly_and_compiled(monkeypatch):
    """The same jumps and the same final weights whether the phase-boundary
    functions run eagerly or compiled from their first call."""
    monkeypatch.setattr(LazilyCompiled, "min_calls", 0)
    monkeypatch.setattr(LazilyCompiled, "min_seconds", 0.0)
    compiled_model, compiled = _outer_fit()
    monkeypatch.setattr(LazilyCompiled, "min_seconds", float("inf"))
    eager_model, eager = _outer_fit()
    assert len(compiled["jumps"]) >= 3
    assert eager["jumps"] == compiled["jumps"]
    for a, b in zip(weights_of(eager_model), weights_of(compiled_model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ shadow
def test_outer_makes_no_shadow_prediction_where_a_jump_follows(monkeypatch):
    made = []
    predict = ShadowScoring.predict

    def spy(shadow, *args):
        predict(shadow, *args)
        if shadow.pending is not None:
            made.append(shadow.pending)

    monkeypatch.setattr(ShadowScoring, "predict", spy)
    _, report = _outer_fit()
    # Every fitting phase end jumped once the predictor was ready (before,
    # `predict` was called but made nothing).
    assert len(report["jumps"]) >= 3
    assert made == []


def test_skipping_the_shadow_prediction_changes_nothing(monkeypatch):
    model, report = _outer_fit()
    with monkeypatch.context() as patch:
        always_model, always = _outer_fit(patch, shadow_always=True)
    assert report["jumps"] == always["jumps"]
    assert (report["training_summary"]["final_loss"]
            == always["training_summary"]["final_loss"])
    assert_same_weights(weights_of(model), weights_of(always_model))


# ------------------------------------------------------------------ traces
@pytest.mark.skipif(not backend_is("tensorflow"),
                    reason="counts TensorFlow traces of the train step")
def test_outer_traces_the_train_step_as_often_as_plain_training(
        monkeypatch):
    """The check batches trained after each jump run the FULL step's trace:
    an `outer` run traces the train step as often as the wrapper without
    the callback (Keras traces it twice: once creating the optimizer's
    slots, once more without)."""
    from keras_hybrid.backends import tensorflow as tf_backend

    traces = []
    train_step = tf_backend.train_step

    def counted(*args):
        traces.append(1)
        return train_step(*args)

    monkeypatch.setattr(tf_backend, "train_step", counted)
    _outer_fit(wrapped_only=True)
    plain = len(traces)
    traces.clear()
    _, report = _outer_fit()
    assert len(report["jumps"]) >= 3
    assert len(traces) == plain
