"""Tests of the benchmark harness logic (tiny sizes, no timing assertions)."""

import json
import os

import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid import cli
from keras_hybrid.bench import arms
from keras_hybrid.bench import figures
from keras_hybrid.bench import overhead
from keras_hybrid.bench import summary
from keras_hybrid.bench import table
from keras_hybrid.bench.harness import run_benchmark
from tests.helpers import TinyTask


TINY_CONFIG = {
    "warmup_steps": 3,
    "full_steps": 3,
    "min_predict_steps": 3,
    "max_predict_steps": 4,
    "validation_samples": 2,
    "confidence_threshold": 0.0,
    "correct_steps": 1,
}


# ========================================================= pure figures
class TestTimeToTarget:
    def test_first_point_at_or_below_target(self):
        points = [(0.0, 2.0), (1.0, 1.5), (2.0, 1.0), (3.0, 0.9)]
        assert figures.time_to_target(points, 1.2) == 2.0

    def test_equal_counts_as_reached(self):
        assert figures.time_to_target([(0.5, 1.3), (1.5, 1.2)], 1.2) == 1.5

    def test_not_reached(self):
        assert figures.time_to_target([(0.0, 2.0), (1.0, 1.5)], 1.0) is None

    def test_first_time_even_if_it_rises_again(self):
        points = [(1.0, 0.9), (2.0, 1.4), (3.0, 0.8)]
        assert figures.time_to_target(points, 1.0) == 1.0

    def test_non_finite_losses_never_count(self):
        points = [(1.0, float("nan")), (2.0, None), (3.0, 0.5)]
        assert figures.time_to_target(points, 1.0) == 3.0

    def test_no_target(self):
        assert figures.time_to_target([(1.0, 0.1)], None) is None

    def test_target_loss(self):
        assert figures.target_loss(2.0) == pytest.approx(2.02)
        assert figures.target_loss(-1.0) == pytest.approx(-0.99)
        assert figures.target_loss(None) is None
        assert figures.target_loss(float("nan")) is None


class TestAggregate:
    def test_median_and_spread(self):
        stats = figures.aggregate([3.0, 1.0, 2.0])
        assert stats == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3,
                         "missing": 0}

    def test_even_count_median(self):
        assert figures.aggregate([1, 2, 3, 10])["median"] == 2.5

    def test_missing_values_are_dropped_and_counted(self):
        stats = figures.aggregate([1.0, None, float("nan"), 3.0])
        assert (stats["median"], stats["n"], stats["missing"]) == (2.0, 4, 2)

    def test_missing_is_worst(self):
        stats = figures.aggregate([4.0, None, None], missing_is_worst=True)
        assert stats["median"] is None  # not reached in most seeds
        assert (stats["min"], stats["max"]) == (4.0, None)
        stats = figures.aggregate([4.0, 2.0, None], missing_is_worst=True)
        assert (stats["median"], stats["min"]) == (4.0, 2.0)

    def test_all_missing(self):
        stats = figures.aggregate([None, None])
        assert stats["median"] is None and stats["missing"] == 2

    def test_ratio(self):
        assert figures.ratio(1.0, 4.0) == 0.25
        assert figures.ratio(None, 1.0) is None
        assert figures.ratio(1.0, 0.0) is None

    def test_seed_ratios_and_aggregation(self):
        seeds = []
        for s, (wall, ttt) in enumerate([(5.0, 4.0), (6.0, None),
                                         (4.0, 2.0)]):
            seeds.append({
                "baseline": {"wall_clock_s": 10.0, "time_to_target_s": 8.0,
                             "backward_passes": 100, "final_val_loss": 1.0,
                             "best_val_loss": 1.0},
                "hybrid-linear": {"wall_clock_s": wall,
                                  "time_to_target_s": ttt,
                                  "backward_passes": 50,
                                  "final_val_loss": 1.0 + s,
                                  "best_val_loss": 1.0},
                "equal-budget-linear": {"wall_clock_s": 4.0,
                                        "time_to_target_s": None,
                                        "backward_passes": 50,
                                        "final_val_loss": 2.0,
                                        "best_val_loss": 2.0},
            })
        ratios = [figures.seed_ratios(s) for s in seeds]
        assert set(ratios[0]) == {
            "hybrid-linear/baseline", "hybrid-linear/equal-budget-linear",
            "equal-budget-linear/baseline",
        }
        assert ratios[0]["hybrid-linear/baseline"]["wall_clock_s"] == 0.5
        assert ratios[1]["hybrid-linear/baseline"]["time_to_target_s"] is None
        agg = figures.aggregate_seeds(ratios)["hybrid-linear/baseline"]
        assert agg["wall_clock_s"]["median"] == 0.5
        assert (agg["wall_clock_s"]["min"], agg["wall_clock_s"]["max"]) == (
            0.4, 0.6)
        assert agg["time_to_target_s"]["missing"] == 1
        assert agg["time_to_target_s"]["median"] == pytest.approx(0.375)
        arm_agg = figures.aggregate_seeds(seeds)["hybrid-linear"]
        assert arm_agg["time_to_target_s"]["median"] == 4.0  # miss is worst
        assert arm_agg["final_val_loss"]["median"] == 2.0

    def test_cell_formatting(self):
        one = figures.aggregate([1.234])
        assert table.cell(one, ".2f") == "1.23"
        three = figures.aggregate([1.0, 2.0, None], missing_is_worst=True)
        text = table.cell(three, ".1f", not_reached=True)
        assert text == "2.0 [1.0-not reached] (2/3 reached)"
        assert table.cell(figures.aggregate([None]), ".1f", True) == (
            "not reached"
        )


