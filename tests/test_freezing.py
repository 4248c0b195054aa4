"""Freeze schedules inside one `fit()` (`FreezeSchedule`, `LayerGroups`).

The guide's two-stage recipe in one `fit()` gives the weights of the two-run
version, a frozen prefix runs no backward on any backend, frozen weights
never move (predictions included), and bad schedules fail before training.
"""

import collections

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from tests.helpers import backend_is
from tests.helpers import eager_config

pytestmark = pytest.mark.backends

STEPS_PER_EPOCH = 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20 * STEPS_PER_EPOCH, 12)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1)
    return x, y.astype("int32")


def backbone_and_head(seed=0, norm=True):
    """A small 'pretrained backbone + new head' network (d0, bn, d1, d2,
    head), as a plain Keras model."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((12,)),
              keras.layers.Dense(24, activation="relu", name="d0")]
    if norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [
        keras.layers.Dense(24, activation="relu", name="d1"),
        keras.layers.Dense(24, activation="relu", name="d2"),
        keras.layers.Dense(3, name="head"),
    ]
    return keras.Sequential(layers, name="net")


def compile_it(model, optimizer=None):
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def numpy_of(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


# ------------------------------------------------------------- groups
def test_auto_groups_put_the_head_alone():
    model = kh.HybridModel.wrap(backbone_and_head())
    groups = kh.LayerGroups(model)
    assert groups.names() == [["d0", "bn"], ["d1"], ["d2"], ["head"]]
    assert kh.LayerGroups(model, num_groups=2).names() == [
        ["d0", "bn", "d1", "d2"], ["head"]]
    counts = groups.parameter_counts()
    assert counts == [12 * 24 + 24 + 2 * 24, 24 * 24 + 24, 24 * 24 + 24,
                      24 * 3 + 3]


def test_named_and_function_groups():
    model = kh.HybridModel.wrap(backbone_and_head())
    named = kh.LayerGroups(model, [["d0", "bn", "d1"], "d2", "head"])
    assert named.names() == [["d0", "bn", "d1"], ["d2"], ["head"]]
    by_function = kh.LayerGroups(
        model, lambda layer: "head" if layer.name == "head" else "body"
    )
    assert by_function.names() == [["d0", "bn", "d1", "d2"], ["head"]]


def test_nested_backbone_is_split_and_named():
    keras.utils.set_random_seed(0)
    backbone = backbone_and_head()
    backbone = keras.Model(backbone.inputs, backbone.get_layer("d2").output,
                           name="backbone")
    inputs = keras.Input((12,))
    outputs = keras.layers.Dense(3, name="new_head")(backbone(inputs))
    model = kh.HybridModel.wrap(keras.Model(inputs, outputs))
    # Similar parameter counts: d0 + bn + d1 hold 960, d2 600.
    assert kh.LayerGroups(model, num_groups=3).names() == [
        ["d0", "bn", "d1"], ["d2"], ["new_head"]]
    assert kh.LayerGroups(model, ["backbone", "new_head"]).names() == [
        ["d0", "bn", "d1", "d2"], ["new_head"]]


def test_users_frozen_layers_are_in_no_group():
    net = backbone_and_head()
    net.get_layer("d0").trainable = False
    model = kh.HybridModel.wrap(net)
    assert kh.LayerGroups(model, num_groups=3).names() == [
        ["bn", "d1"], ["d2"], ["head"]]


@pytest.mark.parametrize("groups, message", [
    ([["d0", "bn"], ["d1", "d2"], ["hed"]], "Did you mean 'head'"),
    ([["d0", "bn", "d1"], ["d1", "d2"], ["head"]], "must not overlap"),
    ([["d0", "bn", "d1"], [], ["head"]], "non-empty list"),
    ([["d0", "bn", "d1"], ["head"]], r"leave out \['d2'\]"),
    ("some", "must be 'auto'"),
])
def test_bad_groups_are_refused(groups, message):
    model = kh.HybridModel.wrap(backbone_and_head())
    with pytest.raises(ValueError, match=message):
        kh.LayerGroups(model, groups)


def test_backward_work_accounting():
    model = kh.HybridModel.wrap(backbone_and_head(norm=False))
    groups = kh.LayerGroups(model)
    costs = groups.forward_costs()
    assert costs == groups.parameter_counts()  # dense layers, flat outputs
    assert groups.backward_work(0) == 1.0
    assert groups.backward_work(2) == pytest.approx(
        sum(costs[2:]) / sum(costs))
    assert groups.backward_work(3) < groups.backward_work(1)


# ----------------------------------------------------------- schedules
def test_schedule_constructors_resolve_to_steps():
    model = kh.HybridModel.wrap(backbone_and_head())
    _, steps = kh.FreezeSchedule.head_first(epochs=2).resolve(
        model, steps_per_epoch=10, total_steps=60)
    assert steps == [(0, 3), (20, 0)]
    _, steps = kh.FreezeSchedule.gradual(every_steps=7).resolve(model)
    assert steps == [(0, 3), (7, 2), (14, 1), (21, 0)]
    _, steps = kh.FreezeSchedule.bottom(2, from_step=5).resolve(model)
    assert steps == [(5, 2)]
    schedule = kh.FreezeSchedule.gradual(every_epochs=1, num_groups=3)
    again = kh.FreezeSchedule.from_config(schedule.get_config())
    assert again.resolve(model, 10)[1] == schedule.resolve(model, 10)[1]


@pytest.mark.parametrize("schedule, message", [
    (lambda: kh.FreezeSchedule([(0, 4)]), "may not freeze every"),
    (lambda: kh.FreezeSchedule([(0, 1), (80, 0)]), "past the end of the run"),
    (lambda: kh.FreezeSchedule([(0, 1)], groups=["d0", "nope"]),
     "Unknown layer name"),
    (lambda: kh.FreezeSchedule.head_first(epochs=1),
     "needs the number of steps per epoch"),
])
def test_bad_schedules_fail_before_training(schedule, message):
    model = kh.HybridModel.wrap(backbone_and_head())
    steps_per_epoch = None if "epoch" in message else 10
    with pytest.raises(ValueError, match=message):
        schedule().resolve(model, steps_per_epoch, total_steps=60)


@pytest.mark.parametrize("make, message", [
    (lambda: kh.FreezeSchedule([(3, 1), (2, 0)]), "increasing order"),
    (lambda: kh.FreezeSchedule([(0, 1.5)]), "`frozen` must be an integer"),
    (lambda: kh.FreezeSchedule.head_first(steps=5, epochs=1),
     "exactly one of"),
    (lambda: kh.FreezeSchedule.bottom(0), "`k` must be an integer >= 1"),
    (lambda: kh.FreezeSchedule.from_config({"event": []}), "Unknown"),
    (lambda: kh.HybridConfig(freeze={"events": [[0, "x"]]}),
     "`frozen` must be an integer"),
])
def test_bad_schedule_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_fit_refuses_a_bad_schedule_before_any_step(data):
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    before = numpy_of(model.trainable_variables)
    callback = kh.HybridPredictCallback(
        "plain", freeze=kh.FreezeSchedule([(0, 2), (500, 0)]))
    with pytest.raises(ValueError, match="past the end of the run"):
        model.fit(x, y, batch_size=20, epochs=2, callbacks=[callback],
                  verbose=0)
    for a, b in zip(before, numpy_of(model.trainable_variables)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------- one fit, two runs
def test_guide_recipe_in_one_fit_equals_two_runs(data):
    """Head alone for an epoch, then everything, in one `fit()` gives the
    weights of two plain Keras runs (the backbone's layers set
    `trainable=False` for the first; the optimizer state carried over by
    hand into a new optimizer for the second), same seed and data order."""
    x, y = data
    fit = dict(batch_size=20, shuffle=False, verbose=0)

    one = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    callback = kh.HybridPredictCallback(
        "plain", freeze=kh.FreezeSchedule.head_first(epochs=1))
    history = one.fit(x, y, epochs=2, callbacks=[callback], **fit)

    two = backbone_and_head()
    for layer in two.layers[:-1]:
        layer.trainable = False
    first = keras.optimizers.Adam(1e-2)
    compile_it(two, first).fit(x, y, epochs=1, **fit)
    for layer in two.layers:
        layer.trainable = True
    second = keras.optimizers.Adam(1e-2)
    second.build(two.trainable_variables)
    carried = {v.name: v for v in first.variables}
    for variable in second.variables:
        if variable.name in carried:  # the head's slots and the step
            variable.assign(carried[variable.name])
    assert len(carried) == 2 + 2 * 2  # iteration, lr, head kernel/bias x2
    compile_it(two, second).fit(x, y, epochs=1, **fit)

    for a, b in zip(numpy_of(one.variables), numpy_of(two.variables)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # The trainable flags are what the user set, and the history says
    # when the groups were frozen.
    assert all(layer.trainable for layer in one.inner.layers)
    assert one._hybrid_live is None
    assert history.history["frozen_groups"] == [3, 0]
    report = callback.report()
    assert [e["frozen_groups"] for e in report["freezing"]["events"]] == [
        3, 0]
    saved = report["training_summary"]["backward_work_saved_pct"]
    assert 0.0 < saved < 50.0


def test_frozen_weights_never_move_with_prediction(data):
    """The bottom groups frozen from the start stay bitwise where they
    were through FULL steps, predicted jumps and corrections; the
    frozen BatchNormalization's moving statistics too (inference mode)."""
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    frozen = [model.inner.get_layer(n) for n in ("d0", "bn", "d1")]
    before = [numpy_of(layer.weights) for layer in frozen]
    callback = kh.HybridPredictCallback(
        eager_config(), freeze=kh.FreezeSchedule.bottom(2))
    model.fit(x, y, batch_size=10, epochs=4, callbacks=[callback],
              verbose=0)
    summary = callback.report()["training_summary"]
    assert summary["predictions_accepted"] >= 1, summary
    for layer, values in zip(frozen, before):
        for a, b in zip(values, numpy_of(layer.weights)):
            np.testing.assert_array_equal(a, b)
    d2 = model.inner.get_layer("d2")
    assert not np.array_equal(numpy_of(d2.weights)[0],
                              numpy_of(backbone_and_head().get_layer(
                                  "d2").weights)[0])


