"""Saving and restoring a `HybridRunner` (for checkpoints).

`runner_state(runner)` returns `(json_state, arrays)`: every small Python
value as JSON-safe data and every tensor as numpy arrays, named. Restoring
them into a fresh runner built for the same model and config continues
training exactly where the saved runner was.

Each of the runner's objects saves its own state (`get_state`, and
`get_arrays` for tensors), in a section of its own. Checkpoints of the
first layout, where the runner's section held those objects' fields, are
mapped to this one when they load (`_from_first_layout`).
"""

import numpy as np

from keras_hybrid.serialization import decode
from keras_hybrid.serialization import object_state
from keras_hybrid.serialization import set_object_state
from keras_hybrid.serialization import to_numpy as _numpy
from keras_hybrid.serialization import to_tensors as _tensors

CONTROLLER = ("phase", "phase_step", "phase_length", "step",
              "consecutive_predicts", "consecutive_failures", "cooldown",
              "forced_full_steps", "horizon_scale", "history")
TRAINING_STATE = ("losses", "grad_norms", "step")
MOMENTS = ("decay", "mean", "var", "count")
MONITOR = ("loss_mean", "loss_var", "grad_baseline", "losses", "rollbacks",
           "steps_seen", "warnings_in_a_row", "settle_steps", "above_limit")
STATISTICS = ("steps", "backward", "forward", "corrections", "quiet_phases",
              "predictions_attempted", "predictions_accepted",
              "predictions_rejected", "events", "jumps", "confidences",
              "weight_cosines", "loss_pairs", "shadow", "step_times",
              "overhead")
TRAJECTORY = ("count", "first_count", "second_count", "_consistency")
TRAJECTORY_TENSORS = ("first_mean", "second_mean", "drift", "previous_drift")
# The layout of `runner_state`'s JSON (absent from the first layout's).
LAYOUT = 2


class UnsafeCheckpointError(RuntimeError):
    """Raised when the runner is in the middle of a jump's forward checks,
    where holding batches makes the state impossible to save exactly."""


def runner_state(runner):
    """Returns `(json_state, arrays)` of a runner at a step boundary."""
    if runner.holds_check_batches:
        raise UnsafeCheckpointError(
            "Cannot checkpoint during the forward checks of a predicted "
            "jump or while it holds its checked batches "
            f"for training (`train_check_batches`; step "
            f"{runner.controller.step}); a later step boundary is safe."
        )
    json_state = {
        "layout": LAYOUT,
        "controller": object_state(runner.controller, CONTROLLER),
        "training_state": object_state(runner.state, TRAINING_STATE),
        "full_loss": object_state(runner.state.full_loss, MOMENTS),
        "grad_norm": object_state(runner.state.grad_norm, MOMENTS),
        "monitor": object_state(runner.monitor, MONITOR),
        "statistics": object_state(runner.stats, STATISTICS),
        "runner": runner.get_state(),
        "recovery": runner.recovery.get_state(),
        "jump_check": runner.jump_check.get_state(),
        "quiet": runner.quiet.get_state(),
        "shadow": runner.shadow.get_state(),
        "outer_guard": runner.outer_guard.get_state(),
        "elapsed_s": runner.wall_time,
        # Statistics not read yet (see `HybridRunner.settle`).
        "pending_statistics": runner.step_stats.get_state(),
        "set_up": runner.functions is not None,
        "freezer": (
            None if runner.freezer is None else runner.freezer.get_state()
        ),
        "settle_check": (
            None if runner.settle_check is None
            else runner.settle_check.get_state()
        ),
    }
    arrays = {}
    if runner.settle_check is not None:
        arrays["settle_check"] = runner.settle_check.get_arrays()
    if runner.functions is not None:
        tr = runner.trajectory
        json_state["trajectory"] = object_state(tr, TRAJECTORY)
        json_state["predictor"] = runner.predictor.get_state()
        json_state["control"] = runner.control.get_state()
        arrays["predictor"] = list(runner.predictor.get_arrays())
        arrays.update(runner.shadow.get_arrays())
        arrays["accumulators"] = _numpy(tr.accumulators)
        for name in TRAJECTORY_TENSORS:
            arrays[name] = _numpy(getattr(tr, name))
        arrays["deltas"] = _numpy(runner.deltas)
        arrays.update(runner.jump_check.get_arrays())
        arrays.update(runner.recovery.get_arrays())
    return json_state, arrays


