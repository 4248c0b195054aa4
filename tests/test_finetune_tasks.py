"""Fine-tuning tasks: cached pretraining, splits, layer groups, FLOPs,
freeze schedules and the oracle's selection (quick sizes)."""

import json
import os

import keras
import numpy as np
import pytest

from keras_hybrid.bench import backbone
from keras_hybrid.bench import finetune
from keras_hybrid.bench import flops
from keras_hybrid.bench import freeze_oracle
from keras_hybrid.bench import freeze_runs
from keras_hybrid.bench import pretrain
from keras_hybrid.bench import tasks

GROUPS_LM = [["embedding", "position_embedding"], ["block_0"], ["block_1"],
             ["block_2"], ["block_3"], ["final_norm", "head"]]


@pytest.fixture(scope="module")
def cache(pretrained_cache):
    return pretrained_cache


@pytest.fixture(scope="module")
def quick_tasks(cache):
    return {name: finetune.get_finetune_task(name, quick=True,
                                             cache_dir=cache, progress=False)
            for name in finetune.FINETUNE_TASK_NAMES}


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


@pytest.mark.backends
def test_quick_tasks_pretrain_once_and_fine_tune(cache, quick_tasks):
    # The first build pretrained; a second finds the cache and trains
    # nothing.
    docs = quick_tasks["ft-docs"]
    assert docs.pretrain["log"]["optimizer_iterations"] == 24
    again = pretrain.pretrain("quick", cache=cache, progress=False)
    assert again.reused and again.path == docs.checkpoint
    assert os.path.isfile(again.weights_path)
    assert again.path.startswith(os.path.join(cache, "pretrained"))
    for name, task in quick_tasks.items():
        model = task.build_model(seed=0)
        assert backbone.block_names(model)[:5] == GROUPS_LM[:5]
        # ft-topics trains with its bottom two groups frozen: they stay
        # put, the head moves.
        depth = 2 if name == "ft-topics" else 0
        frozen = backbone.set_frozen_prefix(model, depth)
        before = {n: _weights(model.get_layer(n)) for n in frozen + ["head"]}
        model.compile(optimizer=task.make_optimizer(), loss=task.loss)
        history = model.fit(task.x_train[:16], task.y_train[:16],
                            batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]), name
        for layer_name, weights in before.items():
            moved = any(not np.array_equal(a, b) for a, b in zip(
                weights, _weights(model.get_layer(layer_name))))
            assert moved == (layer_name == "head"), layer_name


