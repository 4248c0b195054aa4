"""What `keras-hybrid bench` prints: verdicts, the timing note, and the arm
processes' standard error without TensorFlow's start-up lines."""

import subprocess
import sys

import pytest

from keras_hybrid.bench import child_output
from keras_hybrid.bench import verdict


def _entry(seeds):
    """A task entry with `seeds`: list of dicts arm -> figures."""
    return {"per_seed": [
        {"arms": {arm: {"figures": figures, "evals": figures.pop("evals", [])}
                  for arm, figures in seed.items()}}
        for seed in seeds
    ]}


def _seed(hybrid_ttt, base_ttt=10.0, base_wall=20.0, equal=8.0,
          truncated=8.0):
    return {
        "baseline": {"time_to_target_s": base_ttt, "wall_clock_s": base_wall},
        "hybrid-drift": {"time_to_target_s": hybrid_ttt, "wall_clock_s": 15},
        "equal-budget-drift": {"wall_clock_s": equal},
        "truncated-drift": {"wall_clock_s": truncated},
    }


def test_verdict_sooner_later_and_not_reached():
    sooner = _entry([_seed(7.0), _seed(8.0), _seed(11.0)])
    assert verdict.verdict(sooner, "hybrid-drift") == (
        "hybrid-drift reached the target 20% sooner than the baseline "
        "(median of 3 seeds; sooner in 2 of 3)."
    )
    later = _entry([_seed(12.5)])
    assert verdict.verdict(later, "hybrid-drift") == (
        "hybrid-drift reached the target 25% later than the baseline "
        "(1 seed)."
    )
    partly = _entry([_seed(9.0), _seed(None)])
    assert verdict.verdict(partly, "hybrid-drift").endswith(
        "; it did not reach it in 1 of 2 seeds."
    )
    never = _entry([_seed(None), _seed(None)])
    assert verdict.verdict(never, "hybrid-drift") == (
        "hybrid-drift did not reach the target (the baseline's final "
        "validation loss x 1.01) in any of 2 seeds."
    )


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
