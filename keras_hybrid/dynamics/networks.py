"""Learned dynamics networks: training-state features -> next-phase outcome.

A network reads the feature vector of the FULL phase just observed (loss-curve
features, gradient statistics, low-rank weight-trajectory coefficients;
`feature_dim` values) and predicts the outcome of the NEXT phase as a dict:

- `"coeffs"` `(B, rank)`: weight-delta coefficients over the trajectory basis.
- `"layer_scales"` `(B, num_groups)`: one positive (softplus) scale per group.
- `"loss_mean"`, `"loss_log_std"` `(B, num_keypoints + 1)`: mean and log-std of
  `num_keypoints` key points of the normalized loss curve plus the final loss.
  The log-std is soft-clipped to `[min_log_std, max_log_std]` (smooth, so its
  gradient never vanishes completely).

Targets are dicts with `"coeffs"`, `"layer_scales"` (positive) and `"loss"`
(`(B, num_keypoints + 1)`). `outcome_loss` is MSE(coeffs) + MSE(log scales) +
Gaussian NLL(loss | mean, log-std) (+ the RSSM's KL term).

All networks are small `keras.Model`s with their own Adam optimizer, compiled
at construction, so they can be trained online (`train`, `train_on_batch`)
while an outer model's `fit()` runs. Only `keras.ops` / layers / random are
used, so they run on every Keras backend. Callers should standardize the
features. `RSSMDynamics` is in rssm.py, `Ensemble` in ensemble.py.
"""

import math

import keras
import numpy as np
from keras import ops

HEAD_KEYS = ("coeffs", "layer_scales", "loss_mean", "loss_log_std")
TARGET_KEYS = ("coeffs", "layer_scales", "loss")
_SCALE_EPS = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Rows of every bootstrap resample (`DynamicsNetwork.train_bootstrap`).
BOOTSTRAP_ROWS = 64


class SeedStream:
    """Deterministic distinct integer seeds for the layers of one network.

    Keras initializers seeded with the same integer draw the same values, so
    every layer gets its own seed derived from the network's `seed`.
    """

    def __init__(self, seed):
        self._rng = np.random.default_rng(int(seed))

    def __call__(self):
        return int(self._rng.integers(0, 2**31 - 1))


def soft_clip(x, low, high):
    """Smooth clip of `x` into `[low, high]`; identity-like in between.

    `low + softplus(x - low) - softplus(x - high)`; the final hard clip only
    removes float round-off at saturation (where the gradient is ~0 anyway).
    """
    smooth = low + ops.softplus(x - low) - ops.softplus(x - high)
    return ops.clip(smooth, low, high)


def inverse_soft_clip(value, low, high):
    """NumPy inverse of `soft_clip` (values are first clipped inside)."""
    span = 1e-4 * (high - low)
    v = np.clip(np.asarray(value, np.float64), low + span, high - span)
    q = np.exp(v - low)
    return np.log((q - 1.0) / (np.exp(-low) - q * np.exp(-high)))


def inverse_softplus(value):
    """NumPy inverse of `softplus(x) + 1e-6` (the layer-scale link)."""
    v = np.maximum(np.asarray(value, np.float64) - _SCALE_EPS, 1e-8)
    return np.where(v > 30.0, v, np.log(np.expm1(np.minimum(v, 30.0))))


