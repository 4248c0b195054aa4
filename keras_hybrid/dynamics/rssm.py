"""`RSSMDynamics`: a small recurrent state-space model over observed phases.

For each observed phase `t` (features `x_t`):

    h_t = GRU(z_{t-1}, h_{t-1})                 deterministic state
    p(z_t | h_t)                                prior
    q(z_t | h_t, embed(x_t))                    posterior
    outcome of phase t+1 = heads(MLP([h_t, z_t]))

`z_t` is `stochastic_dim` independent categoricals of `num_categoricals`
classes, each mixed with `unimix` of the uniform distribution (keeps the KL
finite). In training, `z_t` is a straight-through one-hot sample of `q`
(`keras.random.categorical` with the model's seeded `SeedGenerator`); in
inference it is the posterior's probabilities (their expectation), so
inference is deterministic.

`kl` = KL(q || p) summed over the latents, per batch element and step. The
KL term of the loss is balanced and free-nats-clipped as in DreamerV3:
`kl_balance * max(KL(sg q || p), free_nats) + (1 - kl_balance) *
max(KL(q || sg p), free_nats)`, weighted by `kl_weight`.

Targets are aligned per step: `targets[:, t]` is the outcome of phase `t+1`.
Training is truncated BPTT over windows of `window` (>= 3) phases: a
gradient-free inference pass over the whole sequence (once per
`train_window` call) gives the state before every phase; each window starts
from that (detached) state and back-propagates
through its `window` steps. `train_window` samples `batch_windows` windows
(with replacement) per step, so the compiled train step always sees one shape.
"""

import keras
import numpy as np
from keras import ops

from keras_hybrid.dynamics.networks import HEAD_KEYS
from keras_hybrid.dynamics.networks import DynamicsNetwork
from keras_hybrid.dynamics.networks import as_targets
from keras_hybrid.dynamics.networks import outcome_loss


