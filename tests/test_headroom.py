"""Tests of `keras-hybrid headroom` (tiny sizes, no timing assertions)."""

import json

import pytest

from keras_hybrid import cli
from keras_hybrid.bench import headroom
from keras_hybrid.bench.headroom import run_headroom
from tests.helpers import TinyTask


# ============================================================ arguments
def test_fractions_are_sorted_and_deduplicated():
    assert headroom.check_fractions([0.9, 0.5, 0.9]) == (0.5, 0.9)
    assert headroom.check_fractions(0.25) == (0.25,)


@pytest.mark.parametrize(
    "fractions", [[], [0.0], [1.0], [-0.5], [1.5], [True], ["0.5"], None]
)
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        headroom.check_fractions(fractions)


def test_budget_of_rounds_and_keeps_at_least_one_step():
    assert headroom.budget_of(0.5, 12) == 6
    assert headroom.budget_of(0.75, 10) == 8
    assert headroom.budget_of(0.01, 10) == 1


def test_speed_bound_weighs_full_and_skipped_steps():
    profile = {"plain_ms": 10.0, "full_ms": 11.0, "predict_ms": 4.0,
               "skip_ms": 0.5}
    bound = headroom.speed_bound(profile, 0.5)
    assert bound["per_step"] == pytest.approx((5.5 + 2.0) / 10.0)
    assert bound["jump"] == pytest.approx((5.5 + 0.25) / 10.0)
    assert headroom.speed_bound({"plain_ms": 10.0, "full_ms": 11.0},
                                0.5) == {"per_step": None, "jump": None}


# =============================================================== rows
def _seed(perfect, equal, truncated):
    return {
        "perfect": {"final_val_loss": perfect},
        "fractions": {"0.5": {
            "budget": 6,
            "equal-budget": {"final_val_loss": equal},
            "truncated": {"final_val_loss": truncated},
            "ratios": {"equal-budget": perfect / equal,
                       "truncated": perfect / truncated},
        }},
    }


def test_rows_say_where_a_perfect_predictor_wins():
    # The baseline ends well below the truncated read-out on every seed
    # (beyond the spread) but only just below the equal-budget arm.
    per_seed = [_seed(1.00, 1.02, 1.50), _seed(1.10, 1.05, 1.60),
                _seed(1.05, 1.08, 1.55)]
    profile = {"plain_ms": 10.0, "full_ms": 10.0, "predict_ms": 4.0,
               "skip_ms": 0.0}
    (row,) = headroom.headroom_rows(per_seed, {"0.5": 6}, profile)
    assert (row["fraction"], row["budget"], row["skipped"]) == (0.5, 6, 0.5)
    assert row["speed_bound"] == {"per_step": pytest.approx(0.7),
                                  "jump": pytest.approx(0.5)}
    assert row["perfect"]["median"] == pytest.approx(1.05)
    assert row["truncated"]["beats"] is True
    assert row["equal-budget"]["beats"] is False
    assert row["equal-budget"]["final_val_loss"]["median"] == pytest.approx(
        1.05)
    assert row["truncated"]["ratio"]["min"] == pytest.approx(1.0 / 1.5)
    text = headroom.markdown_table({"tasks": {"t": {"rows": [row]}}})
    assert text.splitlines()[2].startswith("| t | 50% | 50% | 6 | 1.0500 ")
    assert text.splitlines()[2].endswith("| no / yes | 0.70 / 0.50 |")


# ========================================================== end to end
def test_run_headroom_runs_the_references_at_each_budget(tmp_path):
    task = TinyTask(n=64, epochs=3)  # 4 steps per epoch, 12 in all
    result = run_headroom([task], seeds=1, fractions=[0.5],
                          out_dir=str(tmp_path), progress=False,
                          profile_calls=2)
    with open(tmp_path / "headroom.json", encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(result))
    assert result["fractions"] == [0.5]
    entry = result["tasks"]["tiny"]
    assert entry["budgets"] == {"0.5": 6}
    seed = entry["per_seed"][0]
    perfect = seed["perfect"]
    assert perfect["backward_passes"] == perfect["steps"] == 12
    half = seed["fractions"]["0.5"]
    assert half["budget"] == 6
    assert half["equal-budget"]["backward_passes"] == 6
    assert half["truncated"]["backward_passes"] == 6
    assert half["ratios"]["equal-budget"] == pytest.approx(
        perfect["final_val_loss"] / half["equal-budget"]["final_val_loss"])
    assert half["ratios"]["truncated"] == pytest.approx(
        perfect["final_val_loss"] / half["truncated"]["final_val_loss"])
    # The wsd reference: peak rate held, cooled down over the same budget.
    assert half["wsd"]["backward_passes"] == 6
    assert half["ratios"]["wsd"] == pytest.approx(
        perfect["final_val_loss"] / half["wsd"]["final_val_loss"])
    # Plain training for 6 of the 12 steps on the baseline's schedule is a
    # different point of the same run.
    assert half["truncated"]["final_val_loss"] != perfect["final_val_loss"]
    (row,) = entry["rows"]
    assert row["equal-budget"]["beats"] in (True, False)
    assert {"plain_ms", "full_ms", "predict_ms", "skip_ms"} <= set(
        entry["profile"])
    assert row["speed_bound"] == headroom.speed_bound(entry["profile"], 0.5)
    assert row["wsd"]["beats"] in (True, False)
    assert "perfect beats equal-budget / truncated / wsd beyond spread" in (
        headroom.markdown_table(result))


