"""`StepStatistics`: the per-step loss and gradient norm, kept on the device
until the host needs them.

Reading a tensor on the host after every step (`float(loss)`) makes the host
wait for the step to finish before it dispatches the next one: TensorFlow and
JAX can no longer run ahead, and on a small model the step time can double.
The compiled steps therefore return their statistics as device tensors; this
class holds them, with the step they belong to, and brings them all to the
host in one transfer when the runner asks (every
`divergence.check_interval_steps` steps and at the end of every phase). The
monitor, the training state and the predictors then see every step's values,
in order, a few steps late.
"""

import dataclasses
import math

import keras
import numpy as np


@dataclasses.dataclass
class StepRecord:
    """The statistics of one step, on the host.

    Attributes:
        step: the controller's step count after the step.
        loss: the batch loss.
        grad_norm: the global gradient norm (`None` without a backward pass).
        backward: whether the step ran a backward pass.
        kind: what ran it (`"full"`, `"correction"`, `"predict"`, ...).
    """

    step: int
    loss: float
    grad_norm: object
    backward: bool
    kind: str


class StepStatistics:
    """Device-side per-step statistics and their batched read.

    Attributes:
        host_reads: the number of device-to-host transfers made so far.
    """

    def __init__(self):
        self._pending = []
        self.host_reads = 0

    def __len__(self):
        return len(self._pending)

    def add(self, step, loss, grad_norm=None, kind="full"):
        """Keeps one step's statistics (tensors; nothing is transferred).

        Args:
            step: the controller's step count after the step.
            loss: the batch loss as a scalar tensor (or `None`).
            grad_norm: the gradient norm as a scalar tensor, `None` for a
                step without a backward pass.
            kind: what ran the step (`"predict"` for a forward-only step;
                any other kind ran a backward pass).
        """
        if loss is None:
            return
        self._pending.append((int(step), loss, grad_norm, kind))

    def read(self, keep_newest=0):
        """Brings the pending values to the host in one transfer.

        Args:
            keep_newest: the number of newest steps left pending: a step
                just dispatched may still be running, and reading its value
                would make the host wait for it.

        Returns:
            A list of `StepRecord`, oldest first (empty if nothing read).
        """
        split = max(len(self._pending) - keep_newest, 0)
        pending, self._pending = self._pending[:split], self._pending[split:]
        return self._peek(pending)

    def _peek(self, pending=None):
        """`pending` (default: every pending value) as `StepRecord`s, in one
        transfer; nothing is consumed."""
        if pending is None:
            pending = self._pending
        if not pending:
            return []
        values = []
        for _, loss, grad_norm, _ in pending:
            values.append(loss)
            if grad_norm is not None:
                values.append(grad_norm)
        host = to_host(values)
        self.host_reads += 1
        records = []
        i = 0
        for step, _, grad_norm, kind in pending:
            loss = float(host[i])
            i += 1
            norm = None
            if grad_norm is not None:
                norm = float(host[i])
                i += 1
            records.append(
                StepRecord(step, loss, norm, kind != "predict", kind)
            )
        return records

    def get_state(self):
        """The pending values on the host, without consuming them (for a
        checkpoint): a list of `[step, loss, grad_norm, kind]`, strict JSON
        (a non-finite value as its name, e.g. `"nan"`)."""
        return [
            [r.step, _json_float(r.loss), _json_float(r.grad_norm), r.kind]
            for r in self._peek()
        ]

    def set_state(self, state):
        """Makes `get_state` output the pending values again."""
        self._pending = [
            (
                int(step),
                keras.ops.convert_to_tensor(float(loss), dtype="float32"),
                None if norm is None
                else keras.ops.convert_to_tensor(float(norm), dtype="float32"),
                kind,
            )
            for step, loss, norm, kind in state
        ]

    def clear(self):
        """Drops the pending values (their steps were undone)."""
        self._pending = []


def _json_float(value):
    if value is None or math.isfinite(value):
        return value
    return str(value)


def to_host(values):
    """Scalar tensors as one float64 NumPy vector, in one transfer.

    JAX: one batched `jax.device_get`. TensorFlow and PyTorch: tensors in
    host memory are read directly (no device op is dispatched, which on a
    busy CPU costs more than the read); others are stacked on their device
    and copied once.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.device_get(values), dtype="float64").reshape(-1)
    if all(_in_host_memory(v, backend) for v in values):
        if backend == "torch":
            return np.array([v.item() for v in values], "float64")
        return np.array([v.numpy() for v in values], "float64")
    if len({v.dtype for v in values}) > 1:
        values = [keras.ops.cast(v, "float32") for v in values]
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.stack(values)), dtype="float64"
    ).reshape(-1)


def _in_host_memory(value, backend):
    if backend == "torch":
        return value.device.type == "cpu"
    device = getattr(value, "device", None)
    return isinstance(device, str) and "device:CPU:" in device