class RSSMDynamics(DynamicsNetwork):
    """RSSM-lite over the sequence of observed phases.

    Input: `(B, T, feature_dim)` features, or a dict `{"features": ...,
    "state": (B, state_dim)}` to start from a given state (zeros otherwise).
    Output dict: the heads' outputs `(B, T, ...)`, `"kl"` and `"kl_loss"`
    `(B, T)`, and `"states"` `(B, T, state_dim)` (the state after each step,
    `state_dim = deterministic_dim + stochastic_dim * num_categoricals`).
    """

    def __init__(self, feature_dim, rank, num_groups, num_keypoints,
                 deterministic_dim=64, stochastic_dim=8, num_categoricals=8,
                 hidden_dim=64, activation="silu", kl_weight=0.1,
                 free_nats=1.0, kl_balance=0.8, unimix=0.01, window=3,
                 batch_windows=16, **kwargs):
        super().__init__(feature_dim, rank, num_groups, num_keypoints, **kwargs)
        if int(window) < 3:
            raise ValueError(f"window must be >= 3. Received: window={window}")
        self.deterministic_dim = int(deterministic_dim)
        self.stochastic_dim = int(stochastic_dim)
        self.num_categoricals = int(num_categoricals)
        self.hidden_dim, self.activation = int(hidden_dim), activation
        self.kl_weight, self.free_nats = float(kl_weight), float(free_nats)
        self.kl_balance, self.unimix = float(kl_balance), float(unimix)
        self.window, self.batch_windows = int(window), int(batch_windows)
        self.latent_dim = self.stochastic_dim * self.num_categoricals
        self.state_dim = self.deterministic_dim + self.latent_dim
        self.last_kl = None
        self._rng = np.random.default_rng(self._seeds())

        def dense(units, act=None, name=None):
            return keras.layers.Dense(
                units, activation=act, name=name,
                kernel_initializer=keras.initializers.GlorotUniform(self._seeds()))

        self.embed = dense(self.hidden_dim, activation, "embed")
        self.gru = keras.layers.GRUCell(
            self.deterministic_dim,
            kernel_initializer=keras.initializers.GlorotUniform(self._seeds()),
            recurrent_initializer=keras.initializers.Orthogonal(seed=self._seeds()),
            seed=self._seeds(), name="gru")
        self.prior_hidden = dense(self.hidden_dim, activation, "prior_hidden")
        self.prior_logits = dense(self.latent_dim, None, "prior_logits")
        self.post_hidden = dense(self.hidden_dim, activation, "post_hidden")
        self.post_logits = dense(self.latent_dim, None, "post_logits")
        self.head_hidden = dense(self.hidden_dim, activation, "head_hidden")
        self.heads = self._heads()
        self.sampler = keras.random.SeedGenerator(self._seeds())
        self._finish_init((1, 1, self.feature_dim))

    # ------------------------------------------------------------- model
    def _probs(self, logits):
        """Unimix categorical probabilities and their logs, `(B, S, C)`."""
        logits = ops.reshape(logits, (-1, self.stochastic_dim,
                                      self.num_categoricals))
        probs = ((1.0 - self.unimix) * ops.softmax(logits, axis=-1)
                 + self.unimix / self.num_categoricals)
        return probs, ops.log(probs)

    def _sample(self, probs, log_probs):
        """Straight-through one-hot sample of `probs`, flattened."""
        flat = ops.reshape(log_probs, (-1, self.num_categoricals))
        idx = keras.random.categorical(flat, 1, seed=self.sampler)[:, 0]
        onehot = ops.reshape(ops.one_hot(idx, self.num_categoricals),
                             ops.shape(probs))
        onehot = ops.cast(onehot, probs.dtype)
        return onehot + probs - ops.stop_gradient(probs)

    def call(self, inputs, training=False):
        state = None
        if isinstance(inputs, dict):
            state = inputs.get("state")
            inputs = inputs["features"]
        x = ops.convert_to_tensor(inputs)
        steps = x.shape[1]
        if steps is None:
            raise ValueError("RSSMDynamics needs a static sequence length.")
        if state is None:  # zeros of shape (B, state_dim)
            state = ops.matmul(ops.zeros_like(x[:, 0, :1]),
                               ops.zeros((1, self.state_dim), x.dtype))
        h = state[:, : self.deterministic_dim]
        z = state[:, self.deterministic_dim:]
        embedded = self.embed(x)
        sg = ops.stop_gradient
        features, kls, kl_losses, states = [], [], [], []
        for t in range(steps):
            h, _ = self.gru(z, [h], training=training)
            prior, log_prior = self._probs(
                self.prior_logits(self.prior_hidden(h)))
            post, log_post = self._probs(self.post_logits(self.post_hidden(
                ops.concatenate([h, embedded[:, t]], axis=-1))))
            kl = ops.sum(post * (log_post - log_prior), axis=(1, 2))
            kl_dyn = ops.sum(sg(post) * (sg(log_post) - log_prior), axis=(1, 2))
            kl_rep = ops.sum(post * (log_post - sg(log_prior)), axis=(1, 2))
            kl_losses.append(
                self.kl_balance * ops.maximum(kl_dyn, self.free_nats)
                + (1.0 - self.kl_balance) * ops.maximum(kl_rep, self.free_nats))
            kls.append(kl)
            z = self._sample(post, log_post) if training else post
            z = ops.reshape(z, (-1, self.latent_dim))
            states.append(ops.concatenate([h, z], axis=-1))
            features.append(states[-1])
        outputs = self.heads(self.head_hidden(ops.stack(features, axis=1)))
        outputs["kl"] = ops.stack(kls, axis=1)
        outputs["kl_loss"] = ops.stack(kl_losses, axis=1)
        outputs["states"] = ops.stack(states, axis=1)
        return outputs

    # ------------------------------------------------------------- helpers
    @staticmethod
    def _batched(features, targets=None):
        x = np.asarray(features, np.float32)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        if targets is None:
            return x
        y = as_targets(targets)
        if squeeze:
            y = {k: v[None] for k, v in y.items()}
        return x, y

    def _run(self, x):
        """Inference pass over `x` `(B, T, F)` with NumPy outputs.

        Runs the compiled predict step on chunks of exactly `window` phases,
        carrying the state, so every sequence length reuses one compiled
        shape. The last chunk is zero-padded at the end; the model is causal,
        so the padding changes nothing before it and is cut off.
        """
        n, total = x.shape[:2]
        if total == 0:
            raise ValueError("RSSMDynamics needs at least one observed phase.")
        k = self.window
        pad = (-total) % k
        x = np.concatenate(
            [x, np.zeros((n, pad, x.shape[2]), np.float32)], axis=1)
        state = np.zeros((n, self.state_dim), np.float32)
        chunks = []
        for start in range(0, total + pad, k):
            out = self.predict_on_batch(
                {"features": x[:, start:start + k], "state": state})
            chunks.append({key: np.asarray(v) for key, v in out.items()})
            state = chunks[-1]["states"][:, -1]
        outputs = {key: np.concatenate([c[key] for c in chunks], axis=1)[:, :total]
                   for key in chunks[0]}
        self.last_kl = float(np.mean(outputs["kl"]))
        return outputs

    def predict_sequence(self, features_seq):
        """Per-step inference outputs (NumPy `(B, T, ...)`, the `call` dict)
        of `(T, F)` / `(B, T, F)` histories; sets `last_kl`."""
        return self._run(self._batched(features_seq))

    def predict_next(self, features_seq):
        """Outcome of the phase after the last one observed.

        Args:
            features_seq: `(T, feature_dim)` or `(B, T, feature_dim)`.

        Returns:
            Dict of NumPy arrays `(B, ...)` (B = 1 for a single sequence):
            the heads' outputs of the last step, its `"kl"` and `"state"`.
        """
        outputs = self._run(self._batched(features_seq))
        last = {k: outputs[k][:, -1] for k in HEAD_KEYS + ("kl",)}
        last["state"] = outputs["states"][:, -1]
        return last

    predict_outcome = predict_next

    def train_window(self, features_seq, targets_seq, steps=1,
                     batch_windows=None, rng=None):
        """Truncated-BPTT training on windows of `self.window` phases.

        Args:
            features_seq: `(T, F)` or `(B, T, F)`, `T >= self.window`.
            targets_seq: dict of `(T, ...)` / `(B, T, ...)`; step `t` holds
                the outcome of phase `t + 1`.
            steps: gradient steps; each samples `batch_windows` windows
                (default `self.batch_windows`; 0 means every window once, in
                order). The window start states come from one inference pass
                at the start of the call (stored-state truncated BPTT).
            rng: NumPy generator of the window sampling (default: the model's
                seeded one).

        Returns:
            The losses of the steps (each measured before its update).
        """
        x, y = self._batched(features_seq, targets_seq)
        k, (n_seq, total) = self.window, x.shape[:2]
        if total < k:
            raise ValueError(f"train_window needs at least window={k} phases. "
                             f"Received a sequence of {total}.")
        rng = self._rng if rng is None else rng
        count = self.batch_windows if batch_windows is None else int(batch_windows)
        states = self._run(x)["states"]
        starts = np.zeros((n_seq, 1, self.state_dim), np.float32)
        starts = np.concatenate([starts, states[:, :-1]], axis=1)
        losses = []
        for _ in range(int(steps)):
            if count > 0:
                seq = rng.integers(0, n_seq, count)
                pos = rng.integers(0, total - k + 1, count)
            else:
                seq, pos = np.divmod(np.arange(n_seq * (total - k + 1)),
                                     total - k + 1)
            span = pos[:, None] + np.arange(k)
            batch = {"features": x[seq[:, None], span],
                     "state": starts[seq, pos]}
            target = {key: v[seq[:, None], span] for key, v in y.items()}
            losses.append(float(self.train_on_batch(batch, target)))
        return losses

    def train(self, features, targets, steps=1):
        """Alias of `train_window` (same signature as the other networks)."""
        return self.train_window(features, targets, steps)

    def train_bootstrap(self, features, targets, steps, rng):
        """`train_window` with windows drawn by `rng` (a bootstrap of the
        windows; the sequence itself is kept whole for the state pass)."""
        return self.train_window(features, targets, steps, rng=rng)

    def loss_value(self, features, targets):
        """`outcome_loss` (with the KL term) of an inference pass, no update."""
        x, y = self._batched(features, targets)
        total = outcome_loss(y, self._run(x), kl_weight=self.kl_weight)
        return float(ops.convert_to_numpy(total))

    def get_config(self):
        return {**super().get_config(),
                "deterministic_dim": self.deterministic_dim,
                "stochastic_dim": self.stochastic_dim,
                "num_categoricals": self.num_categoricals,
                "hidden_dim": self.hidden_dim, "activation": self.activation,
                "kl_weight": self.kl_weight, "free_nats": self.free_nats,
                "kl_balance": self.kl_balance, "unimix": self.unimix,
                "window": self.window, "batch_windows": self.batch_windows}
