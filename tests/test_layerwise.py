"""Layer-wise freezing by measurement (`keras_hybrid.layerwise`, preset
`finetune`)."""

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.config import LayerwiseConfig
from keras_hybrid.layerwise import SettleCheck
from tests.test_freezing import backbone_and_head
from tests.test_freezing import compile_it
from tests.test_freezing import numpy_of

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1)
    return x, y.astype("int32")


def check_for(model, losses, **settings):
    """A `SettleCheck` whose loss is read from `losses`: a function of the
    first group's first weight's mean (current or reverted)."""
    groups = kh.LayerGroups(model)
    variables = model.trainable_variables
    first = variables[groups.variable_indices[0][0]]

    def eval_loss(batch):
        del batch
        return keras.ops.convert_to_tensor(
            losses(float(keras.ops.convert_to_numpy(keras.ops.mean(first)))),
            dtype="float32",
        )

    config = LayerwiseConfig(enabled=True, **settings)
    return SettleCheck(config, groups, variables, eval_loss), first


def test_settled_group_freezes_after_patience_checks():
    model = kh.HybridModel.wrap(backbone_and_head())
    # The loss is lower with the weights as they are now: undoing the
    # movement costs, so the group is not settled...
    check, first = check_for(
        model, lambda mean: 1.0 + abs(mean - 0.5), window=3,
        check_batches=2, patience=2, start_fraction=0.0,
    )
    assert check.after_step(0) is None  # the first snapshot
    first.assign(keras.ops.full(first.shape, 0.5))  # moved toward the optimum
    assert [check.wants_batch(s) for s in range(2, 7)] == [
        False, True, True, False, False]
    for _ in range(2):
        check.measure(None)
    assert check.after_step(4) is None
    assert check.decisions[-1]["settled"] is False
    # ... then it stops moving: undoing the last window changes nothing
    # (the loss is flat), twice in a row: the group freezes.
    for step in (8, 12):
        for _ in range(2):
            check.measure(None)
        depth = check.after_step(step)
    assert depth == 1
    assert [d["settled"] for d in check.decisions] == [False, True, True]
    assert check.decisions[-1]["frozen"] is True
    state, arrays = check.get_state(), check.get_arrays()
    again, _ = check_for(model, lambda mean: 1.0)
    again.set_state(state, arrays)
    assert again.depth == 1 and again.snapshot_step == 12


def test_nothing_freezes_before_start_fraction():
    model = kh.HybridModel.wrap(backbone_and_head())
    check, _ = check_for(model, lambda mean: 1.0, window=2,
                         check_batches=1, patience=1, start_fraction=0.5)
    check.total_steps = 100
    check.after_step(0)
    check.measure(None)
    assert check.after_step(2) is None  # settled, but before step 50
    check.measure(None)
    check.after_step(60)
    assert check.depth == 1


def test_finetune_preset_freezes_settled_groups(data):
    """A backbone trained on the task already, then fine-tuned: its lower
    groups freeze, stay bitwise where they froze, and the report says when
    and what it saved."""
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    model.fit(x, y, batch_size=20, epochs=3, verbose=0)  # "pretraining"
    config = kh.HybridConfig.preset("finetune")
    config.layerwise.window = 5
    config.layerwise.check_batches = 2
    config.layerwise.patience = 1
    config.layerwise.tolerance = 0.05
    config.layerwise.start_fraction = 0.0
    callback = kh.HybridPredictCallback(config)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # Through `self.model`, which gives JAX's variables the fit
            # loop's newest state, as Keras' callbacks do.
            layer = self.model.inner.get_layer("d0")
            seen.append(numpy_of(layer.weights)[0])

    model.fit(x, y, batch_size=20, epochs=3, verbose=0,
              callbacks=[callback, Record()])
    freezing = callback.report()["freezing"]
    checks = freezing["checks"]
    assert checks and all(c["loss"] > 0 for c in checks)
    frozen = [e for e in freezing["events"] if e["frozen_groups"] > 0]
    assert frozen, checks
    first = frozen[0]["step"]  # the bottom group (d0, bn) froze here
    assert first < len(seen) - 1
    for weights in seen[first:]:
        np.testing.assert_array_equal(weights, seen[first])
    assert not np.array_equal(seen[0], seen[first])  # it trained before
    summary = callback.report()["training_summary"]
    assert summary["backward_work_saved_pct"] > 0
    # Two forward passes (current and reverted) per check batch.
    assert summary["forward_passes"] - summary["backward_passes"] == (
        2 * 2 * len(checks))
    assert all(layer.trainable for layer in model.inner.layers)
    assert model._hybrid_live is None


