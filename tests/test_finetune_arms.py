"""Fine-tuning arms through the hybrid callback (quick sizes): LP-FT in
one fit() and the `finetune` preset, with the references' recipe, data
order and FLOP-based backward accounting."""

import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.bench import finetune
from keras_hybrid.bench import finetune_arms
from keras_hybrid.bench import freeze_runs


@pytest.fixture(scope="module")
def task(pretrained_cache):
    return finetune.get_finetune_task("ft-topics", quick=True,
                                      cache_dir=pretrained_cache,
                                      progress=False)


def test_lp_ft_in_one_fit_matches_its_accounting(task):
    groups = finetune_arms.groups_of(task.build_model(0))
    budget = freeze_runs.budget_steps(task)
    head_steps = budget // 3
    schedule = kh.FreezeSchedule.head_first(steps=head_steps, groups=groups)
    result = finetune_arms.run_hybrid(task, 0, 1e-3, "plain",
                                      freeze=schedule)
    assert result["optimizer_iterations"] == budget
    assert [e["step"] for e in result["freeze_events"]] == [0, head_steps]
    assert [e["frozen_groups"] for e in result["freeze_events"]] == [
        len(groups) - 1, 0]
    # The head alone costs almost nothing: about 2/3 of full work.
    assert 0.6 < result["backward_share"] < 0.7
    assert result["backward_passes"] == budget
    assert np.isfinite(result["val_loss"]) and np.isfinite(result["test_loss"])


def test_plain_arm_equals_the_plain_keras_reference(task):
    """With nothing frozen, the callback's arm is the reference run: same
    recipe, data order and evaluation."""
    hybrid = finetune_arms.run_hybrid(task, 0, 1e-3, "plain")
    plain = freeze_runs.run_finetune(task, 0, 1e-3)
    assert hybrid["backward_share"] == 1.0
    np.testing.assert_allclose(hybrid["val_loss"], plain["val_loss"],
                               rtol=1e-4)


def test_timing_arms_run(task):
    timing = finetune_arms.time_frozen_steps(task, depth=3, steps=2,
                                             repetitions=1)
    assert len(timing["ratios"]) == 1
    assert all(r > 0 for r in timing["ratios"])


def test_extrapolation_picks_alpha_on_validation(task):
    result = finetune_arms.run_extrapolation(task, 0, 1e-3, fraction=0.5,
                                             alphas=(1.0, 2.0))
    losses = result["alpha_val_losses"]
    assert result["alpha"] == float(min(losses, key=losses.get))
    assert result["val_loss"] == pytest.approx(min(losses.values()),
                                               rel=1e-5)
    assert result["backward_share"] == pytest.approx(
        result["trained_steps"] / result["steps"])