def test_rows_and_table_of_a_file_without_wsd_keep_two_references():
    # headroom.json files written before the wsd arms have no wsd figures.
    per_seed = [_seed(1.00, 1.02, 1.50), _seed(1.10, 1.05, 1.60)]
    (row,) = headroom.headroom_rows(per_seed, {"0.5": 6})
    assert "wsd" not in row
    text = headroom.markdown_table({"tasks": {"t": {"rows": [row]}}})
    assert "equal-budget / truncated beyond spread" in text
    assert "wsd" not in text
    assert len(text.splitlines()[1].split("|")) == 13  # 11 columns


def test_rows_compare_with_wsd_where_the_seeds_have_it():
    per_seed = [_seed(1.00, 1.02, 1.50), _seed(1.10, 1.05, 1.60),
                _seed(1.05, 1.08, 1.55)]
    for seed, wsd in zip(per_seed, (1.40, 1.45, 1.50)):
        half = seed["fractions"]["0.5"]
        half["wsd"] = {"final_val_loss": wsd}
        half["ratios"]["wsd"] = seed["perfect"]["final_val_loss"] / wsd
    (row,) = headroom.headroom_rows(per_seed, {"0.5": 6})
    assert row["wsd"]["beats"] is True
    assert row["wsd"]["final_val_loss"]["median"] == pytest.approx(1.45)
    text = headroom.markdown_table({"tasks": {"t": {"rows": [row]}}})
    assert text.splitlines()[2].endswith("| no / yes / yes | n/a |")
    assert len(text.splitlines()[1].split("|")) == 15  # 13 columns


def test_run_headroom_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="fractions"):
        run_headroom([TinyTask()], fractions=[1.0], out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="seeds"):
        run_headroom([TinyTask()], seeds=0, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="backend"):
        run_headroom([TinyTask()], backend="mxnet", out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="profile_calls"):
        run_headroom([TinyTask()], profile_calls=0, out_dir=str(tmp_path))


# ================================================================== CLI
@pytest.mark.parametrize(
    "argv, message",
    [
        (["headroom", "--fractions", "0.5,1"], "--fractions"),
        (["headroom", "--fractions", "half"], "--fractions"),
        (["headroom", "--task", "imagenet"], "unknown task"),
        (["headroom", "--seeds", "0"], "positive integer"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_defaults():
    parser = cli.build_parser()
    full = cli.resolve_headroom_args(
        parser, parser.parse_args(["headroom"]))
    assert full == {"tasks": "all", "seeds": 3, "quick": False,
                    "out_dir": "headroom_out", "backend": None,
                    "fractions": [0.5, 0.75, 0.9], "schedule": "constant"}
    quick = cli.resolve_headroom_args(parser, parser.parse_args(
        ["headroom", "--quick", "--fractions", "0.8,0.4"]))
    assert (quick["tasks"], quick["seeds"], quick["fractions"]) == (
        "mnist1d-mlp", 1, [0.4, 0.8])


def test_summary_prints_a_headroom_table(tmp_path, capsys):
    row = headroom.headroom_rows(
        [_seed(1.00, 1.02, 1.50), _seed(1.10, 1.05, 1.60)], {"0.5": 6})
    path = tmp_path / "headroom.json"
    path.write_text(json.dumps({"kind": "headroom",
                                "tasks": {"t": {"rows": row}}}))
    assert cli.main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| task | backward run |")
    assert out.splitlines()[2].startswith("| t | 50% | 50% | 6 |")
