"""Tests of the learned dynamics networks (keras_hybrid.dynamics.networks)."""

import math

import keras
import numpy as np
import pytest

from keras_hybrid.dynamics.ensemble import Ensemble
from keras_hybrid.dynamics.networks import BOOTSTRAP_ROWS
from keras_hybrid.dynamics.networks import LinearDynamics
from keras_hybrid.dynamics.networks import MLPDynamics
from keras_hybrid.dynamics.networks import OutcomeHeads
from keras_hybrid.dynamics.networks import inverse_soft_clip
from keras_hybrid.dynamics.networks import inverse_softplus
from keras_hybrid.dynamics.networks import outcome_loss
from keras_hybrid.dynamics.rssm import RSSMDynamics

pytestmark = pytest.mark.backends

F, R, G, K = 5, 3, 2, 3  # feature_dim, rank, num_groups, num_keypoints
HEADS = {"coeffs": R, "layer_scales": G, "loss_mean": K + 1,
         "loss_log_std": K + 1}


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype("float32")
    y = {"coeffs": rng.normal(size=(n, R)),
         "layer_scales": np.exp(0.3 * rng.normal(size=(n, G))),
         "loss": 0.5 * rng.normal(size=(n, K + 1))}
    return x, y


def sequence(b, t, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, t, F)).astype("float32")
    y = {"coeffs": 0.5 * np.tanh(x[..., :R]),
         "layer_scales": np.exp(0.2 * x[..., -G:]),
         "loss": 0.3 * np.cumsum(x[..., :K + 1], axis=1) / np.sqrt(t)}
    return x, y


def linear(seed=0, **kw):
    return LinearDynamics(F, R, G, K, kw.pop("l2_regularization", 1e-4),
                          seed=seed, **kw)


def mlp(seed=0, **kw):
    return MLPDynamics(F, R, G, K, hidden_dims=(16, 16), seed=seed, **kw)


def rssm(seed=0, **kw):
    return RSSMDynamics(F, R, G, K, deterministic_dim=16, stochastic_dim=4,
                        num_categoricals=4, hidden_dim=16, seed=seed, **kw)


