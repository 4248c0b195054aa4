"""Backend-neutral helpers shared by the step functions."""

import warnings

import keras

LOSS_KEY = "_hybrid_loss"
GRAD_NORM_KEY = "_hybrid_grad_norm"
STAT_KEYS = (LOSS_KEY, GRAD_NORM_KEY)


class Switch:
    """A boolean setting of the phase functions, kept on the host.

    Where the compiled step reads it on the device, `apply` copies each new
    value there: one assignment per change, not one per step.

    Args:
        value: the setting now (`None`: unknown, the first call applies).
        apply: called with each new value (a bool), if given.
    """

    def __init__(self, value=None, apply=None):
        self.value = value
        self.apply = apply

    def __call__(self, value):
        value = bool(value)
        if value != self.value:
            if self.apply is not None:
                self.apply(value)
            self.value = value


def warn_no_trainable_weights():
    """Keras' warning for a training step of a model without trainable
    weights (the step runs the forward pass and the metrics only)."""
    warnings.warn("The model does not have any trainable weights.")


def unpack(data):
    """Splits a batch into `(x, y, sample_weight)`."""
    return keras.utils.unpack_x_y_sample_weight(data)


def strip_stats(logs):
    """The user's logs without the hybrid statistics (no host transfer)."""
    if not isinstance(logs, dict):
        return logs
    return {k: v for k, v in logs.items() if k not in STAT_KEYS}


def split_stats(logs):
    """Splits a step's logs into the user's logs, the batch loss and the
    gradient norm, all left on the device (no host transfer).

    Returns:
        `(logs, loss, grad_norm)`; `loss` and `grad_norm` are `None` where
        the step did not report them.
    """
    if not isinstance(logs, dict):
        return logs, None, None
    return (
        strip_stats(logs),
        logs.get(LOSS_KEY),
        logs.get(GRAD_NORM_KEY),
    )


def update_is_finite(loss, grad_norm):
    """Whether an update may be applied: the loss and the global gradient
    norm are finite (a non-finite gradient entry makes the norm non-finite,
    so one reduction covers every gradient)."""
    return keras.ops.logical_and(
        keras.ops.isfinite(loss), keras.ops.isfinite(grad_norm)
    )


def live_variables(model):
    """The trainable variables a training step updates: all of them, or
    those a freeze leaves trainable (`model._hybrid_live`, one bool per
    trainable variable, read when the step is traced).

    Returns:
        `(variables, partial)`: the list, and whether some are frozen.
    """
    variables = model.trainable_variables
    mask = getattr(model, "_hybrid_live", None)
    if mask is None or len(mask) != len(variables):
        return variables, False
    return [v for v, live in zip(variables, mask) if live], True


def forward(model, data, training):
    """Forward pass and compiled loss of one batch.

    Returns:
        `(x, y, sample_weight, y_pred, loss)`.
    """
    x, y, sample_weight = unpack(data)
    if model._call_has_training_arg:
        y_pred = model(x, training=training)
    else:
        y_pred = model(x)
    loss = model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
        training=training,
    )
    return x, y, sample_weight, y_pred, loss


def sync(model):
    """Makes the model's variables hold the newest training state (they
    always do on TensorFlow and PyTorch; see the JAX module)."""
    del model


def make_dispatcher(model, plain):
    """The fit loop's `train_function` for backends whose loop passes one
    argument (TensorFlow: the iterator; PyTorch: a one-batch list).

    Without a runner it is Keras' own step (statistics dropped); with one,
    the runner runs the current phase's function.

    Returns:
        `(dispatch, plain)`: the train function, and the plain step.
    """

    def dispatch(data):
        runner = model._hybrid_runner
        if runner is None:
            return strip_stats(plain(data))
        return runner.run(data)

    return dispatch, plain
