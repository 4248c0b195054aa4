"""Keras' moving average of the weights (`use_ema=True` on an optimizer):
turning it on, validating a run on it, and ending `fit()` on it.

Keras overwrites the weights with their average just before the callbacks'
`on_train_end`. `finalize(model)` does it again (after the hybrid runner has
settled, which may write other weights) and gives every weight a buffer of
its own: on JAX the overwrite leaves a weight and its average sharing one
array, which the next compiled call that donates the weights deletes under
the average (Keras 3.15: a second `fit()`, or `predict_on_batch` in
`on_train_end`, then fails).
"""

import contextlib
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


def turn_on(optimizer, momentum):
    """Turns on the moving average of the weights (`use_ema=True`,
    `ema_momentum=momentum`) on an optimizer that is not built yet, whatever
    its class."""
    if optimizer.built:
        raise ValueError(
            "The weight average must be turned on before the optimizer is "
            f"built. Received: an optimizer built already ({optimizer.name})"
        )
    optimizer.use_ema = True
    optimizer.ema_momentum = float(momentum)
    optimizer.ema_overwrite_frequency = None
    return optimizer


@contextlib.contextmanager
def in_place(model):
    """Puts the weight average in place of the trainable weights for the
    duration, then the trained weights back: what `fit()` stopped at this
    step would return. Nothing happens without a weight average."""
    if not uses_weight_average(model):
        yield
        return
    optimizer = _inner(model.optimizer)
    variables = list(optimizer._trainable_variables)
    kept = [keras.ops.convert_to_numpy(v) for v in variables]
    for variable, average in zip(variables,
                                 optimizer._model_variables_moving_average):
        variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(variables, kept):
            variable.assign(value)


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
