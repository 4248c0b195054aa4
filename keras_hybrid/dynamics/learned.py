"""`LearnedPredictor`: an ensemble of Keras dynamics networks over a
low-rank basis of the weight trajectory.

After every FULL phase the predictor

1. flattens the phase's averaged weights (the trajectory's second-half
   average) and adds them to a `TrajectoryBasis` (PCA, power iteration or
   DMD over the last few phases), refitting it;
2. if the phase directly followed another FULL phase, records one training
   sample: the previous phase's features (loss curve, gradient statistics,
   per-layer update shares, and the basis coefficients of its per-step weight
   change) -> this phase's outcome (basis coefficients of its per-step weight
   change, per-group scales of what the basis misses, loss key points);
3. trains its ensemble (`linear`: closed-form ridge per bootstrap member,
   `mlp`: a few Adam steps per member, `rssm`: truncated BPTT over windows of
   consecutive samples).

Steps 1 (the refit) and 3 happen only after every
`predictor.refit_interval`-th phase (and as soon as there is enough to fit
for the first time); between refits the coefficients stay in the last fitted
basis, so every stored sample stays comparable.

A prediction decodes the members' mean coefficients back to a full per-step
weight change (times the group scales), adds the residual corrector's
similarity-weighted correction, and extrapolates from the averaged weights.
The confidence is the ensemble's agreement, calibrated online against
whether predictions would have moved the weights towards what the next FULL
phase actually did (`record_shadow`).
"""

import collections
import math

import numpy as np
from keras import ops

from keras_hybrid.dynamics import basis as basis_module
from keras_hybrid.dynamics import features as feat
from keras_hybrid.dynamics.base import PhaseOutcome
from keras_hybrid.dynamics.base import Predictor
from keras_hybrid.dynamics.basis import TrajectoryBasis
from keras_hybrid.dynamics.calibration import ConfidenceCalibrator
from keras_hybrid.dynamics.corrector import ResidualCorrector
from keras_hybrid.dynamics.ensemble import Ensemble
from keras_hybrid.dynamics.networks import LinearDynamics
from keras_hybrid.dynamics.networks import MLPDynamics
from keras_hybrid.dynamics.rssm import RSSMDynamics

KINDS = ("linear", "mlp", "rssm")
MAX_GROUPS = 8
NUM_KEYPOINTS = 3
MAX_SNAPSHOTS = 16
MIN_SNAPSHOTS = 4
SAMPLE_CAPACITY = 64
MIN_SAMPLES = 4
TRAIN_STEPS = 2
RSSM_WINDOW = 3
SCALE_RANGE = (0.05, 20.0)
_LOSS_RATE_UNIT = 100.0


def _optimizer_values(network):
    """The network's optimizer variables (built, so the count is fixed)."""
    optimizer = network.optimizer
    if not optimizer.built:
        optimizer.build(network.trainable_variables)
    return [np.asarray(ops.convert_to_numpy(v)) for v in optimizer.variables]


def _flatten(tensors):
    return np.concatenate(
        [np.asarray(ops.convert_to_numpy(t), np.float64).ravel()
         for t in tensors]
    )