# Fields added after checkpoints were first written, with the value that
# reproduces the older behaviour (a checkpoint of an earlier version loads).
ADDED = {
    "statistics": {"quiet_phases": 0},
    "monitor": {"settle_steps": 0, "above_limit": False},
}


def _from_first_layout(json_state):
    """A checkpoint's JSON in the first layout (the runner's section holding
    the fields of the rollback point, the per-step loss limit, the quiet
    back-off and shadow scoring; the pending shadow prediction apart) in
    this one."""
    old = json_state["runner"]
    json_state["recovery"] = {"good_step": decode(old["_good_step"]),
                              "alarm": decode(old["_phase_alarm"])}
    json_state["jump_check"] = {"loss_limit": old["_loss_limit"]}
    # The quiet back-off came later than the first checkpoints: without
    # its counters, none.
    json_state["quiet"] = {name: decode(old.get(f"_{name}", 0))
                           for name in ("quiet_left", "misses", "window")}
    json_state["shadow"] = {
        "contiguous": decode(old["_shadow_contiguous"]),
        "pending": json_state.get("shadow"),
    }
    json_state["layout"] = LAYOUT
    return json_state


def set_runner_state(runner, json_state, arrays):
    """Restores `runner_state` output into a freshly built runner."""
    if "layout" not in json_state:
        json_state = _from_first_layout(json_state)
    for section, defaults in ADDED.items():
        json_state[section] = {**defaults, **json_state[section]}
    set_object_state(runner.controller, json_state["controller"], CONTROLLER)
    set_object_state(runner.state, json_state["training_state"],
                     TRAINING_STATE)
    set_object_state(runner.state.full_loss, json_state["full_loss"], MOMENTS)
    set_object_state(runner.state.grad_norm, json_state["grad_norm"], MOMENTS)
    set_object_state(runner.monitor, json_state["monitor"], MONITOR)
    set_object_state(runner.stats, json_state["statistics"], STATISTICS)
    runner.set_state(json_state["runner"])
    runner.recovery.set_state(json_state["recovery"])
    runner.quiet.set_state(json_state["quiet"])
    runner.jump_check.set_state(json_state["jump_check"], arrays)
    runner.shadow.set_state(json_state["shadow"], arrays)
    if "outer_guard" in json_state:  # (absent from older checkpoints)
        runner.outer_guard.set_state(json_state["outer_guard"])
    runner.elapsed_before = float(json_state["elapsed_s"])
    runner.step_stats.set_state(json_state.get("pending_statistics", []))
    freezer = json_state.get("freezer")
    if freezer is not None and runner.freezer is not None:
        runner.freezer.set_state(freezer)
    check = json_state.get("settle_check")
    if check is not None and runner.settle_check is not None:
        runner.settle_check.set_state(check, arrays.get("settle_check", []))
    if not json_state["set_up"]:
        return
    if runner.functions is None:
        runner._setup()
    else:
        runner.use_live_functions()  # the restored frozen depth's
    tr = runner.trajectory
    set_object_state(tr, json_state["trajectory"], TRAJECTORY)
    runner.predictor.set_state(json_state["predictor"])
    runner.predictor.set_arrays(arrays.get("predictor") or [])
    runner.control.set_state(json_state["control"])
    _assign(tr.accumulators, arrays["accumulators"])
    for name in TRAJECTORY_TENSORS:
        setattr(tr, name, _tensors(arrays[name]))
    _assign(runner.deltas, arrays["deltas"])
    if arrays["good_values"] is not None:
        runner.recovery.set_arrays(arrays)
        # (A good point of its own, taken by `_setup`, moved the step.)
        runner.recovery.set_state(json_state["recovery"])


def _assign(variables, values):
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"Checkpoint tensor for {variable.path} has shape "
                f"{np.shape(value)}, the model's has {tuple(variable.shape)}."
            )
        variable.assign(value)