def test_phases_in_time():
    clock = [0.5, 1.0, 1.5, 2.0, 2.5]
    phases = [{"phase": "WARMUP", "start_step": 0, "length": 2},
              {"phase": "PREDICT", "start_step": 2, "length": 10}]
    mapped = figures.phases_in_time(phases, clock)
    assert (mapped[0]["start_s"], mapped[0]["end_s"]) == (0.0, 1.0)
    assert (mapped[1]["start_s"], mapped[1]["end_s"]) == (1.0, 2.5)


def test_overhead_checks():
    profile = {"plain_ms": 10.0, "full_ms": 10.2,
               "predict_ms": 4.0, "skip_ms": 0.1}
    stats = {"linear": {"pct": figures.aggregate([7.0]),
                        "memory_mb": figures.aggregate([1.0])}}
    out = figures.overhead_figures("stdlib-lm", profile, stats)
    ok = {c["name"]: c["ok"] for c in out["checks"]}
    assert ok == {"full_over_plain": True,
                  "predict_over_full": True, "skip_over_full": True,
                  "predictor_overhead_pct[linear]": False}
    assert out["step_split"]["backward_ms"] == pytest.approx(6.0)
    other = figures.overhead_figures("mnist1d-mlp", profile, stats)
    predict = [c for c in other["checks"] if c["name"] == "predict_over_full"]
    assert predict[0]["applies"] is False and predict[0]["ok"] is None


def test_validator_matches_evaluate():
    task = TinyTask()
    model = task.build_model(0)
    arms.compile_model(model, task, task.learning_rate)
    model.fit(task.x_train, task.y_train, batch_size=16, epochs=1, verbose=0)
    loss, acc = arms.Validator(task.x_val, task.y_val, 10)(model)
    expected = model.evaluate(task.x_val, task.y_val, batch_size=10,
                              verbose=0, return_dict=True)
    assert loss == pytest.approx(expected["loss"], rel=1e-5)
    assert acc == pytest.approx(expected["accuracy"])


# ================================================================= arms
def test_equal_budget_runs_exactly_the_budget():
    task = TinyTask(n=48, batch_size=16, epochs=5)  # 3 steps per epoch
    result = arms.run_arm({
        "task": task, "arm": "equal-budget", "seed": 0, "budget": 7,
        "eval_every": 2, "progress": False,
    })
    assert result["optimizer_iterations"] == 7
    assert result["steps"] == 7
    assert result["backward_passes"] == 7 and result["forward_passes"] == 7
    assert result["epochs"] == 3
    assert [e["step"] for e in result["evals"]] == [0, 2, 4, 6, 7]
    assert len(result["clock"]) == 7