class OutcomeHeads(keras.layers.Layer):
    """Linear heads: hidden `(..., H)` -> the outcome dict (see module doc).

    Args:
        rank, num_groups, num_keypoints: output sizes.
        kernel_regularizer: applied to every head's kernel.
        min_log_std, max_log_std: soft-clip range of `loss_log_std`.
        seed: integer seed of the kernel initializers.
    """

    def __init__(self, rank, num_groups, num_keypoints, kernel_regularizer=None,
                 min_log_std=-6.0, max_log_std=2.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.num_groups = int(rank), int(num_groups)
        self.num_keypoints = int(num_keypoints)
        self.min_log_std, self.max_log_std = float(min_log_std), float(max_log_std)
        seeds = SeedStream(seed)

        def dense(units, name, bias=0.0):
            return keras.layers.Dense(
                units, name=name,
                kernel_initializer=keras.initializers.GlorotUniform(seeds()),
                bias_initializer=keras.initializers.Constant(bias),
                kernel_regularizer=kernel_regularizer)

        n = self.num_keypoints + 1
        self.coeffs = dense(self.rank, "coeffs")
        # Bias so that the scales start at 1.
        self.scales = dense(self.num_groups, "layer_scales",
                            float(inverse_softplus(1.0)))
        self.loss_mean = dense(n, "loss_mean")
        self.loss_log_std = dense(n, "loss_log_std")

    def call(self, hidden):
        return {
            "coeffs": self.coeffs(hidden),
            "layer_scales": ops.softplus(self.scales(hidden)) + _SCALE_EPS,
            "loss_mean": self.loss_mean(hidden),
            "loss_log_std": soft_clip(self.loss_log_std(hidden),
                                      self.min_log_std, self.max_log_std),
        }


def outcome_loss(targets, outputs, kl_weight=1.0, return_terms=False):
    """The training loss of the dynamics networks (backend-neutral).

    `MSE(coeffs) + MSE(log layer_scales) + mean Gaussian NLL of the loss key
    points` (the NLL includes `0.5 log 2 pi`, so it can be negative), plus
    `kl_weight * mean(outputs["kl_loss"])` when the outputs carry the RSSM's
    (free-nats-clipped) KL term. Leading axes of any rank are averaged over.

    Args:
        targets: dict with `coeffs`, `layer_scales`, `loss`.
        outputs: a network's output dict (tensors or NumPy arrays).
        kl_weight: weight of the KL term.
        return_terms: also return the dict of the separate terms.
    """
    def f32(x):
        return ops.cast(ops.convert_to_tensor(x), "float32")

    outputs = {k: f32(v) for k, v in outputs.items() if k in HEAD_KEYS
               or k == "kl_loss"}
    coeffs = ops.mean(ops.square(outputs["coeffs"] - f32(targets["coeffs"])))
    log_scale_err = (ops.log(outputs["layer_scales"])
                     - ops.log(ops.maximum(f32(targets["layer_scales"]),
                                           _SCALE_EPS)))
    scales = ops.mean(ops.square(log_scale_err))
    log_std = outputs["loss_log_std"]
    z = (f32(targets["loss"]) - outputs["loss_mean"]) * ops.exp(-log_std)
    nll = ops.mean(0.5 * ops.square(z) + log_std) + _HALF_LOG_2PI
    terms = {"coeffs": coeffs, "layer_scales": scales, "loss_nll": nll}
    total = coeffs + scales + nll
    if "kl_loss" in outputs:
        terms["kl"] = ops.mean(outputs["kl_loss"])
        total = total + kl_weight * terms["kl"]
    return (total, terms) if return_terms else total


def as_targets(targets):
    """Checks a target dict and converts it to float32 NumPy arrays."""
    missing = [k for k in TARGET_KEYS if k not in targets]
    if missing:
        raise ValueError(f"targets lack {missing}; expected keys {TARGET_KEYS}. "
                         f"Received keys: {sorted(targets)}")
    return {k: np.asarray(targets[k], np.float32) for k in TARGET_KEYS}


def to_numpy(outputs):
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in outputs.items()}


