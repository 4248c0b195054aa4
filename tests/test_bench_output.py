"""What `keras-hybrid bench` prints: verdicts, the timing note, the step-time
checks (with --profile), the PNG, and the arm processes' standard error
without TensorFlow's start-up lines."""

import subprocess
import sys

import pytest

from keras_hybrid.bench import child_output
from keras_hybrid.bench import figures as bench_figures
from keras_hybrid.bench import table
from keras_hybrid.bench import verdict


def _entry(seeds, first_seed=0):
    """A task entry with `seeds`: list of dicts arm -> figures (an arm's
    `evals` and `report` go next to its figures)."""
    return {"per_seed": [
        {"seed": first_seed + index,
         "arms": {arm: {"figures": figures,
                        "evals": figures.pop("evals", []),
                        "report": figures.pop("report", None)}
                  for arm, figures in seed.items()}}
        for index, seed in enumerate(seeds)
    ]}


def _seed(hybrid_ttt, base_ttt=10.0, base_wall=20.0, equal=8.0,
          truncated=8.0):
    return {
        "baseline": {"time_to_target_s": base_ttt, "wall_clock_s": base_wall},
        "hybrid-drift": {"time_to_target_s": hybrid_ttt, "wall_clock_s": 15},
        "equal-budget-drift": {"wall_clock_s": equal},
        "truncated-drift": {"wall_clock_s": truncated},
    }


def test_time_to_target_sooner_later_and_not_reached():
    target = "the target (the baseline's final validation loss x 1.01)"
    sooner = _entry([_seed(7.0), _seed(8.0), _seed(11.0)])
    assert verdict.time_to_target_clause(sooner, "hybrid-drift") == (
        f"reached {target} 20% sooner than the baseline (sooner in 2 of 3 "
        "seeds)"
    )
    later = _entry([_seed(12.5)])
    assert verdict.time_to_target_clause(later, "hybrid-drift") == (
        f"reached {target} 25% later than the baseline"
    )
    partly = _entry([_seed(9.0), _seed(None)])
    assert verdict.time_to_target_clause(partly, "hybrid-drift").endswith(
        "; it did not reach it in 1 of 2 seeds"
    )
    never = _entry([_seed(None), _seed(None)])
    assert verdict.time_to_target_clause(never, "hybrid-drift") == (
        f"did not reach {target} in any of 2 seeds"
    )


def _arms(hybrid_loss, steps=800, backward=800, accepted=0, attempted=1,
          baseline=0.806, equal=0.927, truncated=0.806, wsd=0.784):
    """One seed's arms as `bench.json` has them, for the verdict."""
    def arm(loss, wall, ttt, arm_backward=steps):
        return {"final_val_loss": loss, "wall_clock_s": wall,
                "time_to_target_s": ttt, "backward_passes": arm_backward,
                "steps": arm_backward}

    hybrid = arm(hybrid_loss, 4.4, 4.3, backward)
    hybrid["steps"] = steps
    hybrid["report"] = {"training_summary": {
        "predictions_accepted": accepted, "predictions_attempted": attempted}}
    return {
        "baseline": arm(baseline, 3.4, 3.3, steps),
        "hybrid-drift": hybrid,
        "equal-budget-drift": arm(equal, 3.9, None, backward),
        "truncated-drift": arm(truncated, 3.4, 3.3, backward),
        "wsd-drift": arm(wsd, 3.8, 3.3, backward),
    }


def test_verdict_when_nothing_was_skipped():
    entry = _entry([_arms(0.806)])
    entry["plot"] = "mnist1d-mlp.png"
    assert verdict.lines(entry, out_dir="out") == [
        "verdict for hybrid-drift (seed 0):",
        "  backward passes skipped: 0.0% (0 of 800 steps; 0 of 1 "
        "predictions accepted)",
        "  beat the best plain reference? no: final validation loss 0.8060, "
        "2.8% above wsd-drift (0.7840)",
        "    final validation loss of each: baseline 0.8060 (hybrid +0.0%), "
        "equal-budget-drift 0.9270 (hybrid -13.1%), truncated-drift 0.8060 "
        "(hybrid +0.0%), wsd-drift 0.7840 (hybrid +2.8%)",
        "  cost per step: 5.50 ms against 4.25 ms for plain fit() (1.29x); "
        "at equal wall-clock: n/a (no validation points)",
        "  wall-clock: 4.4 s of training against 3.4 s for plain fit() (the "
        "baseline), 1.29x; it reached the target (the baseline's final "
        "validation loss x 1.01) 30% later than the baseline",
        "  nothing was skipped: no prediction was accepted, so every batch "
        "got its backward pass, as in plain fit(). Try --config aggressive, "
        "or a task whose loss is still falling (--task stdlib-lm; see the "
        "README, 'Will it help?').",
        "  next: out/mnist1d-mlp.png plots each arm's validation loss "
        "against wall-clock (seed 0); the tables above compare the arms "
        "figure by figure; --profile adds the step-time checks.",
    ]
    assert verdict.lines(entry, profile=True)[-1] == (
        "  next: mnist1d-mlp.png plots each arm's validation loss against "
        "wall-clock (seed 0); the tables above compare the arms figure by "
        "figure.")


