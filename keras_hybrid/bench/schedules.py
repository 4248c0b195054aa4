"""Learning-rate schedules of the benchmark arms.

Every task trains with one of two recipes (`--schedule`):

- `"constant"`: linear warmup over the task's `warmup_steps` (0 for most
  tasks), then the task's peak learning rate.
- `"cosine"`: the same warmup, then a cosine decay to 0 at the last step.

The same-budget references of a hybrid arm run `budget` steps:

- `equal-budget`: the recipe compressed to `budget` steps (warmup kept, the
  decay ending at `budget`; under `"constant"`, which has no decay to
  compress, a linear decay to 0 over the budget);
- `wsd`: warmup, the peak held, then a linear cooldown to 0 over the last
  `WSD_COOLDOWN_FRACTION` of the budget ("warmup-stable-decay").

Example:

```python
lr = recipe_learning_rate(task, "cosine", total_steps=800)
model.compile(optimizer=task.make_optimizer(lr), ...)
```
"""

import math

import keras
from keras import ops

from keras_hybrid.validators import check_int

SCHEDULES = ("constant", "cosine")
WSD_COOLDOWN_FRACTION = 0.2
DECAYS = ("constant", "cosine", "linear", "wsd")


@keras.saving.register_keras_serializable(package="keras_hybrid")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then a constant, cosine, linear or WSD profile.

    Step `s` (0-based) of `total_steps` gets:

    - during warmup (`s < warmup_steps`): `peak * (s + 1) / warmup_steps`;
    - then, with `p = (s - warmup_steps) / (total_steps - warmup_steps)`:
      `"constant"`: `peak`; `"cosine"`: `peak * (1 + cos(pi * p)) / 2`;
      `"linear"`: `peak * (1 - p)`; `"wsd"`: `peak` until the last
      `cooldown_steps`, then `peak * (total_steps - s) / cooldown_steps`.

    Steps past `total_steps` keep the value at `total_steps` (0 for every
    decaying profile).

    Args:
        peak: the peak learning rate (> 0).
        total_steps: the steps the schedule spans (>= 1).
        warmup_steps: steps of linear warmup (>= 0, < `total_steps`).
        decay: one of `"constant"`, `"cosine"`, `"linear"`, `"wsd"`.
        cooldown_steps: the WSD cooldown length (1 .. `total_steps -
            warmup_steps`; only for `"wsd"`).

    Example:

    ```python
    schedule = WarmupDecay(3e-3, total_steps=1000, warmup_steps=50,
                           decay="cosine")
    optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    ```
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine",
                 cooldown_steps=0):
        if isinstance(peak, bool) or not isinstance(peak, (int, float)) or (
            not peak > 0
        ):
            raise ValueError(f"`peak` must be > 0. Received: peak={peak!r}")
        check_int("total_steps", total_steps, 1)
        check_int("warmup_steps", warmup_steps, 0)
        if warmup_steps >= total_steps:
            raise ValueError(
                "`warmup_steps` must be < `total_steps`. Received: "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        if decay not in DECAYS:
            raise ValueError(
                f"`decay` must be one of {DECAYS}. Received: decay={decay!r}"
            )
        check_int("cooldown_steps", cooldown_steps, 0)
        if decay == "wsd" and not (
            1 <= cooldown_steps <= total_steps - warmup_steps
        ):
            raise ValueError(
                "`cooldown_steps` must be in [1, total_steps - warmup_steps] "
                f"for decay='wsd'. Received: cooldown_steps={cooldown_steps}"
                f", total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.cooldown_steps = int(cooldown_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak
        total = float(self.total_steps)
        warmup = float(self.warmup_steps)
        progress = ops.clip(
            ops.divide(ops.subtract(step, warmup), total - warmup), 0.0, 1.0
        )
        if self.decay == "constant":
            value = ops.multiply(ops.ones_like(step), peak)
        elif self.decay == "cosine":
            value = ops.multiply(
                0.5 * peak, ops.add(1.0, ops.cos(ops.multiply(math.pi,
                                                              progress)))
            )
        elif self.decay == "linear":
            value = ops.multiply(peak, ops.subtract(1.0, progress))
        else:
            left = ops.divide(ops.subtract(total, step),
                              float(self.cooldown_steps))
            value = ops.multiply(peak, ops.clip(left, 0.0, 1.0))
        if self.warmup_steps:
            warm = ops.multiply(peak, ops.divide(ops.add(step, 1.0), warmup))
            value = ops.where(ops.less(step, warmup), warm, value)
        return value

    def value(self, step):
        """The learning rate of step `step` as a Python float."""
        return float(ops.convert_to_numpy(self(step)))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "cooldown_steps": self.cooldown_steps,
        }


def check_schedule(schedule):
    """Validates a recipe name; returns it."""
    if schedule not in SCHEDULES:
        raise ValueError(
            f"`schedule` must be one of {SCHEDULES}. "
            f"Received: schedule={schedule!r}"
        )
    return schedule


def warmup_steps(task, total_steps):
    """The task's warmup (`task.warmup_steps`, default 0), kept below
    `total_steps`."""
    steps = int(getattr(task, "warmup_steps", 0) or 0)
    return max(0, min(steps, total_steps - 1))


def recipe_learning_rate(task, schedule, total_steps):
    """The learning rate of the baseline and hybrid arms: the task's recipe
    over `total_steps`.

    Returns:
        A `WarmupDecay`, or the plain float `task.learning_rate` for
        `"constant"` without warmup (the schedule every task used before
        recipes existed).
    """
    check_schedule(schedule)
    warmup = warmup_steps(task, total_steps)
    if schedule == "constant" and warmup == 0:
        return float(task.learning_rate)
    return WarmupDecay(float(task.learning_rate), int(total_steps), warmup,
                       decay=schedule)


def equal_budget_learning_rate(task, schedule, budget):
    """The recipe compressed to `budget` steps (`"constant"`: a linear
    decay to 0 over the budget)."""
    check_schedule(schedule)
    decay = "cosine" if schedule == "cosine" else "linear"
    return WarmupDecay(float(task.learning_rate), int(budget),
                       warmup_steps(task, budget), decay=decay)


def wsd_learning_rate(task, budget, cooldown_fraction=WSD_COOLDOWN_FRACTION):
    """Warmup, the peak held, a linear cooldown to 0 over the last
    `cooldown_fraction` of `budget` steps."""
    warmup = warmup_steps(task, budget)
    cooldown = max(1, int(round(cooldown_fraction * budget)))
    cooldown = min(cooldown, budget - warmup)
    return WarmupDecay(float(task.learning_rate), int(budget), warmup,
                       decay="wsd", cooldown_steps=cooldown)
