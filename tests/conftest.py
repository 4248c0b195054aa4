import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def classification_data():
    """A small, learnable 10-class problem (fixed seed)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 20)).astype("float32")
    w = rng.normal(size=(20, 10)).astype("float32")
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(2048, 10)), axis=1)
    return x, y.astype("int32")


@pytest.fixture(scope="session")
def pretrained_cache(tmp_path_factory):
    """One cache folder of the fine-tuning tasks' pretrained backbones for
    the whole test session (the quick pretraining runs once)."""
    return str(tmp_path_factory.mktemp("kh_pretrained"))
