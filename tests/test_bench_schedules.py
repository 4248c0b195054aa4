"""Learning-rate recipes of the benchmark (`--schedule`), the `wsd`
reference arm and the compute-to-target figure."""

import numpy as np
import pytest

from helpers import TinyTask
from keras_hybrid import cli
from keras_hybrid.bench import arms
from keras_hybrid.bench import figures
from keras_hybrid.bench import schedules
from keras_hybrid.bench.harness import run_benchmark
from keras_hybrid.bench.headroom import run_headroom
from keras_hybrid.bench.schedules import WarmupDecay


def _values(schedule, steps):
    return np.array([schedule.value(s) for s in steps])


def test_warmup_then_cosine_to_zero():
    schedule = WarmupDecay(1.0, total_steps=100, warmup_steps=10,
                           decay="cosine")
    np.testing.assert_allclose(_values(schedule, range(10)),
                               np.arange(1, 11) / 10.0, rtol=1e-6)
    assert schedule.value(10) == pytest.approx(1.0)
    assert schedule.value(55) == pytest.approx(0.5, abs=1e-6)
    decay = _values(schedule, range(10, 100))
    assert np.all(np.diff(decay) < 0)
    assert schedule.value(99) < 1e-3 and schedule.value(100) == 0.0


def test_wsd_holds_the_peak_then_cools_down_linearly():
    schedule = WarmupDecay(2.0, total_steps=50, warmup_steps=5, decay="wsd",
                           cooldown_steps=10)
    np.testing.assert_allclose(_values(schedule, range(5, 40)), 2.0)
    np.testing.assert_allclose(_values(schedule, range(40, 50)),
                               2.0 * (50 - np.arange(40, 50)) / 10.0,
                               rtol=1e-6)
    assert schedule.value(50) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"peak": 0.0}, "peak"),
    ({"total_steps": 0}, "total_steps"),
    ({"warmup_steps": 10}, "warmup_steps"),
    ({"decay": "step"}, "decay"),
    ({"decay": "wsd", "cooldown_steps": 0}, "cooldown_steps"),
    ({"decay": "wsd", "cooldown_steps": 11}, "cooldown_steps"),
])
def test_warmup_decay_rejects_bad_arguments(kwargs, message):
    args = {"peak": 1.0, "total_steps": 10, "warmup_steps": 0,
            "decay": "cosine", **kwargs}
    with pytest.raises(ValueError, match=message):
        WarmupDecay(**args)


def test_recipes():
    task = TinyTask()
    task.warmup_steps = 4
    assert isinstance(schedules.recipe_learning_rate(TinyTask(), "constant",
                                                     100), float)
    constant = schedules.recipe_learning_rate(task, "constant", 100)
    assert constant.get_config()["decay"] == "constant"
    assert constant.get_config()["warmup_steps"] == 4
    cosine = schedules.equal_budget_learning_rate(task, "cosine", 60)
    assert (cosine.total_steps, cosine.decay, cosine.warmup_steps) == (
        60, "cosine", 4)
    linear = schedules.equal_budget_learning_rate(task, "constant", 60)
    assert linear.decay == "linear"
    wsd = schedules.wsd_learning_rate(task, 60)
    assert (wsd.decay, wsd.cooldown_steps, wsd.total_steps) == ("wsd", 12, 60)
    with pytest.raises(ValueError, match="schedule"):
        schedules.recipe_learning_rate(task, "linear", 100)


def test_wsd_arm_runs_exactly_its_budget_with_its_cooldown():
    task = TinyTask(n=48, batch_size=16, epochs=30)  # 3 steps per epoch
    result = arms.run_arm({
        "task": task, "arm": "wsd", "seed": 0, "budget": 50,
        "eval_every": 10, "progress": False, "schedule": "cosine",
    })
    assert result["optimizer_iterations"] == result["steps"] == 50
    assert result["backward_passes"] == 50 and result["budget"] == 50
    assert result["epochs"] == 17
    lr = result["learning_rate"]
    assert lr["schedule"]["decay"] == "wsd"
    assert lr["schedule"]["total_steps"] == 50
    assert lr["schedule"]["cooldown_steps"] == 10
    # The last step ran at 1/10 of the peak (linear to 0 at step 50).
    assert lr["last_step"] == pytest.approx(task.learning_rate / 10)
    schedule = WarmupDecay(**lr["schedule"])
    np.testing.assert_allclose(_values(schedule, range(40)),
                               task.learning_rate, rtol=1e-6)