def snapshot(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


# ------------------------------------------------------------------ heads
def test_outcome_heads_shapes_and_output_ranges():
    heads = OutcomeHeads(R, G, K, min_log_std=-4.0, max_log_std=1.0, seed=3)
    for shape in [(4, 7), (2, 5, 7)]:
        hidden = 100.0 * np.random.default_rng(1).normal(size=shape)
        out = {k: keras.ops.convert_to_numpy(v)
               for k, v in heads(hidden.astype("float32")).items()}
        assert set(out) == set(HEADS)
        for key, size in HEADS.items():
            assert out[key].shape == shape[:-1] + (size,)
        assert np.all(out["layer_scales"] > 0)
        # Huge inputs saturate the soft clip at both ends, never beyond.
        assert np.all(out["loss_log_std"] >= -4.0)
        assert np.all(out["loss_log_std"] <= 1.0)
        assert out["loss_log_std"].min() < -3.5
        assert out["loss_log_std"].max() > 0.5


def test_link_inverses_round_trip():
    values = np.array([-5.5, -2.0, 0.0, 1.5])
    raw = inverse_soft_clip(values, -6.0, 2.0).astype("float32")
    clipped = -6.0 + np.logaddexp(0, raw + 6.0) - np.logaddexp(0, raw - 2.0)
    np.testing.assert_allclose(clipped, values, atol=1e-4)
    scales = np.array([0.01, 1.0, 3.0, 50.0])
    np.testing.assert_allclose(
        np.logaddexp(0, inverse_softplus(scales)) + 1e-6, scales, rtol=1e-5)


def test_outcome_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    _, y = batch(4)
    out = {"coeffs": rng.normal(size=(4, R)),
           "layer_scales": np.exp(rng.normal(size=(4, G))),
           "loss_mean": rng.normal(size=(4, K + 1)),
           "loss_log_std": 0.5 * rng.normal(size=(4, K + 1))}
    sigma = np.exp(out["loss_log_std"])
    expected = (
        np.mean((out["coeffs"] - y["coeffs"]) ** 2)
        + np.mean((np.log(out["layer_scales"])
                   - np.log(y["layer_scales"])) ** 2)
        + np.mean(0.5 * ((y["loss"] - out["loss_mean"]) / sigma) ** 2
                  + np.log(sigma) + 0.5 * math.log(2 * math.pi)))
    tensors = {k: keras.ops.convert_to_tensor(v.astype("float32"))
               for k, v in out.items()}
    total, terms = outcome_loss(y, tensors, return_terms=True)
    assert float(keras.ops.convert_to_numpy(total)) == pytest.approx(
        expected, rel=1e-4)
    assert set(terms) == {"coeffs", "layer_scales", "loss_nll"}
    tensors["kl_loss"] = keras.ops.convert_to_tensor(
        np.full((4,), 2.0, "float32"))
    with_kl = outcome_loss(y, tensors, kl_weight=0.5)
    assert float(keras.ops.convert_to_numpy(with_kl)) == pytest.approx(
        expected + 1.0, rel=1e-4)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("build", [linear, mlp], ids=["linear", "mlp"])
@pytest.mark.parametrize("n", [1, 4])
def test_feedforward_output_shapes(build, n):
    model = build()
    out = model.predict_outcome(batch(n)[0])
    assert set(out) == set(HEADS)
    for key, size in HEADS.items():
        assert out[key].shape == (n, size)
        assert np.all(np.isfinite(out[key]))
    assert np.all(out["layer_scales"] > 0)


@pytest.fixture(scope="module")
def shared_rssm():
    return rssm()


@pytest.mark.parametrize("n", [1, 4])
def test_rssm_output_shapes(shared_rssm, n):
    model = shared_rssm
    x, _ = sequence(n, 5)
    out = model.predict_sequence(x)
    for key, size in HEADS.items():
        assert out[key].shape == (n, 5, size)
    assert out["kl"].shape == (n, 5)
    assert out["states"].shape == (n, 5, 16 + 4 * 4)
    nxt = model.predict_next(x)
    for key, size in HEADS.items():
        assert nxt[key].shape == (n, size)
        np.testing.assert_array_equal(nxt[key], out[key][:, -1])
    assert nxt["state"].shape == (n, model.state_dim)
    if n == 4:
        # Chunked (window-sized, zero-padded) inference equals one direct
        # full-length call.
        full = {k: keras.ops.convert_to_numpy(v)
                for k, v in model(x, training=False).items()}
        for key in list(HEADS) + ["kl", "states"]:
            assert full[key].shape == out[key].shape
            np.testing.assert_allclose(out[key], full[key], atol=1e-5)
    # An unbatched (T, F) history is one sequence.
    assert model.predict_next(x[0])["coeffs"].shape == (1, R)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", ["linear", "mlp", "rssm"])
def test_gradient_flow_every_weight_changes_and_loss_drops(kind):
    if kind == "rssm":
        # free_nats=0 so that the prior gets gradients from the first step.
        model = rssm(learning_rate=1e-2, free_nats=0.0, batch_windows=8)
        x, y = sequence(2, 6)
        train = model.train_window
    else:
        model = (linear if kind == "linear" else mlp)(learning_rate=1e-2)
        x, y = batch(16)
        train = model.train
    before = snapshot(model)
    loss_before = model.loss_value(x, y)
    losses = train(x, y, steps=25)
    loss_after = model.loss_value(x, y)
    assert all(np.isfinite(losses))
    assert loss_after < loss_before - 0.05
    for variable, old in zip(model.trainable_variables, before):
        changed = np.max(np.abs(keras.ops.convert_to_numpy(variable) - old))
        assert changed > 0, f"{variable.path} did not change"


def test_fit_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, F))
    a, b = rng.normal(size=(F, R)), rng.normal(size=R)
    a2, b2 = 0.3 * rng.normal(size=(F, G)), 1.0 + rng.normal(size=G) * 0.1
    a3, b3 = rng.normal(size=(F, K + 1)), rng.normal(size=K + 1)
    noise = 0.01
    y = {"coeffs": x @ a + b,
         "layer_scales": np.logaddexp(0, x @ a2 + b2),
         "loss": x @ a3 + b3 + noise * rng.normal(size=(n, K + 1))}
    model = linear(l2_regularization=1e-6)
    loo_std = model.fit_ridge(x, y)
    heads = model.heads
    np.testing.assert_allclose(keras.ops.convert_to_numpy(heads.coeffs.kernel), a, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(heads.coeffs.bias), b, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(heads.scales.kernel), a2, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(heads.loss_mean.kernel), a3,
                               atol=5e-3)
    np.testing.assert_allclose(loo_std, noise, rtol=0.25)
    out = model.predict_outcome(x[:8].astype("float32"))
    np.testing.assert_allclose(out["coeffs"], y["coeffs"][:8], atol=1e-3)
    np.testing.assert_allclose(out["layer_scales"], y["layer_scales"][:8],
                               rtol=1e-3)
    np.testing.assert_allclose(out["loss_log_std"],
                               np.log(loo_std)[None].repeat(8, 0), atol=1e-3)
    # A strong ridge penalty shrinks the map.
    shrunk = linear()
    shrunk.fit_ridge(x, y, alpha=10.0 * n)
    assert (np.linalg.norm(keras.ops.convert_to_numpy(shrunk.heads.coeffs.kernel))
            < 0.5 * np.linalg.norm(a))
    # Gradient training still works after the closed-form fit.
    assert np.isfinite(model.train(x.astype("float32"), y, steps=2)).all()


