"""Keras' moving average of the weights (`use_ema=True` on an optimizer)
at the end of `fit()`.

Keras overwrites the weights with their average just before the callbacks'
`on_train_end`. `finalize(model)` does it again (after the hybrid runner has
settled, which may write other weights) and gives every weight a buffer of
its own: on JAX the overwrite leaves a weight and its average sharing one
array, which the next compiled call that donates the weights deletes under
the average (Keras 3.15: a second `fit()`, or `predict_on_batch` in
`on_train_end`, then fails).
"""

import numbers

import keras


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def uses_weight_average(model):
    """Whether `model`'s optimizer keeps a weight average (`use_ema`)."""
    optimizer = getattr(model, "optimizer", None)
    return isinstance(optimizer, keras.optimizers.Optimizer) and bool(
        getattr(_inner(optimizer), "use_ema", False)
    )


def finalize(model):
    """Puts the weight average in place of `model`'s trainable weights, each
    in a buffer of its own. A no-op without a weight average."""
    if not uses_weight_average(model):
        return
    model.optimizer.finalize_variable_values(model.trainable_weights)
    for variable in model.trainable_weights:
        variable.assign(keras.ops.copy(variable.value))


def check_weight_average(weight_average, backend=None):
    """`None`, or the moving-average momentum as a float in (0, 1).

    Refused on JAX: there Keras 3.15 ends `fit()` with each weight sharing
    its array with its average, and the arms' validation after `fit()`
    finds that array deleted."""
    if weight_average is None:
        return None
    if backend == "jax":
        raise ValueError(
            "`weight_average` is not available on the JAX backend (Keras "
            "leaves the averaged weights unusable after fit() there). "
            f"Received: weight_average={weight_average!r}, backend='jax'"
        )
    if isinstance(weight_average, bool) or not isinstance(
        weight_average, numbers.Real
    ) or not 0 < weight_average < 1:
        raise ValueError(
            "`weight_average` must be None or a momentum in (0, 1), e.g. "
            f"0.99. Received: weight_average={weight_average!r}"
        )
    return float(weight_average)