def test_verdict_beats_the_best_reference_beyond_the_seed_spread():
    seeds = [_arms(loss, backward=640, accepted=4, attempted=5)
             for loss in (0.70, 0.71, 0.72)]
    lines = verdict.lines(_entry(seeds, first_seed=3))
    assert lines[0] == "verdict for hybrid-drift (median of seeds 3-5):"
    assert lines[1] == (
        "  backward passes skipped: 20.0% [20.0-20.0%] (median of seeds 3-5; "
        "12 of 15 predictions accepted)")
    assert lines[2] == (
        "  beat the best plain reference? yes: final validation loss 0.7100, "
        "9.4% below wsd-drift (0.7840)")
    assert not any(line.startswith("  nothing was skipped") for line in lines)
    # Below the best reference, but within the spread over seeds.
    close = [_arms(loss, backward=640, accepted=1) for loss in (0.70, 0.80)]
    assert verdict.lines(_entry(close))[2] == (
        "  beat the best plain reference? no: final validation loss 0.7500, "
        "4.3% below wsd-drift (0.7840), within the spread over seeds")


def _evals(times, losses):
    return [{"step": 100 * i, "time_s": t, "val_loss": loss}
            for i, (t, loss) in enumerate(zip(times, losses))]


def test_cost_per_step_next_to_the_gain_at_equal_wall_clock():
    # outer-like: every step trains, each costs 29% more, and it ends 5%
    # lower; after the baseline's 3.4 s it was at 0.8300 against 0.8060.
    def slower():
        arms = _arms(0.766, accepted=14, attempted=14)
        arms["hybrid-drift"]["evals"] = _evals([0.0, 1.5, 3.0, 4.4],
                                               [2.3, 1.0, 0.83, 0.766])
        arms["baseline"]["evals"] = _evals([0.0, 1.2, 2.3, 3.4],
                                           [2.3, 1.0, 0.85, 0.806])
        return arms

    lines = verdict.lines(_entry([slower()]))
    assert lines[4] == (
        "  cost per step: 5.50 ms against 4.25 ms for plain fit() (1.29x); "
        "at equal wall-clock (3.4 s of training, the shorter run) its "
        "validation loss was 3.0% above the baseline's (0.8300 against "
        "0.8060; the last validation of each by then)")
    assert lines[5].startswith("  wall-clock: 4.4 s of training")
    # Over seeds: the median with the spread, and each seed's gain.
    faster = _arms(0.80)
    faster["hybrid-drift"].update(wall_clock_s=3.0, evals=_evals(
        [0.0, 3.0], [2.3, 0.80]))
    faster["baseline"]["evals"] = _evals([0.0, 2.9, 3.4], [2.3, 0.84, 0.806])
    line = verdict.cost_line(_entry([slower(), faster]), "hybrid-drift")
    assert line == (
        "cost per step: 4.62 ms against 4.25 ms for plain fit() (1.09x "
        "[0.88-1.29]); at equal wall-clock (3.2 s of training, the shorter "
        "run) its validation loss was 0.9% below the baseline's (+3.0%, "
        "-4.8% per seed)")


def _overhead():
    return bench_figures.overhead_figures(
        "mnist1d-mlp",
        {"plain_ms": 2.1, "full_ms": 2.5, "predict_ms": 1.1, "skip_ms": 0.2,
         "seed": 0, "calls": 30, "warmup": 5},
        {"drift": {"pct": {"median": 13.2}, "memory_mb": {"median": 1.5}}},
    )


def test_step_time_checks_only_with_profile():
    quiet = "\n".join(table.format_overhead("mnist1d-mlp", _overhead(),
                                            profile=False))
    for text in ("MISS", "target <=", "hybrid FULL step (with trajectory "
                 "sums) / plain", "jump skip step", "predictor overhead"):
        assert text not in quiet
    assert "plain Keras train step: 2.100 ms" in quiet
    assert "per-step split" in quiet
    profiled = "\n".join(table.format_overhead("mnist1d-mlp", _overhead(),
                                               profile=True))
    assert profiled.count("MISS") == 3
    assert "(e) predictor overhead drift, % of step time" in profiled


