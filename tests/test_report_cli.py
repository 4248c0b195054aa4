"""`keras-hybrid report`: the text summary and the PNG timeline."""

import json
import math

import keras
import numpy as np
import pytest

import keras_hybrid as kh
from keras_hybrid import cli
from keras_hybrid.report import LossCurve
from keras_hybrid.report_plot import summary_text
from keras_hybrid.report_plot import timeline_figure
from tests.helpers import build_mlp
from tests.helpers import compile_model
from tests.helpers import eager_config


def test_loss_curve_is_bounded_and_keeps_the_span():
    curve = LossCurve(max_points=8)
    for step in range(1, 101):
        curve.add(step, 1.0 / step)
    assert len(curve.points) < 8
    steps = [s for s, _ in curve.points]
    assert steps == sorted(steps) and steps[-1] > 80
    assert len({b - a for a, b in zip(steps, steps[1:])}) == 1
    assert all(loss == pytest.approx(1.0 / s) for s, loss in curve.points)


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(20, 10)), axis=1).astype("int32")
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(loss_tolerance=0.0))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    path = tmp_path_factory.mktemp("report") / "report.json"
    callback.save_report(str(path))
    return path


def test_report_has_a_loss_curve_of_trained_steps(report_path):
    report = json.loads(report_path.read_text())
    curve = report["loss_curve"]
    summary = report["training_summary"]
    assert 0 < len(curve) <= summary["backward_passes"]
    predict_steps = set()
    for phase in report["phases"]:
        if phase["phase"] == "PREDICT":
            predict_steps.update(range(phase["start_step"] + 1,
                                       phase["start_step"] + phase["length"]))
    assert not predict_steps & {s for s, _ in curve}
    steps = [s for s, _ in curve]
    assert steps == sorted(steps) and steps[-1] <= summary["total_steps"]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in curve)


def test_cli_report_prints_summary_and_writes_png(report_path, capsys):
    assert cli.main(["report", str(report_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert out.startswith(summary_text(report))
    s = report["training_summary"]
    assert (f"{s['total_steps']} steps: {s['backward_passes']} with a "
            "backward pass") in out
    assert f"{s['predictions_rejected']} rejected" in out
    png = report_path.with_suffix(".png")
    assert f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = report_path.parent / "custom.png"
    assert cli.main(["report", str(report_path), "--out", str(other)]) == 0
    assert other.stat().st_size > 0


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(20, 10)), axis=1).astype("int32")
    return x, y


class _RunningLoss(keras.callbacks.Callback):
    """Keras' `loss` after every batch: the running mean over the epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))


def test_final_losses_are_keras_loss_and_val_loss():
    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config())
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        validation_data=_data(64, seed=1),
                        callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["final_loss"] == pytest.approx(history.history["loss"][-1])
    assert summary["final_val_loss"] == pytest.approx(
        history.history["val_loss"][-1])
    assert summary["final_val_loss"] != summary["final_loss"]
    assert model.statistics()["final_val_loss"] == summary["final_val_loss"]
    text = summary_text(callback.report())
    assert f"final training loss (last epoch's mean) {summary['final_loss']:.4f}" in text
    assert f"final validation loss {summary['final_val_loss']:.4f}" in text
    # Without validation data there is no validation loss, and none is shown.
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    summary = callback.report()["training_summary"]
    assert summary["final_val_loss"] is None
    assert "validation" not in summary_text(callback.report())


def test_loss_curve_and_its_legend_are_the_batch_loss():
    x, y = _data()
    model = compile_model(kh.HybridModel.wrap(build_mlp(0)))
    callback = kh.HybridPredictCallback(eager_config(enable_prediction=False))
    running = _RunningLoss()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
              callbacks=[callback, running])
    # Equal batches: the k-th batch loss from the running means.
    means = np.asarray(running.means, dtype="float64")
    k = np.arange(1, len(means) + 1)
    batch_losses = k * means - (k - 1) * np.concatenate([[0.0], means[:-1]])
    report = callback.report()
    curve = dict(report["loss_curve"])
    assert sorted(curve) == list(k)
    np.testing.assert_allclose([curve[s] for s in k], batch_losses,
                               rtol=1e-4)
    assert not np.allclose([curve[s] for s in k], means, rtol=1e-4)
    pytest.importorskip("matplotlib")
    legend = timeline_figure(report).axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert "training loss (batch loss of the steps that trained)" in labels


def test_cli_report_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["report", str(tmp_path / "missing.json")])
    assert info.value.code == 2
    assert "Report file not found" in capsys.readouterr().err
    other = tmp_path / "bench.json"
    other.write_text(json.dumps({"tasks": {}}))
    with pytest.raises(SystemExit):
        cli.main(["report", str(other)])
    assert "Not a training report" in capsys.readouterr().err


def test_summary_counts_the_steps_of_each_phase(report_path):
    report = json.loads(report_path.read_text())
    by_phase = report["training_summary"]["steps_by_phase"]
    assert sum(by_phase.values()) == report["training_summary"]["total_steps"]
    text = summary_text(report)
    assert (f"(WARMUP {by_phase['WARMUP']}, FULL {by_phase['FULL']}, "
            f"PREDICT {by_phase['PREDICT']}, CORRECT {by_phase['CORRECT']})"
            in text)
    # A report written before `steps_by_phase` (version 1) reads the same.
    older = json.loads(report_path.read_text())
    summary = older["training_summary"]
    del summary["steps_by_phase"]
    for name, steps in by_phase.items():
        summary[f"{name.lower()}_steps"] = steps
    older["version"] = 1
    assert summary_text(older) == text
