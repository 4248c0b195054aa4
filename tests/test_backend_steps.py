"""What the compiled PREDICT step of each backend computes: the forward pass
and nothing of the backward pass."""

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid.backends import common
from tests.helpers import backend_is
from tests.helpers import build_mlp
from tests.helpers import compile_model

pytestmark = pytest.mark.backends


def trained_model(x, y):
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    return model


@pytest.mark.skipif(not backend_is("jax"), reason="JAX jaxprs")
def test_jax_predict_step_has_no_backward_pass(classification_data):
    from keras_hybrid.backends import jax as jax_backend

    x, y = classification_data
    model = trained_model(x, y)
    batch = (x[:32], y[:32])
    deltas = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    counts = {
        kind: jax_backend.primitive_counts(
            jax_backend.step_jaxpr(model, kind, deltas, batch)
        )
        for kind in ("forward", "predict", "full")
    }
    # Two Dense layers: two matrix products forward. The backward pass adds
    # one per kernel gradient and one per propagated input gradient.
    assert counts["forward"]["dot_general"] == 2
    assert counts["predict"]["dot_general"] == 2
    assert counts["full"]["dot_general"] >= 4
    assert counts["predict"]["transpose"] == counts["forward"]["transpose"]
    assert counts["full"]["transpose"] > counts["forward"]["transpose"]
    with pytest.raises(ValueError, match="Received: kind='nope'"):
        jax_backend.step_jaxpr(model, "nope", deltas, batch)


@pytest.mark.skipif(not backend_is("torch"), reason="PyTorch autograd")
def test_torch_predict_step_builds_no_autograd_graph(classification_data):
    import torch

    from keras_hybrid.backends import torch as torch_backend

    x, y = classification_data
    model = trained_model(x, y)
    model.zero_grad()
    grad_enabled = []
    inner_call = model.inner.call

    def recording_call(*args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return inner_call(*args, **kwargs)

    model.inner.call = recording_call
    deltas = [keras.ops.zeros(v.shape) for v in model.trainable_variables]
    batch = (keras.ops.convert_to_tensor(x[:32]),
             keras.ops.convert_to_tensor(y[:32]))
    logs = torch_backend.predict_step(model, deltas, batch)
    loss = logs[common.LOSS_KEY]
    assert grad_enabled == [False]
    assert loss.grad_fn is None and not loss.requires_grad
    assert all(v.value.grad is None for v in model.trainable_variables)
    # The FULL step does record a graph and fills the gradients.
    torch_backend.train_step(model, batch)
    assert grad_enabled == [False, True]
    assert all(v.value.grad is not None for v in model.trainable_variables)