class DynamicsNetwork(keras.Model):
    """Base of the dynamics networks (feed-forward and RSSM).

    Builds its variables and compiles its own optimizer at construction
    (`Adam(learning_rate)`, `outcome_loss` via `compute_loss`), so
    `train_on_batch(features, targets)` works at once; re-`compile` to change.
    """

    def __init__(self, feature_dim, rank, num_groups, num_keypoints, seed=0,
                 learning_rate=1e-3, min_log_std=-6.0, max_log_std=2.0,
                 jit_compile="auto", **kwargs):
        super().__init__(**kwargs)
        self.feature_dim, self.rank = int(feature_dim), int(rank)
        self.num_groups, self.num_keypoints = int(num_groups), int(num_keypoints)
        self.seed, self.learning_rate = int(seed), float(learning_rate)
        self.min_log_std, self.max_log_std = float(min_log_std), float(max_log_std)
        self.jit_compile_setting = jit_compile
        self._seeds = SeedStream(seed)

    def _finish_init(self, dummy_shape):
        """Creates the variables (a symbolic call: no computation) and
        compiles."""
        self(keras.KerasTensor(dummy_shape), training=False)
        self.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                     jit_compile=self.jit_compile_setting)

    def _heads(self, kernel_regularizer=None):
        return OutcomeHeads(self.rank, self.num_groups, self.num_keypoints,
                            kernel_regularizer=kernel_regularizer,
                            min_log_std=self.min_log_std,
                            max_log_std=self.max_log_std, seed=self._seeds(),
                            name="heads")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        del x, sample_weight, training
        total = outcome_loss(y, y_pred, kl_weight=getattr(self, "kl_weight", 1.0))
        for extra in self.losses:  # kernel regularizers
            total = total + ops.sum(extra)
        return total

    # ------------------------------------------------------------- helpers
    def train(self, features, targets, steps=1):
        """`steps` gradient steps on the whole batch; returns their losses
        (each measured before its update)."""
        x = np.asarray(features, np.float32)
        y = as_targets(targets)
        return [float(self.train_on_batch(x, y)) for _ in range(int(steps))]

    def train_bootstrap(self, features, targets, steps, rng,
                        rows=BOOTSTRAP_ROWS):
        """`train` on one bootstrap resample (drawn with `rng`) of the rows.

        The resample always has `rows` rows (drawn with replacement,
        whatever the number of samples): one batch shape, so the compiled
        train step is traced once instead of once per sample count.
        """
        x = np.asarray(features, np.float32)
        idx = rng.integers(0, len(x), int(rows))
        return self.train(x[idx], {k: v[idx] for k, v in
                                   as_targets(targets).items()}, steps)

    def predict_outcome(self, features):
        """Inference-mode outputs as a dict of NumPy arrays `(B, ...)`.

        Runs the compiled predict function (`predict_on_batch`): an eager
        call of these small networks costs several times more than the
        computation itself, and the runner predicts after every FULL phase.
        """
        x = np.asarray(features, np.float32)
        return to_numpy(self.predict_on_batch(x))

    def loss_value(self, features, targets):
        """`outcome_loss` (+ regularization) in inference mode, no update."""
        outputs = self(np.asarray(features, np.float32), training=False)
        total = outcome_loss(as_targets(targets), outputs,
                             kl_weight=getattr(self, "kl_weight", 1.0))
        for extra in self.losses:
            total = total + ops.sum(extra)
        return float(ops.convert_to_numpy(total))

    def get_config(self):
        return {"feature_dim": self.feature_dim, "rank": self.rank,
                "num_groups": self.num_groups,
                "num_keypoints": self.num_keypoints, "seed": self.seed,
                "learning_rate": self.learning_rate,
                "min_log_std": self.min_log_std,
                "max_log_std": self.max_log_std, "name": self.name}