def test_baseline_and_equal_budget_follow_the_recipe():
    task = TinyTask(n=48, batch_size=16, epochs=4)  # 12 steps
    spec = {"task": task, "seed": 0, "eval_every": 4, "progress": False,
            "schedule": "cosine"}
    baseline = arms.run_arm({**spec, "arm": "baseline"})
    assert baseline["learning_rate"]["schedule"]["decay"] == "cosine"
    assert baseline["learning_rate"]["schedule"]["total_steps"] == 12
    equal = arms.run_arm({**spec, "arm": "equal-budget", "budget": 8})
    assert equal["learning_rate"]["schedule"]["total_steps"] == 8
    assert equal["optimizer_iterations"] == 8
    with pytest.raises(ValueError, match="schedule"):
        arms.run_arm({**spec, "arm": "baseline", "schedule": "linear"})
    with pytest.raises(ValueError, match="wsd arm needs"):
        arms.run_arm({**spec, "arm": "wsd", "budget": 0})


# ===================================================== compute-to-target
def _evals(losses, backward=None):
    return [
        {"step": 10 * i, "time_s": float(i), "val_loss": loss,
         "val_acc": None,
         **({} if backward is None else {"backward": backward[i]})}
        for i, loss in enumerate(losses)
    ]


def test_backward_to_target_on_synthetic_curves():
    curve = _evals([3.0, 2.0, 1.5, 1.2, 1.0])
    assert figures.backward_to_target(curve, 1.5) == 20
    assert figures.backward_to_target(curve, 0.5) is None
    assert figures.backward_to_target(curve, None) is None
    nan = _evals([3.0, float("nan"), 1.0])
    assert figures.backward_to_target(nan, 1.5) == 20
    # A hybrid's records count the backward passes it ran, not its steps.
    hybrid = _evals([3.0, 2.0, 1.4], backward=[0, 8, 14])
    assert figures.backward_to_target(hybrid, 1.5) == 14


def test_compute_to_target_ratios():
    target = figures.target_loss(1.0)
    baseline = {"evals": _evals([3.0, 2.0, 1.5, 1.005, 1.0]),
                "wall_clock_s": 4.0, "backward_passes": 40,
                "forward_passes": 40, "peak_memory_mb": 1.0, "steps": 40,
                "clock": [0.1 * (i + 1) for i in range(40)],
                "probes": [{"step": 30, "time_s": 3.0, "val_loss": 1.005,
                            "val_acc": None, "test_loss": None}]}
    hybrid = {"evals": _evals([3.0, 1.6, 1.0, 0.99, 0.98],
                              backward=[0, 6, 12, 20, 30]),
              "wall_clock_s": 3.0, "backward_passes": 30,
              "forward_passes": 34, "peak_memory_mb": 1.0, "steps": 40}
    arms_figures = {
        "baseline": figures.arm_figures(baseline, target),
        "hybrid-holt": figures.arm_figures(hybrid, target),
        "truncated-holt": figures.truncated_figures(baseline, 30, target),
    }
    assert arms_figures["baseline"]["backward_to_target"] == 30
    assert arms_figures["hybrid-holt"]["backward_to_target"] == 12
    assert arms_figures["truncated-holt"]["backward_to_target"] == 30
    ratios = figures.seed_ratios(arms_figures)
    assert ratios["hybrid-holt/baseline"]["backward_to_target"] == (
        pytest.approx(0.4))
    aggregate = figures.aggregate_seeds([arms_figures])
    assert aggregate["hybrid-holt"]["backward_to_target"]["median"] == 12


def test_wsd_is_a_same_budget_reference():
    names = ["baseline", "hybrid-holt", "equal-budget-holt", "wsd-holt",
             "truncated-holt"]
    pairs = figures.ratio_pairs(names)
    assert ("hybrid-holt", "wsd-holt") in pairs
    assert ("wsd-holt", "baseline") in pairs


# ================================================================ checks
def test_run_benchmark_and_headroom_check_the_schedule(tmp_path):
    with pytest.raises(ValueError, match="schedule"):
        run_benchmark([TinyTask()], schedule="linear", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="first_seed"):
        run_benchmark([TinyTask()], first_seed=-1, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="schedule"):
        run_headroom([TinyTask()], schedule="step", out_dir=str(tmp_path))


@pytest.mark.parametrize("argv, message", [
    (["bench", "--schedule", "linear"], "unknown schedule"),
    (["headroom", "--schedule", "step"], "unknown schedule"),
    (["bench", "--first-seed", "-1"], "non-negative integer"),
])
def test_cli_schedule_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_schedule_and_first_seed():
    parser = cli.build_parser()
    args = cli.resolve_bench_args(parser, parser.parse_args(
        ["bench", "--task", "stdlib-gpt", "--schedule", "cosine",
         "--first-seed", "100", "--predictors", "nesterov,holt"]))
    assert (args["tasks"], args["schedule"], args["first_seed"],
            args["predictors"]) == ("stdlib-gpt", "cosine", 100,
                                    ["nesterov", "holt"])
    room = cli.resolve_headroom_args(parser, parser.parse_args(
        ["headroom", "--task", "stdlib-gpt", "--schedule", "cosine"]))
    assert room["schedule"] == "cosine"
