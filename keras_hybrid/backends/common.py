"""Backend-neutral helpers shared by the step functions."""

import keras

LOSS_KEY = "_hybrid_loss"
GRAD_NORM_KEY = "_hybrid_grad_norm"
STAT_KEYS = (LOSS_KEY, GRAD_NORM_KEY)


def unpack(data):
    """Splits a batch into `(x, y, sample_weight)`."""
    return keras.utils.unpack_x_y_sample_weight(data)


def strip_stats(logs):
    """The user's logs without the hybrid statistics (no host transfer)."""
    if not isinstance(logs, dict):
        return logs
    return {k: v for k, v in logs.items() if k not in STAT_KEYS}


def pop_stats(logs):
    """Splits a step's logs into (user logs, hybrid statistics as floats)."""
    if not isinstance(logs, dict):
        return logs, {}
    stats = {}
    clean = {}
    for key, value in logs.items():
        if key in STAT_KEYS:
            stats[key] = float(keras.ops.convert_to_numpy(value))
        else:
            clean[key] = value
    return clean, stats


def flatten(structure):
    """The leaves of a nested structure."""
    return keras.tree.flatten(structure)
