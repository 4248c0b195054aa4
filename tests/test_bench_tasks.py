"""Benchmark tasks: determinism, splits, shapes, seeded models, one step."""

import os
import random

import keras
import numpy as np
import pytest

from keras_hybrid.bench import tasks

QUICK_MNIST1D_SAMPLES = tasks._MNIST1D_NUM_SAMPLES[True]
SPLITS = ("train", "val", "test")


def _clear_memory_caches():
    tasks._mnist1d_splits.cache_clear()
    tasks._stdlib_lm_splits.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Points the on-disk cache at a temporary folder for this module."""
    path = str(tmp_path_factory.mktemp("keras_hybrid_cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HYBRID_CACHE_DIR", path)
        _clear_memory_caches()
        yield path
    _clear_memory_caches()


@pytest.fixture(scope="module")
def quick_tasks(cache_dir):
    return {name: tasks.get_task(name, quick=True) for name in tasks.TASK_NAMES}


def _arrays(task):
    return [getattr(task, f"{a}_{s}") for s in SPLITS for a in ("x", "y")]


def _rows(x):
    x = np.ascontiguousarray(x).reshape(len(x), -1)
    return {row.tobytes() for row in x}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_task_names():
    assert tasks.TASK_NAMES == ("mnist1d-mlp", "mnist1d-cnn", "stdlib-lm",
                                "stdlib-gpt")


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="Received: name='nope'"):
        tasks.get_task("nope")


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_get_task_is_deterministic(quick_tasks, name):
    first = quick_tasks[name]
    _clear_memory_caches()  # Second build reads the disk cache or re-reads.
    second = tasks.get_task(name, quick=True)
    for a, b in zip(_arrays(first), _arrays(second)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # Every call returns its own copies.
    second.x_train[...] = 0
    third = tasks.get_task(name, quick=True)
    np.testing.assert_array_equal(third.x_train, first.x_train)


def test_mnist1d_generation_is_deterministic_and_cached(quick_tasks, cache_dir):
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    fresh = tasks._generate_mnist1d(QUICK_MNIST1D_SAMPLES)
    # The generator's global reseeding does not leak to the caller.
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(numpy_state, after))

    # `quick_tasks` generated the data once more and wrote the cache file.
    cached = tasks._mnist1d_splits(QUICK_MNIST1D_SAMPLES)
    task = quick_tasks["mnist1d-mlp"]
    for a, b, c in zip(fresh, cached, _arrays(task)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    path = tasks._mnist1d_cache_path(QUICK_MNIST1D_SAMPLES)
    assert os.path.dirname(path) == cache_dir
    assert os.path.isfile(path)


def test_cache_can_be_disabled(monkeypatch):
    monkeypatch.setenv("KERAS_HYBRID_CACHE_DIR", "")
    assert tasks._cache_dir() is None


@pytest.mark.parametrize("name", ["mnist1d-mlp", "mnist1d-cnn"])
def test_mnist1d_shapes_and_dtypes(quick_tasks, name):
    task = quick_tasks[name]
    feature_shape = (40,) if name == "mnist1d-mlp" else (40, 1)
    for split in SPLITS:
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        assert x.shape[1:] == feature_shape
        assert x.dtype == np.float32
        assert y.shape == (len(x),)
        assert y.dtype == np.int32
        assert set(np.unique(y)) == set(range(10))
    total = len(task.x_train) + len(task.x_val) + len(task.x_test)
    assert total == QUICK_MNIST1D_SAMPLES
    assert len(task.x_val) == round(
        0.1 * (len(task.x_train) + len(task.x_val))
    )
    # Standardized with the training statistics.
    assert abs(float(task.x_train.mean())) < 1e-3
    assert abs(float(task.x_train.std()) - 1.0) < 1e-3


def test_mnist1d_splits_are_disjoint(quick_tasks):
    task = quick_tasks["mnist1d-mlp"]
    train, val, test = (_rows(getattr(task, f"x_{s}")) for s in SPLITS)
    assert len(train) == len(task.x_train)  # No duplicated signals at all.
    assert not train & val
    assert not train & test
    assert not val & test
    # Both MNIST-1D tasks share the data.
    cnn = quick_tasks["mnist1d-cnn"]
    np.testing.assert_array_equal(cnn.x_val[..., 0], task.x_val)


def test_stdlib_lm_shapes_and_dtypes(quick_tasks):
    task = quick_tasks["stdlib-lm"]
    length = tasks._LM_SEQUENCE_LENGTH
    caps = tasks._LM_MAX_WINDOWS[True]
    for split in SPLITS:
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        assert x.shape == (caps[split], length)
        assert y.shape == x.shape
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.min() >= 0 and x.max() < 256
        # The targets are the inputs shifted by one byte.
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_stdlib_lm_full_size():
    task = tasks.get_task("stdlib-lm")
    assert task.x_train.shape == (
        tasks._LM_MAX_WINDOWS[False]["train"],
        tasks._LM_SEQUENCE_LENGTH,
    )
    assert task.epochs >= tasks.get_task("stdlib-lm", quick=True).epochs


def test_stdlib_lm_files_are_disjoint_and_present():
    train = tasks.STDLIB_LM_TRAIN_FILES
    val = tasks.STDLIB_LM_VAL_FILES
    test = tasks.STDLIB_LM_TEST_FILES
    for names in (train, val, test):
        assert len(set(names)) == len(names)
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    root = tasks._stdlib_dir()
    for name in train + val + test:
        assert os.path.isfile(os.path.join(root, name)), name


def test_stdlib_lm_missing_file_raises():
    with pytest.raises(FileNotFoundError, match="no_such_module.py"):
        tasks._read_stdlib_files(("textwrap.py", "no_such_module.py"))


def test_stdlib_lm_windows_do_not_leak(quick_tasks):
    task = quick_tasks["stdlib-lm"]
    train = _rows(task.x_train)
    assert not train & _rows(task.x_val)
    assert not train & _rows(task.x_test)


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_build_model_is_seeded(quick_tasks, name):
    task = quick_tasks[name]
    a = _weights(task.build_model(seed=3))
    b = _weights(task.build_model(seed=3))
    c = _weights(task.build_model(seed=4))
    assert len(a) == len(b) == len(c) > 0
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a, c))


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_build_model_rejects_bad_seeds(quick_tasks, seed):
    with pytest.raises(ValueError, match="Received: seed="):
        quick_tasks["mnist1d-mlp"].build_model(seed)


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_one_train_step(quick_tasks, name):
    task = quick_tasks[name]
    model = task.build_model(seed=0)
    model.compile(
        optimizer=task.make_optimizer(task.learning_rate),
        loss=task.loss,
        metrics=task.metrics,
    )
    batch = slice(0, task.batch_size)
    logs = model.train_on_batch(
        task.x_train[batch], task.y_train[batch], return_dict=True
    )
    assert np.isfinite(logs["loss"])
    assert 0.0 <= logs["accuracy"] <= 1.0
    logits = model.predict(task.x_val[:4], verbose=0)
    classes = 256 if name.startswith("stdlib") else 10
    assert logits.shape[-1] == classes
    assert logits.shape[:-1] == task.y_val[:4].shape


def test_settings(quick_tasks):
    for name, task in quick_tasks.items():
        assert task.name == name
        assert 32 <= task.batch_size <= 256
        assert task.epochs >= 1
        assert task.learning_rate > 0
        assert task.metrics == ["accuracy"]
        assert task.description
        assert task.steps_per_epoch == -(-len(task.x_train) // task.batch_size)
        assert "x_train" not in repr(task)  # Arrays stay out of the repr.


def test_make_optimizer(quick_tasks):
    task = quick_tasks["mnist1d-mlp"]
    optimizer = task.make_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate) == pytest.approx(task.learning_rate)
    assert float(task.make_optimizer(0.5).learning_rate) == pytest.approx(0.5)
    schedule = keras.optimizers.schedules.PolynomialDecay(
        0.0123, decay_steps=10, end_learning_rate=0.0
    )
    scheduled = task.make_optimizer(schedule)
    assert float(scheduled.learning_rate) == pytest.approx(0.0123)
    for bad in (0.0, -1e-3, "fast"):
        with pytest.raises(ValueError, match="Received: learning_rate="):
            task.make_optimizer(bad)


def test_stdlib_gpt_recipe(quick_tasks):
    task = quick_tasks["stdlib-gpt"]
    optimizer = task.make_optimizer()
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(task.weight_decay)
    assert 0 < task.warmup_steps < task.epochs * task.steps_per_epoch // 4
    # The same byte windows as stdlib-lm (never a validation file).
    lm = quick_tasks["stdlib-lm"]
    np.testing.assert_array_equal(task.x_val, lm.x_val)
    with pytest.raises(ValueError, match="Received: optimizer='sgd'"):
        tasks.Task(**{**vars(task), "optimizer": "sgd"})