def test_baseline_probe_is_the_shorter_run():
    # The truncated reference rests on this: the baseline probed at step B
    # is the run that stopped at B, and probing leaves its curve unchanged.
    task = TinyTask(n=48, batch_size=16, epochs=3)  # 3 steps per epoch
    spec = {"task": task, "arm": "baseline", "seed": 0, "eval_every": 2,
            "progress": False}
    probed = arms.run_arm({**spec, "probe_steps": [3, 4, 5]})
    plain = arms.run_arm(spec)
    short = arms.run_arm({**spec, "epochs": 1})
    assert [p["step"] for p in probed["probes"]] == [3, 4, 5]
    at_eval = next(e for e in probed["evals"] if e["step"] == 4)
    assert probed["probes"][1]["val_loss"] == at_eval["val_loss"]
    assert [(e["step"], e["val_loss"]) for e in probed["evals"]] == [
        (e["step"], pytest.approx(e["val_loss"], rel=1e-6))
        for e in plain["evals"]
    ]
    assert plain["probes"] == []
    first = probed["probes"][0]
    assert first["val_loss"] == pytest.approx(
        short["evals"][-1]["val_loss"], rel=1e-6
    )
    assert first["test_loss"] == pytest.approx(
        short["final_test_loss"], rel=1e-6
    )


def test_probe_steps_rejected_outside_baseline():
    with pytest.raises(ValueError, match="probe_steps"):
        arms.run_arm({"task": TinyTask(), "arm": "equal-budget", "seed": 0,
                      "budget": 2, "eval_every": 1, "progress": False,
                      "probe_steps": [1]})
    with pytest.raises(ValueError, match="probe_steps"):
        arms.EvalClock(arms.Validator(np.zeros((2, 8)), np.zeros(2), 2), 1,
                       1, probe_steps=[0])


def test_truncated_figures_read_the_baseline_at_the_budget():
    baseline = {
        "evals": [
            {"step": 0, "time_s": 0.0, "val_loss": 3.0, "val_acc": 0.1},
            {"step": 4, "time_s": 4.0, "val_loss": 1.0, "val_acc": 0.6},
            {"step": 8, "time_s": 8.0, "val_loss": 0.5, "val_acc": 0.9},
        ],
        "probes": [{"step": 6, "time_s": 6.0, "val_loss": 0.8,
                    "val_acc": 0.7, "test_loss": 0.85}],
        "clock": [float(i + 1) for i in range(8)],
        "steps": 8,
        "peak_memory_mb": 100.0,
        "final_test_loss": 0.55,
    }
    out = figures.truncated_figures(baseline, 6, target=0.9)
    assert set(figures.ARM_FIGURES) <= set(out)
    assert out["final_val_loss"] == 0.8 and out["final_test_loss"] == 0.85
    assert out["backward_passes"] == out["steps"] == 6
    assert out["wall_clock_s"] == 6.0
    assert out["best_val_loss"] == 0.8  # the step-8 eval is after B
    assert out["best_val_acc"] == 0.7
    assert out["time_to_target_s"] == 6.0
    full = figures.truncated_figures(baseline, 8, target=0.9)
    assert full["final_val_loss"] == 0.5 and full["final_test_loss"] == 0.55
    with pytest.raises(ValueError, match="probe"):
        figures.truncated_figures(baseline, 5, target=0.9)


def test_equal_budget_rejects_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        arms.run_arm({"task": TinyTask(), "arm": "equal-budget", "seed": 0,
                      "budget": 0, "eval_every": 1, "progress": False})
    with pytest.raises(ValueError, match="Unknown arm kind"):
        arms.run_arm({"task": TinyTask(), "arm": "nope", "seed": 0,
                      "eval_every": 1})


# ========================================================== end to end
def _strict_json(path):
    def reject(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=reject)


