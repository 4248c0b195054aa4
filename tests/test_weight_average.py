"""The benchmark's `--weight-average`: every arm keeps Keras' moving average
of the weights (`use_ema`) and is judged on the average fit() ends on."""

import json

import keras
import numpy as np
import pytest

from keras_hybrid import cli
from keras_hybrid import weight_average
from keras_hybrid.bench import arms
from keras_hybrid.bench.harness import run_benchmark
from keras_hybrid.weight_average import check_weight_average
from tests.helpers import TinyTask
from tests.test_bench import TINY_CONFIG


# Keras leaves the averaged weights unusable after fit() on JAX: refused
# there (`test_refused_on_jax`).
runs_arms = pytest.mark.skipif(keras.backend.backend() == "jax",
                               reason="weight_average is refused on JAX")


class AveragedTask(TinyTask):
    """`TinyTask` that keeps the model and optimizer of its last arm."""

    built = []
    optimizers = []

    def build_model(self, seed):
        model = super().build_model(seed)
        AveragedTask.built.append(model)
        return model

    def make_optimizer(self, learning_rate):
        optimizer = super().make_optimizer(learning_rate)
        AveragedTask.optimizers.append(optimizer)
        return optimizer


def _spec(task, **extra):
    return {"task": task, "arm": "baseline", "seed": 0, "eval_every": 2,
            "progress": False, **extra}


@runs_arms
def test_final_validation_is_of_the_average():
    task = AveragedTask(n=48, batch_size=16, epochs=3)
    raw = arms.run_arm(_spec(task))
    averaged = arms.run_arm(_spec(task, weight_average=0.5))
    model = AveragedTask.built[-1]
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == 0.5
    # Same training run: the curves agree up to the last step ...
    assert [e["val_loss"] for e in raw["evals"][:-1]] == [
        e["val_loss"] for e in averaged["evals"][:-1]
    ]
    # ... whose figure is the averaged model fit() returned.
    last = averaged["evals"][-1]
    assert last["step"] == raw["evals"][-1]["step"] == 9
    validator = arms.Validator(task.x_val, task.y_val, 32)
    assert last["val_loss"] == pytest.approx(validator(model)[0], rel=1e-6)
    assert last["val_loss"] != pytest.approx(raw["evals"][-1]["val_loss"])


@runs_arms
def test_probe_is_the_shorter_averaged_run():
    # The truncated reference: the baseline probed at step B is what the
    # run stopped at B returns, its weight average; probing changes nothing.
    task = AveragedTask(n=48, batch_size=16, epochs=3)  # 3 steps per epoch
    spec = _spec(task, weight_average=0.5)
    probed = arms.run_arm({**spec, "probe_steps": [3, 9]})
    plain = arms.run_arm(spec)
    short = arms.run_arm({**spec, "epochs": 1})
    assert probed["evals"] == [
        dict(e, time_s=p["time_s"])
        for e, p in zip(plain["evals"], probed["evals"])
    ]
    assert probed["probes"][0]["val_loss"] == pytest.approx(
        short["evals"][-1]["val_loss"], rel=1e-6)
    # Not the weights being trained at step 3.
    raw = arms.run_arm({**_spec(task), "probe_steps": [3]})
    assert raw["probes"][0]["val_loss"] != pytest.approx(
        probed["probes"][0]["val_loss"])
    assert probed["probes"][1]["val_loss"] == pytest.approx(
        plain["evals"][-1]["val_loss"], rel=1e-6)


@runs_arms
def test_hybrid_arm_ends_on_the_average():
    task = AveragedTask(n=48, batch_size=16, epochs=4)
    result = arms.run_arm(_spec(task, arm="hybrid", config=TINY_CONFIG,
                                weight_average=0.9))
    model = AveragedTask.built[-1]  # the model the hybrid wrapped
    summary = result["report"]["training_summary"]
    assert summary["steps_by_phase"]["PREDICT"] > 0
    averages = [keras.ops.convert_to_numpy(v)
                for v in AveragedTask.optimizers[-1]
                ._model_variables_moving_average]
    for average, weight in zip(averages, model.trainable_variables):
        np.testing.assert_array_equal(average,
                                      keras.ops.convert_to_numpy(weight))
    model.compile(loss=task.loss)  # to validate it on its own
    validator = arms.Validator(task.x_val, task.y_val, 32)
    assert result["evals"][-1]["val_loss"] == pytest.approx(
        validator(model)[0], rel=1e-6)


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, True, "0.9"])
def test_bad_weight_average(value, tmp_path):
    with pytest.raises(ValueError, match="weight_average"):
        check_weight_average(value)
    with pytest.raises(ValueError, match="weight_average"):
        run_benchmark([TinyTask()], seeds=1, weight_average=value,
                      out_dir=str(tmp_path), progress=False)


def test_built_optimizer_refused():
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable(np.zeros((2,), "float32"))])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        weight_average.turn_on(optimizer, 0.9)


def test_cli_weight_average(capsys):
    parser = cli.build_parser()
    args = cli.resolve_bench_args(parser, parser.parse_args(
        ["bench", "--weight-average", "0.99"]))
    assert args["weight_average"] == 0.99
    with pytest.raises(SystemExit):
        cli.resolve_bench_args(parser, parser.parse_args(
            ["bench", "--weight-average", "1"]))
    assert "--weight-average must be a momentum" in capsys.readouterr().err


@runs_arms
def test_bench_records_the_weight_average(tmp_path):
    result = run_benchmark([TinyTask()], seeds=1, config=TINY_CONFIG,
                           predictors=["drift"], out_dir=str(tmp_path),
                           progress=False, overhead_repetitions=0,
                           weight_average=0.9)
    with open(tmp_path / "bench.json", encoding="utf-8") as f:
        data = json.load(f)
    assert data["weight_average"] == result["weight_average"] == 0.9


def test_refused_on_jax(tmp_path):
    with pytest.raises(ValueError, match="not available on the JAX backend"):
        check_weight_average(0.99, "jax")
    assert check_weight_average(0.99, "torch") == 0.99
    with pytest.raises(ValueError, match="JAX"):
        run_benchmark([TinyTask()], seeds=1, weight_average=0.9,
                      backend="jax", out_dir=str(tmp_path), progress=False)
