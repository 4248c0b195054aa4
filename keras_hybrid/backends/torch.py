"""PyTorch step functions.

The PREDICT step runs under `torch.no_grad()`: no autograd graph is recorded
(its loss has no `grad_fn`) and nothing calls `backward()`. PyTorch runs
eagerly (or through `torch.compile` with `jit_compile=True`); Keras allows
only `steps_per_execution=1` on this backend, so each fit-loop call is one
batch.
"""

import contextlib

import keras
import torch

from keras_hybrid.backends import common


def _track_loss(model, loss, x):
    first = next(t for t in keras.tree.flatten(x) if t is not None)
    model._loss_tracker.update_state(loss, sample_weight=first.shape[0])


def train_step(model, data):
    """A FULL step: Keras' PyTorch `train_step` plus the batch loss and the
    global gradient norm under the keys of `common.STAT_KEYS`."""
    model.zero_grad()
    x, y, sample_weight, y_pred, loss = common.forward(model, data, True)
    _track_loss(model, loss, x)
    scaled = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights[:]
    if variables:
        scaled.backward()
        grads = [v.value.grad for v in variables]
    else:
        grads = []
        common.warn_no_trainable_weights()
    with torch.no_grad():
        if variables:
            model.optimizer.apply(grads, variables)
        norm = torch.sqrt(sum(
            (torch.sum(torch.square(g)) for g in grads if g is not None),
            torch.zeros(()),
        ))
    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    logs[common.LOSS_KEY] = loss.detach()
    logs[common.GRAD_NORM_KEY] = norm
    return logs


def predict_step(model, deltas, data):
    """A PREDICT step: forward and loss only, then `w += delta`, all under
    `torch.no_grad()` (no autograd graph is built)."""
    with torch.no_grad():
        x, y, sample_weight, y_pred, loss = common.forward(model, data, True)
        _track_loss(model, loss, x)
        for variable, delta in zip(model.trainable_variables, deltas):
            variable.assign_add(delta)
        model.optimizer.iterations.assign_add(1)
        logs = dict(
            model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        )
    logs[common.LOSS_KEY] = loss
    return logs


make_dispatcher = common.make_dispatcher


def variable_scope(model):
    """The scope to create the runner's variables in (none needed here)."""
    return contextlib.nullcontext()


def make_phase_functions(model, accumulators, deltas):
    """Builds the functions of every phase (see the TensorFlow module for
    the contract). The fit loop hands each call a one-batch list."""

    def full(data):
        logs = model._hybrid_plain_train(data)
        with torch.no_grad():
            for acc, variable in zip(accumulators, model.trainable_variables):
                acc.assign_add(variable.value)
        return logs

    def predict(data):
        return predict_step(model, deltas, next_batch(data))

    def eval_loss(batch):
        with torch.no_grad():
            return common.forward(model, batch, False)[-1]

    return {"full": full, "predict": predict, "eval_loss": eval_loss}


def next_batch(data):
    """The batch of a fit-loop call (a one-element list on this backend)."""
    return data[0]