def test_frozen_groups_keep_their_slots_and_unfrozen_ones_start_afresh(
        data):
    """While frozen, a group's optimizer slots stay as they were; when it
    is unfrozen they restart from a new optimizer's values; the groups
    that stayed trainable keep theirs."""
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    seen = {}

    def d2_and_head(optimizer):
        return {v.name: keras.ops.convert_to_numpy(v)
                for v in optimizer.variables
                if "d2_kernel" in v.name or "head_kernel" in v.name}

    class Peek(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (6, 14):
                seen[batch] = d2_and_head(self.model.optimizer)

    schedule = kh.FreezeSchedule([(5, 3), (15, 0)])
    callback = kh.HybridPredictCallback("plain", freeze=schedule)
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0,
              callbacks=[callback, Peek()])
    d2 = [k for k in seen[6] if "d2_kernel" in k]
    head = [k for k in seen[6] if "head_kernel" in k]
    assert len(d2) == 2 and len(head) == 2  # momentum and velocity
    for name in d2:  # trained at steps 0-4, then frozen: kept
        assert np.any(seen[6][name] != 0)
        np.testing.assert_array_equal(seen[6][name], seen[14][name])
    for name in head:  # trained throughout
        assert not np.array_equal(seen[6][name], seen[14][name])

    # Unfreezing resets exactly the unfrozen groups' slots.
    freezer = callback.runner.freezer
    optimizer = model.optimizer
    for variable in optimizer.variables:
        if "kernel" in variable.name or "bias" in variable.name:
            variable.assign(keras.ops.ones(variable.shape, variable.dtype))
    freezer.switch(step=20, depth=3, backward_passes=20)
    freezer.switch(step=21, depth=1, backward_passes=21)
    for variable in optimizer.variables:
        value = keras.ops.convert_to_numpy(variable)
        if "_d1_" in variable.name or "_d2_" in variable.name:
            assert np.all(value == 0), variable.name
        elif "kernel" in variable.name or "bias" in variable.name:
            assert np.all(value == 1), variable.name
    freezer.release()