def test_run_benchmark_schema(tmp_path, capfd):
    out = tmp_path / "bench"
    result = run_benchmark(
        [TinyTask(n=64, epochs=3)], seeds=1, config=TINY_CONFIG,
        out_dir=str(out), progress=True, profile_calls=3,
        predictors=["drift"], overhead_repetitions=2, overhead_steps=6,
    )
    printed = capfd.readouterr()
    assert "\nverdict for hybrid-drift (seed 0):\n" in printed.out
    assert "  backward passes skipped: " in printed.out
    assert "  beat the best plain reference? " in printed.out
    assert "  cost per step: " in printed.out
    assert " ms for plain fit() (" in printed.out
    assert "at equal wall-clock (" in printed.out
    # The progress lines name the seed as the PNG's title does.
    assert "[tiny] hybrid-drift seed 0 (1/1) start" in printed.out
    # The step-time checks against internal targets need --profile.
    assert "target <=" not in printed.out
    assert "oneDNN custom operations" not in printed.err
    data = _strict_json(out / "bench.json")
    assert data == json.loads(json.dumps(result))
    for key in ("schema_version", "date", "command_line", "machine",
                "versions", "backend", "config", "seeds", "predictors",
                "tasks"):
        assert key in data, key
    for key in ("platform", "processor", "cpu_count", "python"):
        assert key in data["machine"]
    for key in ("keras", "tensorflow", "numpy", "keras_hybrid"):
        assert key in data["versions"]
    assert data["config"]["warmup_steps"] == 3
    task = data["tasks"]["tiny"]
    for key in ("settings", "per_seed", "aggregate", "ratios", "overhead"):
        assert key in task, key
    names = ["baseline", "hybrid-drift", "equal-budget-drift", "wsd-drift",
             "truncated-drift"]
    seed = task["per_seed"][0]
    assert list(seed["arms"]) == names
    for name in names:
        assert set(figures.ARM_FIGURES) <= set(seed["arms"][name]["figures"])
        assert set(figures.ARM_FIGURES) <= set(task["aggregate"][name])
        if name != "truncated-drift":
            assert seed["arms"][name]["evals"][0]["step"] == 0
    wsd = seed["arms"]["wsd-drift"]
    assert wsd["budget"] == wsd["optimizer_iterations"] == (
        seed["arms"]["hybrid-drift"]["figures"]["backward_passes"])
    assert "hybrid-drift/wsd-drift" in task["ratios"]
    assert task["settings"]["schedule"] == "constant"
    hybrid = seed["arms"]["hybrid-drift"]
    budget = seed["arms"]["equal-budget-drift"]
    assert budget["budget"] == hybrid["figures"]["backward_passes"]
    assert budget["optimizer_iterations"] == budget["budget"]
    assert budget["figures"]["backward_passes"] == budget["budget"]
    baseline = seed["arms"]["baseline"]["figures"]
    assert baseline["backward_passes"] == baseline["steps"] == 12
    assert hybrid["figures"]["steps"] == 12
    assert any(p["phase"] == "PREDICT" for p in hybrid["phases"])
    assert {"start_s", "end_s"} <= set(hybrid["phases"][0])
    assert "training_summary" in hybrid["report"]
    assert "hybrid-drift/baseline" in task["ratios"]
    assert "hybrid-drift/equal-budget-drift" in task["ratios"]
    truncated = seed["arms"]["truncated-drift"]
    assert truncated["budget"] == hybrid["figures"]["backward_passes"]
    assert truncated["figures"]["backward_passes"] == truncated["budget"]
    assert "hybrid-drift/truncated-drift" in task["ratios"]
    assert {"plain_ms", "full_ms", "predict_ms", "skip_ms", "checks",
            "step_split"} <= set(task["overhead"])
    fit_overhead = task["fit_overhead"]
    assert fit_overhead["steps"] == 6 and fit_overhead["repetitions"] == 2
    assert len(fit_overhead["plain_s"]) == len(fit_overhead["hybrid_s"]) == 2
    assert fit_overhead["ratio_of_min"] > 0
    assert task["plot"] == "tiny.png"
    assert os.path.getsize(out / "tiny.png") > 0
    rows = summary.predictor_rows(data)
    assert [(r["task"], r["predictor"], r["seeds"]) for r in rows] == [
        ("tiny", "drift", 1)]
    assert rows[0]["ratios"]["truncated"]["median"] == pytest.approx(
        hybrid["figures"]["final_val_loss"]
        / seed["arms"]["truncated-drift"]["figures"]["final_val_loss"])
    text = summary.markdown_table(data)
    assert text.splitlines()[2].startswith("| tiny | drift | 1 |")
    assert "beats all three: " in text
    assert "backward-to-target / baseline" in text


