"""`Ensemble`: N dynamics networks of one kind, for epistemic uncertainty.

Disagreement. For each member output the ensemble reports the mean and the
standard deviation across members (`std`, per element). The scalar
normalized disagreement averages, over `coeffs`, `layer_scales` and
`loss_mean`, the ratio

    RMS over elements of the across-member std
    / RMS over elements and members of the members' outputs

(for `loss_mean` the denominator also includes the members' predicted
variance `exp(2 * loss_log_std)`, so disagreement small next to the predicted
noise counts as small). Each ratio lies in [0, 1] (a std never exceeds the
RMS), hence so does the disagreement; identical members give exactly 0.

Confidence: `exp(-disagreement / confidence_scale)`, in (0, 1]; 1 when the
members agree exactly, `exp(-1)` when the disagreement equals the scale.
"""

import dataclasses

import numpy as np

from keras_hybrid.dynamics.networks import HEAD_KEYS

_DISAGREEMENT_KEYS = ("coeffs", "layer_scales", "loss_mean")


def disagreement_to_confidence(disagreement, scale=0.1):
    """`exp(-disagreement / scale)`: a confidence in (0, 1]."""
    return float(np.exp(-max(float(disagreement), 0.0) / float(scale)))


@dataclasses.dataclass
class EnsemblePrediction:
    """What `Ensemble.predict` returns.

    Attributes:
        mean: dict output name -> members' mean `(B, ...)`.
        std: dict output name -> std across members `(B, ...)`.
        sample_disagreement: `(B,)` normalized disagreement per input.
        disagreement: float, the mean of `sample_disagreement`.
        members: list of the members' output dicts.
    """

    mean: dict
    std: dict
    sample_disagreement: np.ndarray
    disagreement: float
    members: list


class Ensemble:
    """Holds `members` (networks of one kind, built with different seeds).

    Args:
        members: the networks (each with `predict_outcome`,
            `train_bootstrap`).
        seed: seeds the bootstrap resampling of `train`.
        confidence_scale: the scale of `confidence`.
    """

    def __init__(self, members, seed=0, confidence_scale=0.1):
        members = list(members)
        if not members:
            raise ValueError("An Ensemble needs at least one member.")
        kinds = {type(m) for m in members}
        if len(kinds) > 1:
            raise ValueError(f"Ensemble members must be of one kind. "
                             f"Received: {sorted(k.__name__ for k in kinds)}")
        self.members = members
        self.seed = int(seed)
        self.confidence_scale = float(confidence_scale)
        self.last_disagreement = None
        self._train_calls = 0

    @classmethod
    def build(cls, factory, num_members=5, seed=0, **kwargs):
        """`Ensemble([factory(seed=seed + i) for i in range(num_members)])`."""
        return cls([factory(seed=seed + i) for i in range(int(num_members))],
                   seed=seed, **kwargs)

    def __len__(self):
        return len(self.members)

    def predict(self, features):
        """Members' mean outputs and their disagreement (module docstring)."""
        outs = [m.predict_outcome(features) for m in self.members]
        mean, std = {}, {}
        for key in HEAD_KEYS:
            stack = np.stack([np.asarray(o[key], np.float64) for o in outs])
            # Shifted by the first member: identical members give exactly 0.
            dev = stack - stack[0]
            mean_dev = dev.mean(0)
            mean[key] = stack[0] + mean_dev
            std[key] = np.sqrt(np.maximum((dev**2).mean(0) - mean_dev**2, 0.0))
        ratios = []
        for key in _DISAGREEMENT_KEYS:
            axes = tuple(range(1, std[key].ndim))
            spread = np.sqrt(np.mean(std[key]**2, axis=axes))
            power = np.mean(np.stack([np.asarray(o[key], np.float64)**2
                                      for o in outs]), axis=0)
            if key == "loss_mean":
                power = power + np.mean(np.stack(
                    [np.exp(2.0 * np.asarray(o["loss_log_std"], np.float64))
                     for o in outs]), axis=0)
            ratios.append(spread / (np.sqrt(np.mean(power, axis=axes)) + 1e-12))
        sample = np.mean(ratios, axis=0)
        self.last_disagreement = float(np.mean(sample))
        return EnsemblePrediction(
            {k: v.astype(np.float32) for k, v in mean.items()},
            {k: v.astype(np.float32) for k, v in std.items()},
            sample, self.last_disagreement, outs)

    def train(self, features, targets, steps=1):
        """Trains every member `steps` steps on its own bootstrap resample
        (rows for feed-forward members, windows for RSSM members), seeded by
        `(seed, member index, call count)`. Returns each member's losses."""
        call = self._train_calls
        self._train_calls += 1
        return [m.train_bootstrap(features, targets, steps,
                                  np.random.default_rng([self.seed, i, call]))
                for i, m in enumerate(self.members)]

    def confidence(self, disagreement=None):
        """`exp(-disagreement / confidence_scale)` in (0, 1]; by default of
        the last `predict`'s disagreement."""
        if disagreement is None:
            if self.last_disagreement is None:
                raise ValueError("confidence() needs a disagreement or a "
                                 "previous predict() call.")
            disagreement = self.last_disagreement
        return disagreement_to_confidence(disagreement, self.confidence_scale)