def test_timing_note_only_beyond_the_runs_own_noise():
    # Baseline wall-clock spread over seeds: (21 - 19) / 20 = 10%.
    quiet = _entry([_seed(9.0, base_wall=19.0, equal=8.4, truncated=8.0),
                    _seed(9.0, base_wall=21.0, equal=8.4, truncated=8.0)])
    assert verdict.timing_note(quiet) is None  # 5% < 10%
    noisy = _entry([_seed(9.0, base_wall=19.0, equal=10.0, truncated=8.0),
                    _seed(9.0, base_wall=21.0, equal=10.0, truncated=8.0)])
    note = verdict.timing_note(noisy)
    assert note.startswith("note: equal-budget-drift and truncated-drift "
                           "train the same steps")
    assert "differs by 25%" in note and "(10%, baseline wall-clock" in note
    assert verdict.lines(noisy)[-1] == note


def test_one_seed_noise_comes_from_the_baselines_step_times():
    evals = [{"step": s, "time_s": t} for s, t in
             [(0, 0.0), (10, 5.0), (20, 6.0), (30, 7.1), (40, 8.0)]]
    seed = _seed(9.0)
    seed["baseline"]["evals"] = evals
    noise, how = verdict.run_noise(_entry([seed]))
    # Per-step times after the first interval: 0.1, 0.11, 0.09.
    assert noise == pytest.approx((0.11 - 0.09) / 0.1)
    assert "time per step" in how


@pytest.mark.parametrize("line,startup", [
    ("WARNING: All log messages before absl::InitializeLog() is called are "
     "written to STDERR", True),
    ("I0000 00:00:1795910868.828029   17740 port.cc:153] oneDNN custom "
     "operations are on. You may see slightly different numerical results",
     True),
    ("E0000 00:00:1795912033.755081    5926 cuda_platform.cc:52] failed call "
     "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR "
     "(303)", True),
    ("Traceback (most recent call last):", False),
    ("UserWarning: something the user should see", False),
])
def test_startup_lines(line, startup):
    assert child_output.is_startup_line(line) is startup


def test_children_stderr_is_filtered(capfd):
    code = (
        "import sys; "
        "sys.stderr.write('WARNING: All log messages before "
        "absl::InitializeLog() is called are written to STDERR\\n'); "
        "sys.stderr.write('I0000 port.cc:153] oneDNN custom operations are "
        "on.\\n'); "
        "sys.stderr.write('a real warning\\n'); sys.stderr.write('last')"
    )
    with child_output.filtered_stderr_for_children() as forwarder:
        child = subprocess.Popen([sys.executable, "-c", code])
    child.wait()
    forwarder.thread.join(timeout=30)
    assert not forwarder.thread.is_alive()
    sys.stderr.write("parent after\n")
    err = capfd.readouterr().err
    assert err == "a real warning\nlastparent after\n"


def _plot_seed(backward):
    phases = [
        {"phase": "FULL", "start_s": 0.0, "end_s": 1.0, "outcome": "completed"},
        {"phase": "PREDICT", "start_s": 1.0, "end_s": 1.5,
         "outcome": "rejected:forward_check"},
        {"phase": "PREDICT", "start_s": 2.0, "end_s": 2.5,
         "outcome": "completed"},
    ]
    evals = [{"time_s": 0.0, "val_loss": 1.0}, {"time_s": 3.0, "val_loss": 0.8}]
    return {"seed": 3, "arms": {
        "baseline": {"evals": evals,
                     "figures": {"backward_passes": 100, "steps": 100}},
        "hybrid-drift": {"evals": evals, "phases": phases,
                         "figures": {"backward_passes": backward,
                                     "steps": 100}},
    }}


def test_png_shades_only_skipped_steps_and_names_the_seed():
    pytest.importorskip("matplotlib")
    from keras_hybrid.bench import plot

    def drawn(backward):
        axes = plot.task_figure("tiny", _plot_seed(backward)).axes[0]
        labels = [t.get_text() for t in axes.get_legend().get_texts()]
        return axes, labels

    axes, labels = drawn(backward=100)  # nothing skipped: nothing shaded
    assert axes.get_title() == "tiny, seed 3"
    assert not any("PREDICT" in label for label in labels)
    assert not axes.patches
    axes, labels = drawn(backward=95)
    assert "hybrid-drift PREDICT phases" in labels
    assert len(axes.patches) == 1  # the accepted phase, not the rejected one
