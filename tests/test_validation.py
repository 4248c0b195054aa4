"""Bad data is refused before training starts."""

import numpy as np
import pytest
import tensorflow as tf

import keras_hybrid as kh
from tests.helpers import build_mlp
from tests.helpers import compile_model

pytestmark = pytest.mark.backends


def model():
    return compile_model(kh.HybridModel.wrap(build_mlp(0)))


@pytest.mark.parametrize(
    "x, y, kwargs, message",
    [
        (np.zeros((0, 20), "float32"), np.zeros((0,), "int32"), {},
         "`x` is empty"),
        (np.zeros((8, 20), "float32"), np.zeros((7,), "int32"), {},
         "x has 8, y has 7"),
        (np.zeros((8, 20), "float32"), np.zeros((8,), "int32"),
         {"sample_weight": np.ones(5, "float32")}, "sample_weight has 5"),
        (np.zeros((8, 30), "float32"), np.zeros((8,), "int32"), {},
         "the model expects (20,)"),
        (np.full((8, 20), np.nan, "float32"), np.zeros((8,), "int32"), {},
         "`x` contains 160 non-finite values"),
    ],
)
def test_bad_arrays(x, y, kwargs, message):
    m = model()
    before = [np.array(v) for v in m.weights]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        m.fit(x, y, epochs=1, verbose=0,
              callbacks=[kh.HybridPredictCallback()], **kwargs)
    assert "Received:" in str(info.value)
    for a, b in zip(before, m.weights):
        np.testing.assert_array_equal(a, np.array(b))


def test_empty_dataset():
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 20), "float32"), np.zeros((0,), "int32"))).batch(4)
    with pytest.raises(ValueError, match="dataset passed as `x` is empty"):
        model().fit(data, epochs=1, verbose=0)


def test_inf_in_sample_weight_names_the_sample():
    weights = np.ones(16, "float32")
    weights[5] = np.inf
    with pytest.raises(ValueError, match="the first in sample 5"):
        model().fit(np.zeros((16, 20), "float32"), np.zeros((16,), "int32"),
                    sample_weight=weights, epochs=1, verbose=0)