def test_run_benchmark_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run_benchmark([TinyTask()], seeds=0, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="predictors"):
        run_benchmark([TinyTask()], predictors=["nope"],
                      out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="backend"):
        run_benchmark([TinyTask()], backend="mxnet", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="missing"):
        run_benchmark([object()], out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unique"):
        run_benchmark([TinyTask(), TinyTask()], out_dir=str(tmp_path))


class TestBeats:
    def test_below_beyond_the_spread(self):
        assert summary.beats([0.9, 0.91, 0.92], [1.0, 1.01, 1.0])

    def test_gap_within_the_spread_is_no_win(self):
        assert not summary.beats([0.9, 0.99, 0.95], [1.0, 1.01, 0.92])

    def test_higher_is_no_win_and_missing_is_none(self):
        assert not summary.beats([1.1], [1.0])
        assert summary.beats([None], [1.0]) is None


def test_summary_load_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="bench.json"):
        summary.load(str(path))
    with pytest.raises(ValueError, match="Could not read"):
        summary.load(str(tmp_path / "missing.json"))


# ================================================================== CLI
def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required"),
        (["bench", "--seeds", "0"], "positive integer"),
        (["bench", "--seeds", "two"], "positive integer"),
        (["bench", "--task", "imagenet"], "unknown task"),
        (["bench", "--config", "/no/such/config.yaml"], "--config"),
        (["bench", "--backend", "mxnet"], "invalid choice"),
        (["summary", "/no/such/bench.json"], "Could not read"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    assert message in _cli_error(argv, capsys)


def test_cli_out_must_be_a_directory(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert "--out" in _cli_error(["bench", "--out", str(path)], capsys)


def test_cli_defaults():
    parser = cli.build_parser()
    quick = cli.resolve_bench_args(
        parser, parser.parse_args(["bench", "--quick"])
    )
    assert parser.parse_args(["bench"]).command_parser.prog == (
        "keras-hybrid bench"
    )
    assert (quick["tasks"], quick["seeds"], quick["quick"]) == (
        "mnist1d-mlp", 1, True)
    full = cli.resolve_bench_args(parser, parser.parse_args(["bench"]))
    assert (full["tasks"], full["seeds"], full["quick"]) == ("all", 3, False)
    custom = cli.resolve_bench_args(parser, parser.parse_args(
        ["bench", "--quick", "--seeds", "2", "--config", "aggressive",
         "--out", "x", "--backend", "tensorflow"]))
    assert custom == {"tasks": "mnist1d-mlp", "seeds": 2,
                      "config": "aggressive", "quick": True, "out_dir": "x",
                      "backend": "tensorflow", "predictors": ["drift"],
                      "overhead_repetitions": 3,
                      "schedule": "constant", "first_seed": 0,
                      "weight_average": None, "profile": False}
    assert full["predictors"] == ["drift", "linear", "mlp", "rssm",
                                  "nesterov", "holt"]
    chosen = cli.resolve_bench_args(parser, parser.parse_args(
        ["bench", "--predictors", "mlp, rssm", "--overhead-repetitions",
         "0"]))
    assert chosen["predictors"] == ["mlp", "rssm"]
    assert chosen["overhead_repetitions"] == 0
    profiled = cli.resolve_bench_args(parser, parser.parse_args(
        ["bench", "--quick", "--profile"]))
    assert profiled["profile"] is True


def test_same_seed_same_run():
    spec = {"task": TinyTask(), "arm": "baseline", "seed": 3,
            "eval_every": 3, "progress": False}
    first, second = arms.run_arm(spec), arms.run_arm(spec)
    assert [e["val_loss"] for e in first["evals"]] == [
        e["val_loss"] for e in second["evals"]
    ]


class FailingTask(TinyTask):
    def build_model(self, seed):
        raise ValueError("model construction failed on purpose")


def test_subprocess_error_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="failed on purpose"):
        run_benchmark([FailingTask()], seeds=1, out_dir=str(tmp_path),
                      progress=False, profile_calls=1)


# ========================================================= fit overhead
def test_fit_overhead_summary_pairs_repetitions():
    result = overhead.summarize([2.0, 1.0, 4.0], [3.0, 1.5, 4.0])
    assert result["ratios"] == [1.5, 1.5, 1.0]
    assert result["ratio_of_min"] == 1.5
    assert (result["ratio_min"], result["ratio_median"],
            result["ratio_max"]) == (1.0, 1.5, 1.5)
    assert "1.500 of the minima" in overhead.format_fit_overhead(
        {**result, "steps": 10, "repetitions": 3}
    )
    with pytest.raises(ValueError, match="equal length"):
        overhead.summarize([1.0], [1.0, 2.0])


def test_overhead_verdict_picks_the_bar_by_step_length():
    short = {"plain_step_ms": 1.5, "ratio_median": 1.20,
             "guard_ratio_median": 1.14}
    judged = overhead.verdict(short)
    assert judged["reference"] == "keras_guard"
    assert judged["bar"] == pytest.approx(1.19) and not judged["within"]
    assert judged["text"].startswith("over the bar on 1.5 ms steps")
    assert overhead.verdict(dict(short, ratio_median=1.18))["within"]
    # Without the Keras arm a short step has no bar.
    assert overhead.verdict({"plain_step_ms": 1.5,
                             "ratio_median": 1.2}) is None
    long = {"plain_step_ms": 30.0, "ratio_median": 1.02,
            "guard_ratio_median": 1.5}
    judged = overhead.verdict(long)
    assert judged["reference"] == "plain" and judged["bar"] == 1.02
    assert judged["within"]
    assert not overhead.verdict(dict(long, ratio_median=1.03))["within"]


def test_median_interval_is_the_binomial_order_statistics_interval():
    # n = 15: P(Binomial(15, 1/2) <= 3) = 576 / 32768, so the 4th and 12th
    # values bound the median with probability 1 - 2 * 576 / 32768.
    low, high, coverage = overhead.median_interval(
        [float(v) for v in range(15, 0, -1)])
    assert (low, high) == (4.0, 12.0)
    assert coverage == pytest.approx(1 - 2 * 576 / 32768)
    # n = 7 is too small for a narrower 90% interval: the extremes.
    assert overhead.median_interval(range(7))[:2] == (0.0, 6.0)
    with pytest.raises(ValueError, match="must not be empty"):
        overhead.median_interval([])


def test_overhead_verdict_says_whether_the_noise_resolves_it():
    spread = {"plain_step_ms": 1.5, "ratio_median": 1.20,
              "guard_ratio_median": 1.14,
              "ratios": [1.10, 1.15, 1.18, 1.20, 1.22, 1.25, 1.30]}
    judged = overhead.verdict(spread)
    assert not judged["within"] and not judged["resolved"]
    assert judged["interval"] == [1.10, 1.30]
    assert "not resolved at this noise" in judged["text"]
    tight = dict(spread, ratios=[1.195, 1.198, 1.2, 1.2, 1.2, 1.21, 1.22])
    judged = overhead.verdict(tight)
    assert judged["resolved"] and not judged["within"]
    assert "lies on one side of the bar" in judged["text"]
    under = dict(tight, ratio_median=1.10,
                 ratios=[1.05, 1.08, 1.09, 1.10, 1.11, 1.12, 1.15])
    judged = overhead.verdict(under)
    assert judged["resolved"] and judged["within"]


def test_fit_overhead_window_starts_after_every_trace():
    config = kh.HybridConfig(warmup_steps=7, full_steps=5)
    assert overhead.window_start(config) == 7 + 2 * 5 + 1


def test_fit_overhead_measures_prediction_disabled():
    result = overhead.measure_fit_overhead({
        "task": TinyTask(), "seed": 0, "config": TINY_CONFIG,
        "repetitions": 1, "steps": 4,
    })
    assert result["steps"] == 4 and result["repetitions"] == 1
    assert result["window_start"] == overhead.window_start(
        kh.HybridConfig.from_dict(TINY_CONFIG)
    )
    assert result["plain_s"][0] > 0 and result["hybrid_s"][0] > 0


def test_bad_overhead_arguments(tmp_path):
    with pytest.raises(ValueError, match="overhead_repetitions"):
        run_benchmark([TinyTask()], overhead_repetitions=-1,
                      out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="overhead_steps"):
        run_benchmark([TinyTask()], overhead_steps=0, out_dir=str(tmp_path))


def test_overhead_command_measures_each_task(tmp_path, capsys):
    from keras_hybrid.bench.overhead_run import run_overhead

    parser = cli.build_parser()
    kwargs = cli.resolve_overhead_args(parser, parser.parse_args(
        ["overhead", "--quick", "--repetitions", "2", "--steps", "5",
         "--out", str(tmp_path)]))
    assert kwargs == {"tasks": "mnist1d-mlp", "quick": True,
                      "out_dir": str(tmp_path), "backend": None,
                      "config": "default", "repetitions": 2, "steps": 5,
                      "jit_compile": "auto", "steps_per_execution": 1,
                      "keras_guard": True}
    without = cli.resolve_overhead_args(parser, parser.parse_args(
        ["overhead", "--no-keras-guard"]))
    assert without["keras_guard"] is False
    xla = cli.resolve_overhead_args(parser, parser.parse_args(
        ["overhead", "--jit-compile", "true"]))
    assert xla["jit_compile"] is True
    with pytest.raises(SystemExit):
        parser.parse_args(["overhead", "--jit-compile", "yes"])
    with pytest.raises(SystemExit):
        parser.parse_args(["overhead", "--steps-per-execution", "0"])
    result = run_overhead([TinyTask()], config=TINY_CONFIG,
                          out_dir=str(tmp_path), repetitions=1, steps=3,
                          jit_compile=True)
    data = _strict_json(tmp_path / "overhead.json")
    assert data["kind"] == "overhead" and data["jit_compile"] is True
    entry = data["tasks"]["tiny"]
    assert entry == result["tasks"]["tiny"]
    assert entry["repetitions"] == 1 and entry["steps"] == 3
    # Every arm was compiled with XLA.
    assert entry["jit_compile"] is True
    # The third arm, Keras' own finite check, was timed beside the others
    # and judged the hybrid on this short step.
    assert len(entry["guard_s"]) == 1 and entry["guard_min_s"] > 0
    assert entry["guard_ratio_median"] == pytest.approx(
        entry["guard_s"][0] / entry["plain_s"][0])
    assert entry["verdict"]["reference"] == "keras_guard"
    out = capsys.readouterr().out
    assert "[tiny]" in out and "XLA" in out
    assert "Keras' finite check (LossScaleOptimizer, scale 1)" in out
    assert "the bar on" in out
    with pytest.raises(ValueError, match="repetitions"):
        run_overhead([TinyTask()], repetitions=0, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="steps_per_execution"):
        run_overhead([TinyTask()], steps_per_execution=0,
                     out_dir=str(tmp_path))


def test_overhead_with_several_steps_per_execution(tmp_path, capsys):
    from keras_hybrid.bench.overhead_run import run_overhead

    parser = cli.build_parser()
    kwargs = cli.resolve_overhead_args(parser, parser.parse_args(
        ["overhead", "--steps-per-execution", "4"]))
    assert kwargs["steps_per_execution"] == 4
    result = run_overhead([TinyTask()], config=TINY_CONFIG,
                          out_dir=str(tmp_path), repetitions=1, steps=8,
                          steps_per_execution=4)
    entry = result["tasks"]["tiny"]
    assert result["steps_per_execution"] == 4
    assert entry["steps_per_execution"] == 4
    # The window opened at a call boundary: both arms were timed.
    assert entry["plain_min_s"] > 0 and entry["hybrid_min_s"] > 0
    assert "4 steps per execution" in capsys.readouterr().out