class LearnedPredictor(Predictor):
    """Learned dynamics model (`predictor.type` linear, mlp or rssm).

    Args:
        config: the `HybridConfig`.
        trajectory: the runner's `WeightTrajectory`.
        kind: `"linear"`, `"mlp"` or `"rssm"`.

    Raises:
        ValueError: if the basis does not fit in
            `predictor_memory_budget_mb` or the encoded state does not fit in
            `predictor.feature_dim`.
    """

    def __init__(self, config, trajectory, kind):
        if kind not in KINDS:
            raise ValueError(
                f"`kind` must be one of {KINDS}. Received: kind={kind!r}"
            )
        p = config.predictor
        self.config = config
        self.kind = kind
        self.trajectory = trajectory
        self.variables = trajectory.variables
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.dtypes = [v.dtype for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dim = int(sum(self.sizes))
        self.rank = int(p.trajectory_rank)
        self.groups = feat.variable_groups(self.variables, MAX_GROUPS)
        self.slices = feat.group_slices(self.variables, self.groups)
        self.num_static = feat.NUM_SCALAR_FEATURES + len(self.groups)
        needed = self.num_static + self.rank
        if needed > p.feature_dim:
            raise ValueError(
                "`predictor.feature_dim` is smaller than the encoded training "
                f"state ({feat.NUM_SCALAR_FEATURES} loss and gradient values, "
                f"{len(self.groups)} per-layer shares and trajectory_rank="
                f"{self.rank} basis coefficients = {needed}). Raise "
                f"feature_dim to at least {needed}. "
                f"Received: feature_dim={p.feature_dim}"
            )
        self.max_snapshots = self._snapshot_budget(
            config.predictor_memory_budget_mb
        )
        self.basis = TrajectoryBasis(
            self.rank, max_snapshots=self.max_snapshots,
            method=p.trajectory_basis, seed=config.seed,
        )
        self.ensemble = Ensemble.build(
            self._factory(), num_members=p.ensemble_size, seed=config.seed,
            confidence_scale=p.confidence_scale,
        )
        self.calibrator = ConfidenceCalibrator(
            method=p.calibration, min_samples=10,
        )
        self.corrector = ResidualCorrector(capacity=SAMPLE_CAPACITY)
        self.samples = collections.deque(maxlen=SAMPLE_CAPACITY)
        self.refit_interval = int(p.refit_interval)
        # Phases observed since the last refit (basis and ensemble).
        self._since_refit = 0
        self._trained = False
        self._rng = np.random.default_rng(config.seed)
        # The last observed phase (flat numpy vectors and its features).
        self._last = None
        self._contiguous = False
        self._prediction = None
        self.raw_confidence = 0.0
        self.train_losses = []
        # The prediction being checked against the next FULL phase.
        self._shadow_raw = 0.0
        self._shadow_sample = None

    # ------------------------------------------------------------ setup
    def _snapshot_budget(self, budget_mb):
        """Snapshots that fit in the memory budget (float64 snapshots plus
        the basis, two phase vectors and one prediction)."""
        per_vector = 8.0 * self.dim / 2**20
        fits = int(budget_mb / per_vector) - (self.rank + 6)
        if fits < MIN_SNAPSHOTS:
            raise ValueError(
                f"The {self.kind} predictor needs at least "
                f"{MIN_SNAPSHOTS + self.rank + 6} weight vectors of "
                f"{per_vector:.2f} MB each ({self.dim} parameters) but "
                "`predictor_memory_budget_mb` allows fewer. Raise the budget "
                "or use predictor.type='drift'. "
                f"Received: predictor_memory_budget_mb={budget_mb}"
            )
        return min(fits, MAX_SNAPSHOTS)

    def _factory(self):
        p = self.config.predictor
        shape = (p.feature_dim, self.rank, len(self.groups), NUM_KEYPOINTS)
        if self.kind == "linear":
            return lambda seed: LinearDynamics(
                *shape, l2_regularization=p.l2_regularization, seed=seed)
        if self.kind == "mlp":
            return lambda seed: MLPDynamics(
                *shape, hidden_dims=p.hidden_dims, activation=p.activation,
                dropout=p.dropout, seed=seed)
        return lambda seed: RSSMDynamics(
            *shape, deterministic_dim=p.deterministic_dim,
            stochastic_dim=p.stochastic_dim,
            num_categoricals=p.num_categoricals, window=RSSM_WINDOW,
            seed=seed)

    # ------------------------------------------------------- encoding
    def _encode(self, last):
        """The network input of a phase record (zero-padded)."""
        x = np.zeros(self.config.predictor.feature_dim, np.float64)
        x[:self.num_static] = last["static"]
        if last["delta"] is not None and self.basis.fitted:
            norm = max(last["delta_norm"], 1e-30)
            x[self.num_static:self.num_static + self.rank] = (
                self.basis.encode(last["delta"]) / norm
            )
        return x

    def _targets(self, delta, reference_norm, losses, prev_losses, distance):
        """Outcome targets of a phase whose per-step change is `delta`."""
        coeffs = self.basis.encode(delta)
        decoded = self.basis.decode(coeffs)
        actual = feat.group_norms(delta, self.slices)
        approx = feat.group_norms(decoded, self.slices)
        scales = np.clip(actual / np.maximum(approx, 1e-30), *SCALE_RANGE)
        keypoints = feat.loss_keypoints(losses, NUM_KEYPOINTS)
        rate = (
            math.log(feat.tail_mean(losses))
            - math.log(feat.tail_mean(prev_losses))
        ) / distance
        loss = np.concatenate([keypoints[:-1], [_LOSS_RATE_UNIT * rate]])
        return {
            "coeffs": coeffs / reference_norm,
            "layer_scales": scales,
            "loss": loss,
        }

    # ------------------------------------------------------------- API
    def ready(self):
        return (
            self._last is not None
            and self._last["delta"] is not None
            and self.basis.fitted
            and len(self.samples) >= self._min_samples()
        )

    def _min_samples(self):
        return max(MIN_SAMPLES, RSSM_WINDOW + 1) if self.kind == "rssm" else (
            MIN_SAMPLES
        )

    def note_interruption(self):
        self._contiguous = False

    def update_from_observation(self, before, after, loss_trajectory):
        """Adds the FULL phase that just ended and trains the ensemble.

        Args:
            before: the `TrainingState` features at the phase start (unused:
                the phase's own losses carry that information).
            after: the `TrainingState` at the phase end.
            loss_trajectory: `(step, loss)` pairs of the phase.
        """
        del before
        tr = self.trajectory
        if tr.second_mean is None or len(loss_trajectory) < 2:
            self._contiguous = False
            return
        losses = np.asarray([l for _, l in loss_trajectory], np.float64)
        if not np.all(np.isfinite(losses)):
            self._contiguous = False
            return
        mean = _flatten(tr.second_mean)
        if not np.all(np.isfinite(mean)):
            self._contiguous = False
            return
        lag = tr.lag
        last = self._last
        delta = distance = None
        if last is not None and self._contiguous:
            distance = len(losses) + last["lag"] - lag
            if distance > 0:
                delta = (mean - last["mean"]) / distance
        self._since_refit += 1
        refit = self._since_refit >= self.refit_interval
        old_components = (
            self.basis.components.copy() if self.basis.fitted else None
        )
        self.basis.add(mean)
        if self.basis.num_snapshots >= 3 and (
            refit or not self.basis.fitted
        ):
            self.basis.fit()
            if old_components is not None:
                self._rotate_samples(self.basis.components @ old_components.T)
        if delta is not None and last["delta"] is not None and (
            self.basis.fitted
        ):
            norm = max(last["delta_norm"], 1e-30)
            self.samples.append({
                "x": self._encode(last),
                "y": self._targets(delta, norm, losses, last["losses"],
                                   distance),
            })
        grads = [g for s, g in after.grad_norms][-len(losses):]
        delta_norm = float(np.linalg.norm(delta)) if delta is not None else 0.0
        consistency = 0.0
        if delta is not None and last["delta"] is not None:
            consistency = float(
                delta @ last["delta"]
                / max(delta_norm * last["delta_norm"], 1e-30)
            )
        share = np.zeros(len(self.groups))
        if delta is not None and delta_norm > 0:
            share = feat.group_norms(delta, self.slices) ** 2 / delta_norm**2
        self._last = {
            "mean": mean, "lag": lag, "delta": delta,
            "delta_norm": delta_norm, "losses": losses,
            "static": feat.phase_features(
                losses, grads, after.step, consistency, delta_norm, share
            ),
        }
        self._contiguous = True
        self._prediction = None
        if len(self.samples) >= self._min_samples() and (
            refit or not self._trained
        ):
            self._train()
            self._trained = True
            self._since_refit = 0

    def _rotate_samples(self, rotation):
        """Re-expresses the stored coefficients in a refitted basis."""
        lo, hi = self.num_static, self.num_static + self.rank
        for sample in self.samples:
            sample["x"][lo:hi] = rotation @ sample["x"][lo:hi]
            sample["y"]["coeffs"] = rotation @ sample["y"]["coeffs"]

    def _dataset(self):
        x = np.stack([s["x"] for s in self.samples]).astype(np.float32)
        y = {k: np.stack([s["y"][k] for s in self.samples]).astype(np.float32)
             for k in ("coeffs", "layer_scales", "loss")}
        return x, y

    def _train(self):
        x, y = self._dataset()
        if self.kind == "linear":
            for member in self.ensemble.members:
                idx = self._rng.integers(0, len(x), len(x))
                member.fit_ridge(x[idx], {k: v[idx] for k, v in y.items()})
            return
        losses = self.ensemble.train(x, y, steps=TRAIN_STEPS)
        self.train_losses.append(float(np.mean([l[-1] for l in losses])))

    def _network_output(self):
        current = self._encode(self._last)[None].astype(np.float32)
        if self.kind == "rssm":
            history = [s["x"] for s in list(self.samples)[-2 * RSSM_WINDOW:]]
            current = np.stack(history + [current[0]]).astype(np.float32)
        return self.ensemble.predict(current)

    def _predict(self):
        """Mean outcome of the members for the next phase (cached)."""
        if self._prediction is None:
            out = self._network_output()
            self.raw_confidence = self.ensemble.confidence(out.disagreement)
            x = self._encode(self._last)
            coeffs = np.asarray(out.mean["coeffs"][0], np.float64)
            if len(self.corrector) > 0:
                coeffs = coeffs + self.corrector.correction(x)
            self._prediction = {
                "x": x,
                "coeffs": coeffs,
                "scales": np.asarray(out.mean["layer_scales"][0], np.float64),
                "rate": float(out.mean["loss_mean"][0][-1]) / _LOSS_RATE_UNIT,
                "rate_std": math.sqrt(
                    math.exp(2.0 * float(out.mean["loss_log_std"][0][-1]))
                    + float(out.std["loss_mean"][0][-1]) ** 2
                ) / _LOSS_RATE_UNIT,
            }
        return self._prediction

    def _per_step_delta(self, prediction):
        """The predicted per-step change as tensors (decoded once per
        prediction)."""
        if "per_step" in prediction:
            return prediction["per_step"]
        flat = self.basis.decode(prediction["coeffs"]) * self._last[
            "delta_norm"
        ]
        for (a, b), scale in zip(self.slices, prediction["scales"]):
            flat[a:b] *= np.clip(scale, *SCALE_RANGE)
        out, offset = [], 0
        for shape, size, dtype in zip(self.shapes, self.sizes, self.dtypes):
            out.append(ops.convert_to_tensor(
                flat[offset:offset + size].reshape(shape), dtype=dtype))
            offset += size
        prediction["per_step"] = out
        return out

    def predict_phase_outcome(self, state, phase_length):
        prediction = self._predict()
        per_step = self._per_step_delta(prediction)
        tr = self.trajectory
        level = math.log(feat.tail_mean(self._last["losses"]))
        ahead = phase_length + tr.lag
        centre = level + prediction["rate"] * ahead
        spread = 2.0 * prediction["rate_std"] * ahead
        return PhaseOutcome(
            targets=lambda scale: tr.target_along(
                per_step, tr.lag + scale * phase_length
            ),
            per_step_delta=per_step,
            start=list(tr.second_mean),
            predicted_loss=math.exp(centre),
            loss_bounds=(math.exp(centre - spread), math.exp(centre + spread)),
        )

    def prediction_confidence(self, state):
        del state
        if not self.ready():
            return 0.0
        self._predict()
        return float(self.calibrator.calibrate(self.raw_confidence))

    def record_outcome(self, accepted, predicted_loss=None, actual_loss=None):
        del accepted, predicted_loss, actual_loss
        self._contiguous = False

    def record_shadow(self, confidence, success, residual=None):
        """Learns from a prediction checked against the FULL phase that
        followed it: calibrates the confidence and stores the residual.

        Args:
            confidence: the (calibrated) confidence given to the prediction.
            success: whether following the prediction would have moved the
                weights closer to where the FULL phase took them.
            residual: unused (the residual is computed here in basis space).
        """
        del confidence, residual
        self.calibrator.update(self._shadow_raw, bool(success))
        if self._shadow_sample is not None and self.samples:
            x, coeffs = self._shadow_sample
            actual = self.samples[-1]["y"]["coeffs"]
            self.corrector.add(x, actual - coeffs)

    def begin_shadow(self):
        """Remembers the raw confidence and coefficients of the prediction
        the runner is about to check against the next FULL phase."""
        prediction = self._predict()
        self._shadow_raw = self.raw_confidence
        self._shadow_sample = (
            prediction["x"],
            prediction["coeffs"],
        )

    def calibration_error(self):
        """Expected calibration error of the calibrated confidences."""
        return self.calibrator.ece() if self.calibrator.num_samples else None

    # ---------------------------------------------------------- state
    def get_state(self):
        basis = self.basis
        basis_state = {
            "config": {"rank": basis.rank,
                       "max_snapshots": basis.max_snapshots,
                       "method": basis.method, "seed": basis.seed,
                       "power_iterations": basis.power_iterations},
            "scalars": {n: getattr(basis, n) for n in basis_module._SCALARS},
            "arrays": [n for n in basis_module._ARRAYS
                       if getattr(basis, n) is not None],
        }
        last = None
        if self._last is not None:
            last = {k: v for k, v in self._last.items()
                    if k not in ("mean", "delta")}
            last["losses"] = self._last["losses"].tolist()
            last["static"] = self._last["static"].tolist()
            last["has_delta"] = self._last["delta"] is not None
        return {
            "kind": self.kind,
            "basis": basis_state,
            "last": last,
            "contiguous": self._contiguous,
            "samples": [
                {"x": s["x"].tolist(),
                 "y": {k: v.tolist() for k, v in s["y"].items()}}
                for s in self.samples
            ],
            "calibrator": self.calibrator.get_state(),
            "corrector": self.corrector.get_state(),
            "rng": self._rng.bit_generator.state,
            "raw_confidence": self.raw_confidence,
            "shadow_raw": self._shadow_raw,
            "shadow_sample": None if self._shadow_sample is None else [
                self._shadow_sample[0].tolist(),
                self._shadow_sample[1].tolist(),
            ],
            "train_losses": list(self.train_losses),
            "since_refit": self._since_refit,
            "trained": self._trained,
            "ensemble_calls": self.ensemble._train_calls,
            "member_rngs": [
                m._rng.bit_generator.state for m in self.ensemble.members
                if self.kind == "rssm"
            ],
        }

    def set_state(self, state):
        if state.get("kind") != self.kind:
            raise ValueError(
                f"The checkpoint holds a {state.get('kind')!r} predictor, the "
                f"config asks for {self.kind!r}. "
                f"Received: predictor.type={self.kind!r}"
            )
        self._basis_state = state["basis"]
        self._last_state = state["last"]
        self._contiguous = state["contiguous"]
        self.samples.clear()
        for s in state["samples"]:
            self.samples.append({
                "x": np.asarray(s["x"], np.float64),
                "y": {k: np.asarray(v, np.float64)
                      for k, v in s["y"].items()},
            })
        self.calibrator.set_state(state["calibrator"])
        self.corrector.set_state(state["corrector"])
        self._rng.bit_generator.state = state["rng"]
        self.raw_confidence = state["raw_confidence"]
        self._shadow_raw = state["shadow_raw"]
        shadow = state["shadow_sample"]
        self._shadow_sample = None if shadow is None else (
            np.asarray(shadow[0], np.float64),
            np.asarray(shadow[1], np.float64),
        )
        self.train_losses = list(state["train_losses"])
        self._since_refit = int(state.get("since_refit", 0))
        self._trained = bool(state.get(
            "trained", len(self.samples) >= self._min_samples()))
        self.ensemble._train_calls = state["ensemble_calls"]
        self._member_rng_states = state["member_rngs"]
        self._prediction = None

    def get_arrays(self):
        """The large arrays: snapshots, basis, last phase, network weights."""
        basis = self.basis
        snapshots = list(basis._snapshots)
        arrays = [np.stack(snapshots) if snapshots else np.zeros((0, 0))]
        arrays += [getattr(basis, n) for n in basis_module._ARRAYS
                   if getattr(basis, n) is not None]
        last = self._last or {}
        arrays.append(last.get("mean", np.zeros(0)))
        delta = last.get("delta")
        arrays.append(np.zeros(0) if delta is None else delta)
        for member in self.ensemble.members:
            arrays.extend(member.get_weights())
            arrays.extend(_optimizer_values(member))
        return arrays

    def set_arrays(self, arrays):
        arrays = list(arrays)
        state = self._basis_state
        basis = self.basis
        basis.__init__(**state["config"])
        basis._snapshots = [np.asarray(a, np.float64) for a in arrays.pop(0)]
        for name in state["arrays"]:
            setattr(basis, name, np.asarray(arrays.pop(0), np.float64))
        for name, value in state["scalars"].items():
            setattr(basis, name, value)
        mean, delta = arrays.pop(0), arrays.pop(0)
        if self._last_state is not None:
            last = dict(self._last_state)
            last["mean"] = mean
            last["delta"] = delta if last.pop("has_delta") else None
            last["losses"] = np.asarray(last["losses"], np.float64)
            last["static"] = np.asarray(last["static"], np.float64)
            self._last = last
        for member in self.ensemble.members:
            count = len(member.get_weights())
            member.set_weights(arrays[:count])
            arrays = arrays[count:]
            optimizer = member.optimizer
            if not optimizer.built:
                optimizer.build(member.trainable_variables)
            count = len(optimizer.variables)
            for variable, value in zip(optimizer.variables, arrays[:count]):
                variable.assign(value)
            arrays = arrays[count:]
        if self.kind == "rssm":
            for member, state in zip(self.ensemble.members,
                                     self._member_rng_states):
                member._rng.bit_generator.state = state

    def memory_mb(self):
        networks = sum(
            w.size * 4 for m in self.ensemble.members for w in m.get_weights()
        )
        last = 0.0
        if self._last is not None:
            last = 8.0 * self.dim * (2 if self._last["delta"] is not None
                                     else 1)
        samples = len(self.samples) * 8.0 * (
            self.config.predictor.feature_dim + self.rank * 2 + 16
        )
        return (self.basis.memory_mb() + self.calibrator.memory_mb()
                + self.corrector.memory_mb()
                + (networks + last + samples) / 2**20)