# ------------------------------------------- the frozen prefix's backward
def _matmul_counts(model, batch):
    """Matrix products one training step runs, per backend."""
    if backend_is("tensorflow"):
        import tensorflow as tf

        graph = tf.function(model.train_step).get_concrete_function(
            batch).graph
        counts = collections.Counter()
        graphs = [graph]
        while graphs:
            g = graphs.pop()
            for op in g.get_operations():
                counts[op.type] += 1
            graphs += [f.graph for f in getattr(g, "_functions", {}).values()
                       if hasattr(f, "graph")]
        return counts["MatMul"]
    if backend_is("jax"):
        from keras_hybrid.backends import jax as jax_steps

        jaxpr = jax_steps.step_jaxpr(model, "full", [], batch)
        return jax_steps.primitive_counts(jaxpr)["dot_general"]
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] in ("mm", "addmm", "bmm"):
                self.n += 1
            return func(*args, **(kwargs or {}))

    counter = Count()
    with counter:
        model.train_step(batch)
    return counter.n


def test_frozen_prefix_runs_no_backward(data):
    """Four dense layers: a full step has 4 forward products and 7
    backward ones (the first layer needs no input gradient); with the
    bottom two frozen, 4 forward and 3 backward (d2's weight gradient, the
    head's two)."""
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head(norm=False)))
    model.fit(x[:20], y[:20], batch_size=20, epochs=1, verbose=0)
    batch = (keras.ops.convert_to_tensor(x[:20]),
             keras.ops.convert_to_tensor(y[:20]))
    groups = kh.LayerGroups(model)
    counts = {}
    for depth in (0, 2, 3):
        model._hybrid_live = groups.live_mask(depth)
        counts[depth] = _matmul_counts(model, batch)
    model._hybrid_live = None
    assert counts == {0: 4 + 7, 2: 4 + 3, 3: 4 + 1}, counts