class LinearDynamics(DynamicsNetwork):
    """Outputs linear in the features (L2-regularized Dense heads, no hidden
    layer; only the output links softplus/soft-clip are nonlinear).

    Train it by gradient steps (`train`) or in closed form (`fit_ridge`).
    """

    def __init__(self, feature_dim, rank, num_groups, num_keypoints,
                 l2_regularization=1e-4, **kwargs):
        super().__init__(feature_dim, rank, num_groups, num_keypoints, **kwargs)
        self.l2_regularization = float(l2_regularization)
        reg = (keras.regularizers.L2(self.l2_regularization)
               if self.l2_regularization > 0 else None)
        self.heads = self._heads(reg)
        self._finish_init((1, self.feature_dim))

    def call(self, features, training=False):
        return self.heads(features)

    def fit_ridge(self, features, targets, alpha=None, std_floor=1e-3):
        """Sets the weights to the closed-form ridge solution (NumPy).

        Each mean output is regressed on the features with an unpenalized
        intercept: `coeffs` on the target coeffs, `layer_scales` on
        `inverse_softplus(target scales)`, `loss_mean` on the target loss.
        `W = (Xc'Xc + alpha I)^-1 Xc'Yc` with centred `Xc`, `Yc`; `alpha`
        defaults to `n * l2_regularization` (ridge on the mean squared error).
        The log-std head gets a zero kernel and, as bias, the log of the
        leave-one-out RMS residual of each loss key point (at least
        `std_floor`), so the bounds are honest even when `n <= feature_dim`
        (then they are wide: up to `max_log_std`).

        Returns:
            The per-key-point leave-one-out residual std (NumPy).
        """
        x = np.asarray(features, np.float64)
        t = as_targets(targets)
        n = x.shape[0]
        ys = [t["coeffs"], inverse_softplus(t["layer_scales"]), t["loss"]]
        y = np.concatenate([np.asarray(v, np.float64) for v in ys], axis=1)
        alpha = n * self.l2_regularization if alpha is None else float(alpha)
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + (alpha + 1e-10) * np.eye(x.shape[1])
        try:
            w = np.linalg.solve(gram, xc.T @ yc)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(gram, xc.T @ yc, rcond=None)[0]
        b = y_mean - x_mean @ w
        # Leave-one-out residuals of a ridge fit: r_i / (1 - H_ii).
        hat = np.einsum("ij,ij->i", xc @ np.linalg.pinv(gram), xc) + 1.0 / n
        n_loss = t["loss"].shape[1]
        resid = (y - x @ w - b)[:, -n_loss:]
        loo = resid / np.maximum(1.0 - hat, 1e-3)[:, None]
        loo_std = np.sqrt(np.mean(loo**2, axis=0) + std_floor**2)

        splits = np.cumsum([self.rank, self.num_groups])
        for layer, ws, bs in zip(
                (self.heads.coeffs, self.heads.scales, self.heads.loss_mean),
                np.split(w, splits, axis=1), np.split(b, splits)):
            layer.kernel.assign(ws.astype(np.float32))
            layer.bias.assign(bs.astype(np.float32))
        std_layer = self.heads.loss_log_std
        std_layer.kernel.assign(np.zeros(std_layer.kernel.shape, np.float32))
        std_layer.bias.assign(inverse_soft_clip(
            np.log(loo_std), self.min_log_std, self.max_log_std
        ).astype(np.float32))
        return loo_std

    def get_config(self):
        return {**super().get_config(),
                "l2_regularization": self.l2_regularization}


class MLPDynamics(DynamicsNetwork):
    """`hidden_dims` Dense layers (+ optional dropout), then the heads."""

    def __init__(self, feature_dim, rank, num_groups, num_keypoints,
                 hidden_dims=(64, 64), activation="relu", dropout=0.0,
                 l2_regularization=0.0, **kwargs):
        super().__init__(feature_dim, rank, num_groups, num_keypoints, **kwargs)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.activation, self.dropout = activation, float(dropout)
        self.l2_regularization = float(l2_regularization)
        reg = (keras.regularizers.L2(self.l2_regularization)
               if self.l2_regularization > 0 else None)
        self.hidden = []
        for i, units in enumerate(self.hidden_dims):
            self.hidden.append(keras.layers.Dense(
                units, activation=activation, kernel_regularizer=reg,
                kernel_initializer=keras.initializers.GlorotUniform(self._seeds()),
                name=f"hidden_{i}"))
            if self.dropout > 0:
                self.hidden.append(keras.layers.Dropout(
                    self.dropout, seed=self._seeds(), name=f"dropout_{i}"))
        self.heads = self._heads(reg)
        self._finish_init((1, self.feature_dim))

    def call(self, features, training=False):
        h = features
        for layer in self.hidden:
            h = layer(h, training=training)
        return self.heads(h)

    def get_config(self):
        return {**super().get_config(), "hidden_dims": self.hidden_dims,
                "activation": self.activation, "dropout": self.dropout,
                "l2_regularization": self.l2_regularization}