def test_finetune_preset_on_a_single_group_trains_plainly(data):
    x, y = data
    keras.utils.set_random_seed(0)
    model = compile_it(kh.HybridModel.wrap(keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(3)])))
    with pytest.warns(UserWarning, match="trains plainly"):
        model.fit(x, y, batch_size=20, epochs=1, verbose=0,
                  callbacks=[kh.HybridPredictCallback("finetune")])


def test_schedule_and_layerwise_together_are_refused(data):
    x, y = data
    model = compile_it(kh.HybridModel.wrap(backbone_and_head()))
    before = numpy_of(model.trainable_variables)
    with pytest.raises(ValueError, match="use one"):
        model.fit(x, y, batch_size=20, epochs=1, verbose=0, callbacks=[
            kh.HybridPredictCallback(
                "finetune", freeze=kh.FreezeSchedule.bottom(1))])
    for a, b in zip(before, numpy_of(model.trainable_variables)):
        np.testing.assert_array_equal(a, b)


def test_cheap_bottom_group_is_checked_with_the_next_one():
    """An embedding costs almost no backward work: it is checked, and
    frozen, together with the block above it."""
    keras.utils.set_random_seed(0)
    model = kh.HybridModel.wrap(keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(50, 8, name="emb"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, name="d1"),
        keras.layers.Dense(3, name="head"),
    ]))
    groups = kh.LayerGroups(model)
    assert groups.names() == [["emb"], ["d1"], ["head"]]
    check = SettleCheck(
        LayerwiseConfig(enabled=True, window=1, check_batches=1,
                        patience=1, start_fraction=0.0),
        groups, model.trainable_variables,
        eval_loss=lambda batch: keras.ops.convert_to_tensor(1.0))
    check.after_step(0)
    assert len(check.snapshot) == 3  # emb's table, d1's kernel and bias
    check.measure(None)
    assert check.after_step(1) == 2  # emb and d1 frozen together
    assert check.decisions[-1]["up_to_group"] == 1
    assert not check.checking  # only the head is left


def test_settle_bound_asks_for_evidence_beyond_the_noise():
    from keras_hybrid.layerwise import settle_bound

    # Undoing the window lowers the loss on average (-1%), but the batches
    # disagree by +-12%: not evidence that the movement bought nothing.
    noisy = [(1.0, 0.90), (1.0, 1.12), (1.0, 0.88), (1.0, 1.06)]
    assert settle_bound(noisy, 2.0) > 0.05
    assert settle_bound(noisy, 0.0) == pytest.approx(-0.01)
    # Batches that agree: undoing costs 0.4%, within a 1% tolerance.
    steady = [(2.0, 2.008)] * 4
    assert settle_bound(steady, 2.0) == pytest.approx(0.004)
    # Differences are relative to the mean loss now, so that batches of
    # different difficulty weigh alike: 0.004 +- 0.0016 here.
    mixed = [(2.0, 2.008), (1.0, 1.004), (3.0, 3.012), (2.0, 2.008)]
    assert 0.004 < settle_bound(mixed, 2.0) < 0.01
    assert settle_bound([(1.0, 0.5)], 2.0) == pytest.approx(-0.5)


def test_noisy_checks_do_not_freeze():
    model = kh.HybridModel.wrap(backbone_and_head())
    draws = iter([0.9, 1.12, 0.88, 1.06] * 4)
    check, _ = check_for(model, lambda mean: 1.0, window=2,
                         check_batches=4, patience=1, start_fraction=0.0)
    check.eval_loss = lambda batch: keras.ops.convert_to_tensor(
        next(draws) if batch == "reverted" else 1.0, dtype="float32")
    check.after_step(0)
    # `measure` evaluates the current weights, then the reverted ones.
    calls = []
    original = check.eval_loss

    def eval_loss(batch):
        calls.append(batch)
        return original("reverted" if len(calls) % 2 == 0 else "now")

    check.eval_loss = eval_loss
    for _ in range(4):
        check.measure("batch")
    assert check.after_step(6) is None
    assert check.decisions[-1]["settled"] is False
    assert check.decisions[-1]["bound"] > check.settings.tolerance
    check.settings.std_errors = 0.0  # the mean alone: a lucky draw
    for _ in range(4):
        check.measure("batch")
    assert check.after_step(12) == 1