def test_a_fault_with_groups_frozen_loses_nothing(data, tmp_path):
    """The NaN drill and the corrupted-checkpoint drill with the bottom two
    groups frozen: the poisoned step is rolled back, the frozen weights
    stay bitwise where they were and finite, the model trains and saves a
    checkpoint that round-trips; a damaged copy of it is refused with
    nothing loaded."""
    x, y = data

    class Poisoned(keras.utils.PyDataset):
        """Batches of 20; batch 5 has a NaN loss the first time (NumPy
        data with NaN is refused before training, so it comes from
        here)."""

        def __init__(self):
            super().__init__()
            self.served = 0  # batch 5's

        def __len__(self):
            return len(x) // 20

        def __getitem__(self, i):
            # NaN weights rather than NaN inputs: a ReLU below a frozen
            # group may turn NaN inputs into zeros (TensorFlow's does), and
            # the frozen layers compute no gradient that would show them.
            weight = np.ones(20, dtype="float32")
            if i == 5:
                self.served += 1
                if self.served == 1:
                    weight[:] = np.nan
            return (x[20 * i:20 * (i + 1)], y[20 * i:20 * (i + 1)],
                    weight)

    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    frozen = [model.inner.get_layer("d0"), model.inner.get_layer("bn")]
    before = [numpy_of(layer.trainable_weights) for layer in frozen]
    config = eager_config(confidence_threshold=1.0)
    callback = kh.HybridPredictCallback(
        config, freeze=kh.FreezeSchedule.bottom(2))
    model.fit(Poisoned(), epochs=2, verbose=0, callbacks=[callback])
    events = [e for e in callback.report()["divergence_events"]
              if "non_finite" in e["signal"]]
    assert events and events[0]["outcome"].startswith("RollbackAndRetry")
    for layer, weights in zip(frozen, before):
        for a, b in zip(numpy_of(layer.trainable_weights), weights):
            np.testing.assert_array_equal(a, b)
    for w in model.weights + model.optimizer.variables:
        assert np.isfinite(keras.ops.convert_to_numpy(w)).all()
    path = model.save_checkpoint(tmp_path / "c")
    target = tmp_path / "c" / "variables.h5"
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(path, damaged)
    with open(damaged / "variables.h5", "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    other = compile_it(kh.HybridModel.wrap(backbone_and_head(seed=5)))
    other.optimizer.build(other.trainable_variables)
    untouched = numpy_of(other.weights)
    with pytest.raises(kh.CheckpointError, match="checksum"):
        other.load_checkpoint(damaged)
    for a, b in zip(numpy_of(other.weights), untouched):
        np.testing.assert_array_equal(a, b)
    other.load_checkpoint(path)
    for a, b in zip(numpy_of(other.weights), numpy_of(model.weights)):
        np.testing.assert_array_equal(a, b)