def test_rssm_kl_straight_through_and_window_training():
    # kl_weight=0: the KL is still computed and reported, but the loss
    # ignores it, so the posterior learns only through the straight-through
    # one-hot samples, and the prior not at all.
    model = rssm(learning_rate=5e-3, kl_weight=0.0, free_nats=0.5, window=3,
                 batch_windows=7)
    x, y = sequence(1, 9, seed=2)
    out = model.predict_sequence(x)
    kl, kl_loss = out["kl"], out["kl_loss"]
    assert kl.shape == (1, 9)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0) and kl.max() > 0
    assert np.all(kl_loss >= 0.5 - 1e-6)  # free nats
    model.predict_next(x)
    assert np.isfinite(model.last_kl) and model.last_kl >= 0

    layers = {name: getattr(model, name)
              for name in ("embed", "post_hidden", "post_logits",
                           "prior_hidden", "prior_logits")}
    before = {name: keras.ops.convert_to_numpy(layer.kernel)
              for name, layer in layers.items()}
    loss_before = model.loss_value(x, y)
    # Truncated BPTT: `batch_windows` windows of 3 phases per step, started
    # from the states of one inference pass.
    losses = model.train_window(x, y, steps=30)
    assert len(losses) == 30 and np.all(np.isfinite(losses))
    assert model.loss_value(x, y) < loss_before
    for name, layer in layers.items():
        moved = np.max(np.abs(keras.ops.convert_to_numpy(layer.kernel)
                              - before[name]))
        assert (moved > 0) == (not name.startswith("prior")), name
    # Every window once, in order (batch_windows=0; here also 7 windows).
    assert np.isfinite(model.train_window(x, y, batch_windows=0)).all()
    with pytest.raises(ValueError, match="at least window=3"):
        model.train_window(x[:, :2], {k: v[:, :2] for k, v in y.items()})
    with pytest.raises(ValueError, match="window must be >= 3"):
        rssm(window=2)


# ------------------------------------------------------------------ ensemble
def test_identical_members_give_zero_disagreement():
    ensemble = Ensemble([mlp(seed=1), mlp(seed=1), mlp(seed=7)])
    ensemble.members[2].set_weights(ensemble.members[0].get_weights())
    pred = ensemble.predict(batch(4)[0])
    assert pred.disagreement == 0.0
    assert np.all(pred.sample_disagreement == 0.0)
    for key in HEADS:
        assert np.all(pred.std[key] == 0.0)
        np.testing.assert_array_equal(pred.mean[key],
                                      pred.members[0][key].astype("float32"))
    assert ensemble.confidence() == 1.0


def test_identical_rssm_members_give_zero_disagreement(shared_rssm):
    ensemble = Ensemble([shared_rssm, rssm(seed=0)])
    pred = ensemble.predict(sequence(4, 5)[0])
    assert pred.mean["coeffs"].shape == (4, R)
    assert pred.disagreement == 0.0


def test_different_seeds_give_positive_disagreement_and_bootstrap_training():
    ensemble = Ensemble.build(mlp, num_members=3, seed=10,
                              confidence_scale=0.2)
    x, y = batch(12)
    pred = ensemble.predict(x)
    stacked = np.stack([m["coeffs"] for m in pred.members])
    np.testing.assert_allclose(pred.mean["coeffs"], stacked.mean(0),
                               atol=1e-6)
    np.testing.assert_allclose(pred.std["coeffs"], stacked.std(0), atol=1e-6)
    assert 0.0 < pred.disagreement <= 1.0
    assert pred.sample_disagreement.shape == (12,)
    assert ensemble.confidence() == pytest.approx(
        math.exp(-pred.disagreement / 0.2))
    assert 0.0 < ensemble.confidence() < 1.0
    assert ensemble.confidence(0.0) == 1.0
    # Members that start equal drift apart on their own bootstrap resamples.
    twins = Ensemble([mlp(seed=3), mlp(seed=3)], seed=5)
    assert twins.predict(x).disagreement == 0.0
    losses = twins.train(x, y, steps=3)
    assert len(losses) == 2 and losses[0] != losses[1]
    assert twins.predict(x).disagreement > 0.0


def test_bootstrap_resamples_have_one_shape_whatever_the_sample_count():
    net = mlp(seed=4)
    shapes = []
    net.train = lambda x, y, steps: shapes.append(
        (x.shape, {k: v.shape for k, v in y.items()})) or [0.0]
    rng = np.random.default_rng(0)
    for n in (5, 12, 64, 70):
        x, y = batch(n, seed=n)
        net.train_bootstrap(x, y, 1, rng)
    assert [s[0] for s in shapes] == [(BOOTSTRAP_ROWS, F)] * 4
    assert all(s[1]["coeffs"] == (BOOTSTRAP_ROWS, R) for s in shapes)
    x, y = batch(6)
    net.train_bootstrap(x, y, 1, rng, rows=9)
    assert shapes[-1][0] == (9, F)


def test_ensemble_validation():
    with pytest.raises(ValueError, match="of one kind"):
        Ensemble([mlp(), linear()])
    with pytest.raises(ValueError, match="previous predict"):
        Ensemble([linear()]).confidence()
