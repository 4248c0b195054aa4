"""Checks of the data given to `fit()`, before any step runs."""

import numpy as np


def check_fit_data(model, x=None, y=None, sample_weight=None):
    """Raises a clear `ValueError` for data that cannot train `model`.

    Checks NumPy inputs fully (empty, mismatched lengths, non-finite values,
    feature shapes against the model's declared inputs) and datasets as far
    as is cheap (a `tf.data.Dataset` known to be empty). Other inputs pass.
    """
    _check_dataset(x)
    arrays = {"x": x, "y": y, "sample_weight": sample_weight}
    arrays = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    if "x" not in arrays:
        return
    lengths = {name: len(a) for name, a in arrays.items() if a.ndim > 0}
    if lengths.get("x", 0) == 0:
        raise ValueError(
            "`x` is empty: there is nothing to train on. "
            f"Received: x.shape={arrays['x'].shape}"
        )
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "`x`, `y` and `sample_weight` must have the same number of "
            f"samples. Received: {', '.join(f'{k} has {n}' for k, n in lengths.items())}"
        )
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating):
            bad = ~np.isfinite(array)
            if bad.any():
                first = int(np.argwhere(bad)[0][0])
                raise ValueError(
                    f"`{name}` contains {int(bad.sum())} non-finite values "
                    f"(NaN or Inf), the first in sample {first}. Clean the "
                    f"data before training. Received: {name}.shape="
                    f"{array.shape}"
                )
    expected = _expected_feature_shape(model)
    if expected is not None:
        got = arrays["x"].shape[1:]
        if len(got) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, got)
        ):
            raise ValueError(
                f"`x` has samples of shape {got}, the model expects "
                f"{tuple(expected)}. Received: x.shape={arrays['x'].shape}"
            )


def _check_dataset(x):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - other backends without TF
        return
    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError(
                "The dataset passed as `x` is empty: there is nothing to "
                "train on. Received: x.cardinality()=0"
            )


def _expected_feature_shape(model):
    """The per-sample input shape a single-input model declares, if any."""
    for candidate in (model, getattr(model, "inner", None)):
        if candidate is None:
            continue
        try:
            inputs = candidate.inputs
        except (AttributeError, ValueError):
            continue
        if inputs and len(inputs) == 1:
            return tuple(inputs[0].shape[1:])
    return None
