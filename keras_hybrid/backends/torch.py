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
    global gradient norm under the keys of `common.STAT_KEYS`.

    The update is applied only if the loss and every gradient are finite
    (see `_guarded_apply`).
    """
    model.zero_grad()
    x, y, sample_weight, y_pred, loss = common.forward(model, data, True)
    _track_loss(model, loss, x)
    variables, partial = common.live_variables(model)
    variables = list(variables)
    logs = {common.LOSS_KEY: loss.detach()}
    if variables:
        scaled = model.optimizer.scale_loss(loss)
        if partial:
            # Autograd runs only the part of the graph that leads to these
            # weights: nothing below the lowest trainable group.
            scaled.backward(inputs=[v.value for v in variables])
        else:
            scaled.backward()
        grads = [v.value.grad for v in variables]
        with torch.no_grad():
            norm = _global_norm(grads)
            finite = common.update_is_finite(loss.detach(), norm)
            _guarded_apply(model.optimizer, grads, variables, finite)
        logs[common.GRAD_NORM_KEY] = norm
    else:
        common.warn_no_trainable_weights()
    metrics = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    return dict(metrics, **logs)


def _global_norm(grads):
    """The L2 norm of all gradients together, in two fused kernels
    (`torch._foreach_norm`, then the norm of the per-tensor norms)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros(())
    norms = torch._foreach_norm(present)
    if len({n.dtype for n in norms}) > 1:
        norms = [n.float() for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms))


def _guarded_apply(optimizer, grads, variables, finite, on_device=None):
    """`optimizer.apply(grads, variables)` only where `finite`.

    On the CPU, PyTorch runs synchronously, so the flag is read on the host
    and a refused step skips the update (only `iterations` advances). On an
    accelerator the flag stays on the device: the update is computed and
    every updated variable keeps its old value where the flag is false.

    Args:
        on_device: force (True) or forbid (False) the device-side path;
            `None` picks it from where `finite` lives.
    """
    if on_device is None:
        on_device = finite.device.type != "cpu"
    if not on_device:
        if bool(finite):
            optimizer.apply(grads, variables)
        else:
            optimizer.iterations.assign_add(1)
        return
    iterations = optimizer.iterations
    guarded = list(variables) + [
        v for v in optimizer.variables if v is not iterations
    ]
    with torch.no_grad():
        old = [v.value.clone() for v in guarded]
        optimizer.apply(grads, variables)
        for variable, value in zip(guarded, old):
            variable.value.copy_(torch.where(finite, variable.value, value))


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
sync = common.sync


def variable_scope(model):
    """The scope to create the runner's variables in (none needed here)."""
    return contextlib.nullcontext()


def make_phase_functions(model, accumulators, deltas):
    """Builds the functions of every phase (see the TensorFlow module for
    the contract). The fit loop hands each call a one-batch list."""

    collect = common.Switch(True)

    def full(data):
        logs = model._hybrid_plain_train(data)
        if collect.value:
            with torch.no_grad():
                torch._foreach_add_(
                    [acc.value for acc in accumulators],
                    [v.value for v in model.trainable_variables],
                )
        return logs

    def predict(data):
        return predict_step(model, deltas, next_batch(data))

    def eval_loss(batch):
        with torch.no_grad():
            return common.forward(model, batch, False)[-1]

    return {
        "full": full,
        "predict": predict,
        # The collecting step, like the other backends'.
        "train_batch": lambda batch: full([batch]),
        "eval_loss": eval_loss,
        "collect": collect,
    }


def next_batch(data):
    """The batch of a fit-loop call (a one-element list on this backend)."""
    return data[0]
