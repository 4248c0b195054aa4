"""`HybridTensorBoard`: what it writes, read back from the event files."""

import os

import pytest

import keras_hybrid as kh
from keras_hybrid.tensorboard import read_scalars
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config

pytest.importorskip("tensorflow")


def test_scalars_per_step_and_interventions(classification_data, tmp_path):
    x, y = classification_data
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    hybrid = kh.HybridPredictCallback(eager_config(loss_tolerance=0.0))
    board = kh.HybridTensorBoard(str(tmp_path), update_freq=1)
    model.fit(x[:512], y[:512], batch_size=32, epochs=2, verbose=0,
              callbacks=[board, hybrid])
    series = read_scalars(os.path.join(tmp_path, "hybrid"))
    for tag in ("phase", "predicting", "confidence", "backward_reduction",
                "loss"):
        assert f"hybrid/{tag}" in series, tag
    phases = series["hybrid/phase"]
    steps = [s for s, _ in phases]
    assert steps == sorted(set(steps)) and len(steps) >= 20
    assert {v for _, v in phases} >= {0.0, 1.0, 2.0}  # PREDICT visible
    assert all(v == float(p == 2.0) for (_, v), (_, p) in
               zip(series["hybrid/predicting"], phases))
    report = hybrid.report()
    assert series["hybrid/backward_reduction"][-1][1] == pytest.approx(
        report["training_summary"]["backward_reduction_pct"] / 100, abs=0.05
    )
    events = report["divergence_events"]
    texts = series.get("hybrid/intervention", [])
    assert len(texts) == len(events)
    assert [s for s, _ in texts] == sorted(e["step"] for e in events)
    assert [v for _, v in series.get("hybrid/interventions", [])] == [
        float(i + 1) for i in range(len(events))
    ]


def test_update_freq_is_checked():
    with pytest.raises(ValueError, match="Received: update_freq=0"):
        kh.HybridTensorBoard("logs", update_freq=0)


def test_missing_tensorflow_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    board = kh.HybridTensorBoard(str(tmp_path))
    with pytest.raises(ImportError, match=r"keras-hybrid\[tensorflow\]"):
        board.on_train_begin()
