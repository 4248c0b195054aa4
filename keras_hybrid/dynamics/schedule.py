"""The optimizer's learning-rate schedule, as the long-window estimators read
it.

An Adam-type step moves the weights roughly in proportion to its learning
rate. A velocity measured over steps at one rate therefore extrapolates to
future steps in proportion to the sum of their rates: a jump that replaces
`H` steps covers `sum(lr(t + i), i < H)` units of "learning-rate time", which
under a decaying schedule is less than `H` times the rate the velocity was
measured at.
"""

import keras
import numpy as np


def schedule_of(optimizer):
    """The optimizer's `LearningRateSchedule` (or callable), else `None`.

    Looks through a loss-scale wrapper (`inner_optimizer`). A constant rate
    gives `None`.
    """
    if optimizer is None:
        return None
    inner = getattr(optimizer, "inner_optimizer", None) or optimizer
    rate = getattr(inner, "_learning_rate", None)
    schedule = keras.optimizers.schedules.LearningRateSchedule
    if isinstance(rate, schedule):
        return rate
    if callable(rate) and not isinstance(rate, keras.Variable):
        return rate
    return None


def learning_rates(optimizer, start, count):
    """The learning rates of steps `start .. start + count - 1`.

    Args:
        optimizer: a Keras optimizer (or `None`: a constant rate of 1).
        start: the first (0-based) step.
        count: how many steps.

    Returns:
        A float64 NumPy array of `count` rates (non-negative).
    """
    count = max(int(count), 0)
    start = max(int(start), 0)
    if count == 0:
        return np.zeros((0,))
    schedule = schedule_of(optimizer)
    if schedule is None:
        if optimizer is None:
            value = 1.0
        else:
            value = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        return np.full((count,), value)
    steps = np.arange(start, start + count)
    try:
        values = keras.ops.convert_to_numpy(
            schedule(keras.ops.convert_to_tensor(steps, dtype="int64"))
        )
        values = np.broadcast_to(np.asarray(values, "float64"), (count,))
    except Exception:  # noqa: BLE001 - a schedule of scalar steps only.
        values = np.array([
            float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps
        ])
    return np.maximum(np.asarray(values, "float64"), 0.0)


def horizon(rates_ahead, measured_rate):
    """How many steps at `measured_rate` the steps ahead are worth.

    Args:
        rates_ahead: the learning rates of the steps a jump replaces.
        measured_rate: the mean learning rate of the steps the velocity was
            measured on.

    Returns:
        `sum(rates_ahead) / measured_rate` (0 if `measured_rate` is not
        positive).
    """
    if not measured_rate > 0:
        return 0.0
    return float(np.sum(rates_ahead)) / float(measured_rate)


def rising(rates):
    """Whether a window's learning rate rises (a warmup): its last rate is
    above its first."""
    rates = np.asarray(rates, "float64")
    return bool(rates.size and rates[-1] > rates[0] * (1.0 + 1e-6))


def jump_allowed(rates_before, rates_ahead, peak, min_fraction):
    """Whether the schedule allows a jump now.

    Never during warmup (the rate still rises: the last rate measured is
    above the first one of the window) nor in a cooldown (the rate at the
    end of the jump is below `min_fraction` of the peak seen so far).

    Args:
        rates_before: the rates of the window the velocity was measured on.
        rates_ahead: the rates of the steps the jump replaces.
        peak: the largest rate seen so far.
        min_fraction: the cooldown threshold, in [0, 1).
    """
    rates_before = np.asarray(rates_before, "float64")
    rates_ahead = np.asarray(rates_ahead, "float64")
    if rates_before.size == 0 or rates_ahead.size == 0:
        return False
    if rising(rates_before):
        return False
    return bool(rates_ahead[-1] >= min_fraction * peak)