def test_cache_folder_from_argument_environment_and_default(monkeypatch,
                                                            tmp_path):
    monkeypatch.setenv("KERAS_HYBRID_CACHE", str(tmp_path / "env"))
    assert pretrain.cache_dir() == str(tmp_path / "env")
    assert pretrain.cache_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    monkeypatch.delenv("KERAS_HYBRID_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrain.cache_dir() == str(tmp_path / "xdg" / "keras-hybrid")


def test_recipe_digest_names_every_setting():
    quick = pretrain.PRETRAIN_RECIPES["quick"]
    other = pretrain.PretrainRecipe(**{**quick.__dict__, "steps": 25})
    assert quick.digest() == pretrain.PRETRAIN_RECIPES["quick"].digest()
    assert other.digest() != quick.digest()
    with pytest.raises(ValueError, match="Received: recipe='nope'"):
        pretrain.resolve_recipe("nope")


def test_pretrained_weights_are_loaded(quick_tasks):
    task = quick_tasks["ft-docs"]
    a, b = task.build_model(0), task.build_model(1)
    # Every weight of the language model comes from the checkpoint.
    for x, y in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(x, y)
    clf = quick_tasks["ft-topics"].build_model(0)
    for x, y in zip(_weights(clf.get_layer("block_2")),
                    _weights(a.get_layer("block_2"))):
        np.testing.assert_array_equal(x, y)
    assert backbone.block_names(clf)[-1] == ["final_norm", "pool", "head"]


def test_splits_are_deterministic_and_disjoint(quick_tasks, cache):
    topics = quick_tasks["ft-topics"]
    assert topics.x_train.shape[1] == 32 and len(topics.classes) > 2
    assert set(np.unique(topics.y_val)) == set(range(len(topics.classes)))
    rebuilt = finetune.get_finetune_task("ft-topics", quick=True,
                                         cache_dir=cache, progress=False)
    np.testing.assert_array_equal(rebuilt.x_test, topics.x_test)
    # Snippets come from disjoint byte ranges of each topic: no validation
    # or test snippet equals a training one.
    train = {row.tobytes() for row in topics.x_train}
    assert not any(row.tobytes() in train for row in topics.x_val)
    assert not any(row.tobytes() in train for row in topics.x_test)
    docs = quick_tasks["ft-docs"]
    np.testing.assert_array_equal(docs.x_train[:, 1:], docs.y_train[:, :-1])
    assert docs.x_source.shape[1] == docs.x_train.shape[1]
    text = b"".join(t for _, t in finetune._pydoc_topics())
    assert docs.x_val[0].astype(np.uint8).tobytes() in text


def test_unknown_names_raise(cache):
    with pytest.raises(ValueError, match="Received: name='ft-nope'"):
        finetune.get_finetune_task("ft-nope", cache_dir=cache)
    assert "ft-docs" in tasks.KNOWN_TASK_NAMES
    assert "ft-docs" not in tasks.TASK_NAMES  # not part of "all"


def test_forward_flops_from_layer_shapes():
    config = backbone.BackboneConfig(sequence_length=16, width=8, blocks=4,
                                     heads=2)
    model = backbone.language_model(config)
    f = flops.forward_flops(model)
    t, d = 16, 8
    assert f["block_1"] == {"weighted": 2 * t * 12 * d * d,
                            "activation": 2 * 2 * t * t * d}
    assert f["head"] == {"weighted": 2 * t * d * 256, "activation": 0}
    assert f["embedding"] == {"weighted": 0, "activation": 0}
    groups = backbone.block_names(model)
    assert groups == GROUPS_LM
    assert flops.group_flops(model, groups)[1] == sum(f["block_0"].values())
    # Frozen prefix: nothing; frozen above a trainable layer: input
    # gradient only; trainable: both.
    block = f["block_0"]
    full = flops.backward_work(model)
    assert full == 4 * 2 * sum(block.values()) + 2 * f["head"]["weighted"]
    prefix = ["embedding", "position_embedding", "block_0", "block_1"]
    assert flops.backward_work(model, prefix) == full - 4 * sum(
        block.values())
    assert flops.backward_work(model, ["block_3"]) == full - (
        block["weighted"])
    with pytest.raises(ValueError, match="Received: frozen="):
        flops.backward_work(model, ["nope"])


def test_freeze_at_keeps_the_optimizer_and_freezes_the_prefix(quick_tasks):
    task = quick_tasks["ft-docs"]
    steps = 6
    out = freeze_runs.run_finetune(task, seed=3, learning_rate=3e-3,
                                   depth=3, freeze_at=0.5, steps=steps)
    # The schedule's step count carries on through the second compile().
    assert out["iterations_at_freeze"] == 3
    assert out["optimizer_iterations"] == steps
    assert out["frozen"] == ["embedding", "position_embedding", "block_0",
                             "block_1"]
    assert 0.5 < out["backward_share"] < 1.0
    assert np.isfinite(out["val_loss"]) and np.isfinite(out["source_loss"])
    probe = freeze_runs.frozen_layers(task.build_model(0), probe=True)
    assert probe[-1] == "final_norm" and "head" not in probe
    with pytest.raises(ValueError, match="Received: probe=True"):
        freeze_runs.run_finetune(task, 0, 1e-3, depth=2, probe=True)


def _run(seed, val, share=1.0):
    return {"seed": seed, "val_loss": val, "backward_share": share,
            "train_seconds": 1.0, "val_acc": None}


def test_oracle_picks_the_cheapest_schedule_within_tolerance():
    full = [_run(s, v) for s, v in zip((0, 1, 2), (1.00, 1.02, 0.98))]
    probe = [_run(s, 1.3, 0.01) for s in (0, 1, 2)]
    schedules = {
        (2, 0.0): [_run(s, 1.05, 0.5) for s in (0, 1, 2)],
        (2, 0.5): [_run(s, 1.009, 0.75) for s in (0, 1, 2)],
        (1, 0.5): [_run(s, 1.0, 0.85) for s in (0, 1, 2)],
    }
    rows = freeze_oracle.oracle_rows(full, probe, schedules, tolerance=0.01)
    assert rows["oracle"]["blocks"] == 2 and rows["oracle"]["freeze_at"] == 0.5
    assert rows["oracle"]["saving"] == pytest.approx(1 / 0.75)
    assert rows["probe_gap"] == pytest.approx(0.3)
    # Rows in (freeze_at, blocks) order.
    assert [(r["blocks"], r["freeze_at"], r["within"])
            for r in rows["schedules"]] == [(2, 0.0, False), (1, 0.5, True),
                                            (2, 0.5, True)]
    text = freeze_oracle.markdown_tables({"tasks": {"ft-x": {
        "rows": rows, "tuning": {"full_lr": 1e-3, "probe_lr": 1e-2},
        "timing": None}}})
    assert "Oracle: bottom 2 blocks frozen at t=50%" in text
    json.dumps(rows)


def test_oracle_rejects_tuning_on_reported_seeds(tmp_path):
    with pytest.raises(ValueError, match="tune_seeds"):
        freeze_oracle.run_freeze_oracle(
            "ft-docs", out_dir=str(tmp_path), quick=True, seeds=(0,),
            tune_seeds=(0,), progress=False)


def test_freeze_oracle_command_line_errors(tmp_path, capsys):
    from keras_hybrid import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["freeze-oracle", "--quick", "--seeds", "0",
                  "--tune-seeds", "0", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "tune_seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["freeze-oracle", "--blocks", "two"])
    assert "Received: 'two'" in capsys.readouterr().err


def test_oracle_json_keeps_the_tasks_of_earlier_calls(tmp_path, monkeypatch):
    class Stub:
        def __init__(self, name):
            self.name = name

    monkeypatch.setattr(finetune, "get_finetune_task",
                        lambda name, **kwargs: Stub(name))
    monkeypatch.setattr(freeze_oracle, "_run_task",
                        lambda task, runs, settings, log: {"ran": task.name})
    for name, grid in (("ft-docs", (1e-3,)), ("ft-topics", (3e-4,))):
        freeze_oracle.run_freeze_oracle(name, out_dir=str(tmp_path),
                                        progress=False, lr_grid=grid)
    with open(tmp_path / "oracle.json") as f:
        saved = json.load(f)["tasks"]
    assert sorted(saved) == ["ft-docs", "ft-topics"]
    assert saved["ft-docs"]["settings"]["lr_grid"] == [1e-3]
    assert saved["ft-topics"]["settings"]["lr_grid"] == [3e-4]


def test_lora_and_weight_average_references(quick_tasks):
    task = quick_tasks["ft-topics"]
    lora = freeze_runs.run_finetune(task, seed=3, learning_rate=1e-2,
                                    lora_rank=2, steps=4)
    # Every Dense and attention projection below the head is adapted; only
    # the low-rank factors and the head train, and the backward work is
    # counted in full.
    model = task.build_model(3)
    blocks = len([layer for layer in model.layers
                  if layer.name.startswith("block_")])
    assert len(lora["lora_layers"]) == 6 * blocks
    head = sum(int(np.prod(v.shape))
               for v in model.get_layer("head").trainable_variables)
    assert head < lora["lora_trainable_params"] < sum(
        int(np.prod(v.shape)) for v in model.trainable_variables) / 4
    assert lora["backward_share"] == 1.0 and np.isfinite(lora["val_loss"])
    ema = freeze_runs.run_finetune(task, seed=3, learning_rate=1e-3,
                                   ema_momentum=0.5, steps=4)
    plain = freeze_runs.run_finetune(task, seed=3, learning_rate=1e-3,
                                     steps=4)
    # fit() ends on the average, so the weights differ from plain's.
    assert ema["val_loss"] != plain["val_loss"]
    with pytest.raises(ValueError, match="Received: lora_rank=2"):
        freeze_runs.run_finetune(task, 0, 1e-3, lora_rank=2, probe=True)
    with pytest.raises(ValueError, match="Received: ema_momentum"):
        freeze_runs.run_finetune(task, 0, 1e-3, ema_momentum=0.9,
                                 depth=2, freeze_at=0.5)


def test_oracle_rows_name_the_best_full_backward_reference():
    full = [_run(s, 1.0) for s in (0, 1, 2)]
    probe = [_run(s, 1.3, 0.01) for s in (0, 1, 2)]
    references = {"ema": [_run(s, 0.99) for s in (0, 1, 2)],
                  "lora": [_run(s, 1.02) for s in (0, 1, 2)]}
    rows = freeze_oracle.oracle_rows(full, probe, {}, 0.01, references)
    assert rows["best_reference"] == "ema"
    assert rows["references"]["lora"]["val_ratio"] == pytest.approx(1.02)
    text = freeze_oracle.markdown_tables({"tasks": {"ft-x": {
        "rows": rows, "tuning": {"full_lr": 1e-3, "probe_lr": 1e-2,
                                 "lora": {"lr": 1e-2}},
        "timing": None}}})
    assert "| Keras LoRA (lr 0.01) | 1.000 |" in text
    assert "Best full-backward reference: ema." in text
