"""`HybridConfig`: the configuration tree, its validation, YAML and presets.

Every field is validated when the config is built (`HybridConfig(...)`,
`from_dict`, `from_yaml`, `preset`), so a bad value fails before training
starts, with a `ValueError` naming the field, the allowed values and the value
received.
"""

import copy
import dataclasses
import difflib
import os

import yaml

from keras_hybrid.validators import check_bool
from keras_hybrid.validators import check_choice
from keras_hybrid.validators import check_int
from keras_hybrid.validators import check_number
from keras_hybrid.validators import check_optional_str
from keras_hybrid.validators import check_range

PREDICTOR_TYPES = ("drift", "linear", "mlp", "rssm", "nesterov", "holt")
BASIS_METHODS = ("pca", "power", "dmd")
CALIBRATION_METHODS = ("temperature", "binning")
SHRINKAGE_MODES = ("tensor", "coordinate", "none")
HORIZON_POLICIES = ("confidence", "ucb1", "linucb")
PREDICT_MODES = ("jump", "per_step")
PRESET_NAMES = (
    "default", "conservative", "balanced", "aggressive", "outer", "plain",
    "finetune",
)


@dataclasses.dataclass
class PredictorConfig:
    """The dynamics model that predicts PREDICT phases.

    Args:
        type: `"drift"` (extends the phase's averaged trajectory along its
            drift; no learned model), a long-window estimator with nothing
            learned: `"nesterov"` (outer Nesterov momentum over whole FULL
            phase displacements) or `"holt"` (two exponential moving
            averages of the weights, time constants L and 4L), or a learned
            ensemble over the trajectory basis: `"linear"` (closed-form
            ridge), `"mlp"` or `"rssm"` (GRU + categorical latent, trained
            by truncated BPTT).
        trajectory_rank: rank of the low-rank weight-trajectory basis.
        trajectory_basis: how the basis is fitted: `"pca"`, `"power"`
            (warm-started power iteration) or `"dmd"`.
        feature_dim: size of the encoded training-state feature vector.
        l2_regularization: ridge penalty of the linear model.
        hidden_dims: hidden layer sizes of the MLP predictor.
        activation: activation of the MLP predictor.
        dropout: dropout rate of the MLP predictor, in [0, 1).
        deterministic_dim: GRU state size of the RSSM predictor.
        stochastic_dim: number of categorical latents of the RSSM predictor.
        num_categoricals: classes per categorical latent of the RSSM.
        ensemble_size: members of the ensemble whose disagreement gives the
            confidence.
        confidence_scale: raw confidence is `exp(-disagreement / scale)`.
        calibration: online calibration of the confidence:
            `"temperature"` or `"binning"`.
        jump_scales: candidate multiples of the phase length tried by the
            forward line search before a jump is accepted. `0.0` is the
            denoised current point (the phase's averaged weights moved to the
            current step along the predicted change), without extrapolation.
        refit_interval: learned predictors (`linear`, `mlp`, `rssm`) refit
            their trajectory basis and retrain their ensemble after every
            `refit_interval`-th FULL phase (1: after every phase). Between
            refits they still record every phase and predict from it with
            the networks they have. Refitting is most of their overhead, a
            fixed cost per phase: raise this where the model's steps are
            cheap. Ignored by `drift`.
        momentum: the outer momentum `mu` of `"nesterov"`, in [0, 1).
        outer_learning_rate: the outer step size `eta` of `"nesterov"`,
            in (0, 10]: a jump adds `eta * mu * b` (scaled to the skipped
            steps' learning rates) to the weights.
        min_agreement: `"nesterov"` and `"holt"` jump only while the cosine
            between the last FULL phase's drift and the long-window velocity
            is at least this (a drift-to-noise gate), in [-1, 1].
        min_lr_fraction: `"nesterov"` and `"holt"` never jump while the
            learning rate rises (warmup) or once the rate at the end of the
            jump falls below this fraction of the largest rate seen (a
            schedule's cooldown), in [0, 1).
        shrinkage: how `"holt"` and `"nesterov"` shrink their velocity
            before a jump: `"tensor"` (one factor per tensor: the cosine
            between the last phase's drift and the velocity (`"holt"`) or
            the momentum buffer (`"nesterov"`), clipped to [0, 1]), `"none"`,
            or, for `"holt"` only,
            `"coordinate"` (one factor per weight, the positive-part
            James-Stein factor `max(0, 1 - (s2 / n) / mu^2)` of that
            weight's phase drifts, from their exponential mean `mu` and
            variance `s2` over about `n` phases).
        min_progress: `"nesterov"` and `"holt"` accept a jump only if its
            checked loss falls by at least this share of what training the
            skipped steps would bring (the log-linear trend of the recent
            FULL losses, extrapolated over the skipped steps' learning
            rates), in [0, 2]; 0 accepts any decrease.
    """

    type: str = "drift"
    trajectory_rank: int = 4
    trajectory_basis: str = "pca"
    feature_dim: int = 32
    l2_regularization: float = 1e-3
    hidden_dims: tuple = (64, 64)
    activation: str = "relu"
    dropout: float = 0.0
    deterministic_dim: int = 64
    stochastic_dim: int = 8
    num_categoricals: int = 8
    ensemble_size: int = 3
    confidence_scale: float = 0.25
    calibration: str = "temperature"
    jump_scales: tuple = (1.0, 0.5, 0.25, 0.0)
    refit_interval: int = 1
    momentum: float = 0.5
    outer_learning_rate: float = 1.0
    min_agreement: float = 0.1
    min_lr_fraction: float = 0.2
    shrinkage: str = "tensor"
    min_progress: float = 0.0

    def __post_init__(self):
        self.hidden_dims = tuple(self.hidden_dims)
        self.jump_scales = tuple(self.jump_scales)
        o = "predictor."
        check_choice("type", self.type, PREDICTOR_TYPES, owner=o)
        check_int("trajectory_rank", self.trajectory_rank, 1, 64, owner=o)
        check_int("feature_dim", self.feature_dim, 1, 4096, owner=o)
        check_number("l2_regularization", self.l2_regularization, 0.0, owner=o)
        if not self.hidden_dims:
            raise ValueError(
                "`predictor.hidden_dims` must not be empty. "
                f"Received: hidden_dims={self.hidden_dims!r}"
            )
        for dim in self.hidden_dims:
            check_int("hidden_dims", dim, 1, 65536, owner=o)
        check_choice(
            "activation", self.activation,
            ("relu", "gelu", "tanh", "silu", "elu", "sigmoid"), owner=o,
        )
        check_number("dropout", self.dropout, 0.0, owner=o)
        check_range("dropout", self.dropout, None, 0.99, owner=o)
        check_int(
            "deterministic_dim", self.deterministic_dim, 1, 4096, owner=o,
        )
        check_int("stochastic_dim", self.stochastic_dim, 1, 1024, owner=o)
        check_int("num_categoricals", self.num_categoricals, 2, 1024, owner=o)
        check_int("ensemble_size", self.ensemble_size, 1, 32, owner=o)
        check_int("refit_interval", self.refit_interval, 1, 10000, owner=o)
        check_choice(
            "trajectory_basis", self.trajectory_basis, BASIS_METHODS, owner=o,
        )
        check_number(
            "confidence_scale", self.confidence_scale, 0.0, low_open=True,
            owner=o,
        )
        check_choice(
            "calibration", self.calibration, CALIBRATION_METHODS, owner=o,
        )
        if not self.jump_scales:
            raise ValueError(
                "`predictor.jump_scales` must not be empty. "
                f"Received: jump_scales={self.jump_scales!r}"
            )
        for scale in self.jump_scales:
            check_number("jump_scales", scale, 0.0, 10.0, owner=o)
        check_number("momentum", self.momentum, 0.0, owner=o)
        check_range("momentum", self.momentum, None, 0.999, owner=o)
        check_number(
            "outer_learning_rate", self.outer_learning_rate, 0.0, 10.0,
            low_open=True, owner=o,
        )
        check_number("min_agreement", self.min_agreement, -1.0, 1.0, owner=o)
        check_number("min_lr_fraction", self.min_lr_fraction, 0.0, owner=o)
        check_range(
            "min_lr_fraction", self.min_lr_fraction, None, 0.999, owner=o,
        )
        check_choice("shrinkage", self.shrinkage, SHRINKAGE_MODES, owner=o)
        if self.type == "nesterov" and self.shrinkage == "coordinate":
            raise ValueError(
                "`predictor.shrinkage='coordinate'` is for `type='holt'`; "
                "`'nesterov'` takes `'tensor'` or `'none'`. Received: "
                f"predictor.type={self.type!r}, "
                f"predictor.shrinkage={self.shrinkage!r}"
            )
        check_number("min_progress", self.min_progress, 0.0, 2.0, owner=o)


@dataclasses.dataclass
class DivergenceConfig:
    """Thresholds of the divergence monitor.

    Args:
        loss_sigma: the monitor's loss rule on the steps with a backward
            pass: a loss more than this many standard deviations above its
            running mean on two checked steps in a row is a divergence
            warning (the recovery actions follow: forced FULL phases, a
            rollback). `HybridConfig.divergence_threshold` is the other
            loss rule: it judges one per-step prediction's forward losses
            against the last FULL phase and only ends that prediction.
        grad_explosion_factor: gradient norm above this multiple of its
            running baseline is an explosion.
        grad_vanishing_factor: gradient norm below this multiple of its
            running baseline is vanishing.
        prediction_error: relative error of a predicted loss above which the
            prediction counts as wrong.
        oscillation_sign_changes: more sign changes of the loss difference
            than this within `oscillation_window` steps is an oscillation
            (only swings above twice the loss's standard deviation count).
        oscillation_window: window of the oscillation check, in steps.
        check_interval_steps: how often, in steps, the per-step loss and
            gradient norm (kept on the device by the compiled steps) are read
            by the host and checked by the monitor; every step's values are
            checked, up to this many steps late. They are also read at the
            end of every phase. A read between phase ends leaves the newest
            step's values on the device (reading them would wait for that
            step), so 1 reads every step's values one step late. A
            non-finite update is refused inside the compiled step whatever
            this is.
        max_consecutive_failures: rejected predictions in a row after which
            prediction pauses for `cooldown_phases` FULL phases.
        cooldown_phases: FULL phases to run after repeated failures.
    """

    loss_sigma: float = 3.0
    grad_explosion_factor: float = 10.0
    grad_vanishing_factor: float = 0.01
    prediction_error: float = 0.2
    oscillation_sign_changes: int = 5
    oscillation_window: int = 10
    check_interval_steps: int = 10
    max_consecutive_failures: int = 3
    cooldown_phases: int = 2

    def __post_init__(self):
        o = "divergence."
        check_number(
            "loss_sigma", self.loss_sigma, 0.0, low_open=True, owner=o,
        )
        check_number(
            "grad_explosion_factor", self.grad_explosion_factor, 1.0,
            low_open=True, owner=o,
        )
        check_number(
            "grad_vanishing_factor", self.grad_vanishing_factor, 0.0, 1.0,
            low_open=True, owner=o,
        )
        check_number(
            "prediction_error", self.prediction_error, 0.0, low_open=True,
            owner=o,
        )
        check_int(
            "oscillation_sign_changes", self.oscillation_sign_changes, 1,
            owner=o,
        )
        check_int("oscillation_window", self.oscillation_window, 2, owner=o)
        check_int(
            "check_interval_steps", self.check_interval_steps, 1, owner=o,
        )
        check_int(
            "max_consecutive_failures", self.max_consecutive_failures, 1,
            owner=o,
        )
        check_int("cooldown_phases", self.cooldown_phases, 0, owner=o)


@dataclasses.dataclass
class MetricsConfig:
    """What the callback logs.

    Args:
        log_to_progbar: add `phase`, `confidence`, `backward_reduction` and
            `predicted_loss` to every batch's logs, so that the progress bar
            and every callback (`CSVLogger`, `TensorBoard`) see them. When
            False (default) the progress bar shows only the model's metrics
            and `History` still receives the four entries once per epoch
            (see `log_to_history`).
        log_to_history: add the four entries, once per epoch, to the
            `History` that `fit()` returns (when `log_to_progbar` is False;
            set both False for exactly Keras' keys).
        report_path: if set, the JSON training report is written there at the
            end of training.
    """

    log_to_progbar: bool = False
    log_to_history: bool = True
    report_path: str = None

    def __post_init__(self):
        check_bool("log_to_progbar", self.log_to_progbar, owner="metrics.")
        check_bool("log_to_history", self.log_to_history, owner="metrics.")
        check_optional_str("report_path", self.report_path, owner="metrics.")


@dataclasses.dataclass
class CheckpointConfig:
    """Periodic checkpoints.

    Args:
        directory: where checkpoints go; `None` disables periodic saving.
        save_interval: save every this many steps (0: never).
        keep_last_n: how many checkpoints to keep.
        include_predictor: save the dynamics model's state too.
    """

    directory: str = None
    save_interval: int = 0
    keep_last_n: int = 3
    include_predictor: bool = True

    def __post_init__(self):
        o = "checkpoint."
        check_optional_str("directory", self.directory, owner=o)
        check_int("save_interval", self.save_interval, 0, owner=o)
        check_int("keep_last_n", self.keep_last_n, 1, owner=o)
        check_bool("include_predictor", self.include_predictor, owner=o)
        if self.save_interval and not self.directory:
            raise ValueError(
                "`checkpoint.directory` must be set when "
                "`checkpoint.save_interval` > 0. "
                f"Received: directory={self.directory!r}, "
                f"save_interval={self.save_interval}"
            )


@dataclasses.dataclass
class LayerwiseConfig:
    """Layer-wise freezing by measurement (see `keras_hybrid.layerwise`):
    the lowest trainable layer group is frozen once undoing its recent
    movement no longer raises the loss of fresh batches.

    Args:
        enabled: run the check.
        groups: `"auto"`, layer names (or lists of names) from the input
            (see `LayerGroups`).
        num_groups: the number of groups `"auto"` makes.
        window: steps between two checks of a group (its movement over one
            window is what a check undoes).
        check_batches: batches per check, each measured at the current and
            the reverted weights before it is trained on.
        tolerance: relative loss increase from undoing a window of movement
            that still counts as "bought nothing".
        std_errors: standard errors of the check batches' mean difference
            added to it before it is compared with `tolerance`: a group
            counts as settled only when the evidence says so beyond the
            batch-to-batch noise (0: the mean alone decides).
        patience: checks in a row that must find the group settled.
        start_fraction: no group is frozen before this share of the run.
        min_work: the least share of a step's backward work a freeze must
            save: the lowest trainable group is checked (and frozen)
            together with the groups above it until they reach it, so that
            a group whose backward costs almost nothing (an embedding
            lookup) is not frozen on its own.
    """

    enabled: bool = False
    groups: object = "auto"
    num_groups: int = 4
    window: int = 50
    check_batches: int = 4
    tolerance: float = 0.01
    std_errors: float = 2.0
    patience: int = 2
    start_fraction: float = 0.2
    min_work: float = 0.05

    def __post_init__(self):
        o = "layerwise."
        check_bool("enabled", self.enabled, owner=o)
        if not (self.groups == "auto" or isinstance(self.groups, list)
                or callable(self.groups)):
            raise ValueError(
                "`layerwise.groups` must be 'auto', a list of layer names "
                "(or of lists of names) or a function layer -> key. "
                f"Received: groups={self.groups!r}"
            )
        check_int("num_groups", self.num_groups, 2, owner=o)
        check_int("window", self.window, 1, owner=o)
        check_int("check_batches", self.check_batches, 1, owner=o)
        check_number("tolerance", self.tolerance, 0.0, 1.0, owner=o)
        check_number("std_errors", self.std_errors, 0.0, 10.0, owner=o)
        check_int("patience", self.patience, 1, owner=o)
        check_number("start_fraction", self.start_fraction, 0.0, 1.0, owner=o)
        check_number("min_work", self.min_work, 0.0, 1.0, owner=o)


_SECTIONS = {
    "predictor": PredictorConfig,
    "divergence": DivergenceConfig,
    "metrics": MetricsConfig,
    "checkpoint": CheckpointConfig,
    "layerwise": LayerwiseConfig,
}


@dataclasses.dataclass
class HybridConfig:
    """Configuration of predictive hybrid training.

    Args:
        warmup_steps: plain training steps before the first FULL phase.
        full_steps: length of a FULL phase, in steps.
        max_predict_steps: upper bound of a PREDICT phase, in steps.
        min_predict_steps: lower bound of a PREDICT phase, in steps.
        confidence_threshold: prediction starts only at a confidence at or
            above this, in [0, 1].
        divergence_threshold: standard deviations above the last FULL
            phase's loss mean at which a per-step prediction
            (`predict_mode="per_step"`) is stopped: one forward-only loss
            above it ends the PREDICT phase and restores its start (the
            event's signal is `"divergence_threshold"`). A separate rule
            from `divergence.loss_sigma`, which judges the trained steps'
            losses against their running statistics, twice in a row, and
            calls for a recovery action: a prediction's loss is read once
            per step and undone exactly, so one is enough.
        correction_interval: inside PREDICT, run one real gradient step every
            this many steps (0: never).
        correct_steps: length of the CORRECT phase that follows PREDICT.
        predict_mode: `"jump"` (one whole-phase weight change, verified by
            forward checks, then no compute for the rest of the phase) or
            `"per_step"` (the predicted per-step change applied on every
            step, with a forward loss check on each batch).
        validation_samples: batches used by the forward checks of a jump.
        train_check_batches: the batches a jump's forward checks consumed
            are trained on after an accepted jump too (from the jumped
            weights, at the end of the PREDICT phase), not only after a
            rejection: a jump then skips no data, only the backward passes
            of the phase's batches after the checks. With it,
            `min_predict_steps` may equal `validation_samples` (every batch
            gets its backward pass: outer steps that skip nothing, as in
            SNOO); without it (default), the checked batches of an accepted
            jump are skipped like the rest of the phase.
        check_jumps: whether a jump is judged by forward checks (jump
            mode). With `False` it is applied as its phase starts, at the
            first of `predictor.jump_scales`, unless it is non-finite; no
            batch is held back (with `train_check_batches` its first
            `validation_samples` batches are trained on as they come, from
            the jumped weights; without it they are skipped with the rest
            of the phase): outer steps that cost no forward pass, for
            estimators whose check would only record.
        loss_tolerance: a jump is accepted if the lowest checked loss of its
            scales is below `(1 + loss_tolerance)` times the loss of the
            weights it replaces (0: it must lower the loss; a tolerance
            trades a little loss for skipped steps).
        horizon_decay: factor applied to the horizon for each consecutive
            PREDICT phase (1.0: no penalty).
        horizon_policy: how PREDICT lengths are chosen: `"confidence"`
            (grows with the confidence), `"ucb1"` or `"linucb"` (a bandit
            over lengths from `min_predict_steps` to `max_predict_steps`,
            rewarded by backward passes saved minus the loss penalty).
        target_quality: if set, the confidence threshold is re-tuned after
            every prediction to the smallest one whose predictions were
            accepted at least this often (`auto_tune_confidence`).
        adaptive_correction: adapt `correction_interval` to the variance of
            the predictor's residuals (within `[max(2, interval / 4),
            4 * interval]`).
        finish_with_prediction: when the rest of the run is at most
            `max_predict_steps` long, end it with a PREDICT phase (checked
            like any other) instead of FULL steps.
        predictor_memory_budget_mb: memory the dynamics model may use.
        collect_metrics: collect predictor overhead timings for the report.
        enable_prediction: `False` never starts a PREDICT phase: every step
            runs its backward pass while everything else (statistics,
            monitor, predictor fitting, shadow checks, quiet phases,
            checkpoints) runs as usual. This measures what the machinery
            costs on a model where prediction never pays.
        max_quiet_phases: while prediction does not pay, the FULL phases
            that fit the predictor come in windows of two, separated by
            "quiet" FULL phases that only train (no trajectory sums, no
            predictor fitting, no shadow check; the rollback point moves
            only at the end of such a stretch): 1 after the first window
            that ended without an accepted prediction, then 2, 4, ... up to
            this many. An accepted prediction ends the back-off. `0`: every
            FULL phase fits the predictor.
        outer_patience: stop making jumps (the `outer` preset's outer
            steps) for the rest of the run once they make the loss worse
            (see `keras_hybrid.control.outer_guard`): once this many
            validated epochs with jumps in them end without a new best
            held-out loss (Keras' `val_loss`). Training then goes on as
            plain `fit()`. `0`: never stop.
        outer_check_batches: without validation data, let the check-batch
            loss stop the jumps too (with `outer_patience`): once the
            batches trained right after them have, `outer_patience` more
            times than not, a loss over 10% above the loss before them. Off
            by default: that loss rises where the jumps help too.
        seed: seed of the callback's own randomness.
        freeze: a freeze schedule as a dict (`FreezeSchedule.get_config()`
            output: `events`, `groups`, `num_groups`, `unit`,
            `unfreeze_every`), or `None`. A `FreezeSchedule` passed to the
            callback takes its place.
        predictor, divergence, metrics, checkpoint, layerwise: the
            sub-configs.

    Example:

    ```python
    config = HybridConfig.preset("balanced")
    config = HybridConfig.from_yaml("configs/balanced.yaml")
    config = HybridConfig(warmup_steps=50, predictor={"type": "linear"})
    ```
    """

    warmup_steps: int = 100
    full_steps: int = 20
    max_predict_steps: int = 80
    min_predict_steps: int = 10
    confidence_threshold: float = 0.85
    divergence_threshold: float = 3.0
    correction_interval: int = 0
    correct_steps: int = 2
    predict_mode: str = "jump"
    validation_samples: int = 4
    train_check_batches: bool = False
    check_jumps: bool = True
    loss_tolerance: float = 0.0
    horizon_decay: float = 0.9
    horizon_policy: str = "confidence"
    target_quality: object = None
    adaptive_correction: bool = True
    finish_with_prediction: bool = False
    predictor_memory_budget_mb: float = 50.0
    collect_metrics: bool = True
    enable_prediction: bool = True
    max_quiet_phases: int = 8
    outer_patience: int = 0
    outer_check_batches: bool = False
    seed: int = 0
    freeze: object = None
    predictor: PredictorConfig = dataclasses.field(
        default_factory=PredictorConfig
    )
    divergence: DivergenceConfig = dataclasses.field(
        default_factory=DivergenceConfig
    )
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = dataclasses.field(
        default_factory=CheckpointConfig
    )
    layerwise: LayerwiseConfig = dataclasses.field(
        default_factory=LayerwiseConfig
    )

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _build(cls, value, prefix=f"{name}."))
            elif not isinstance(value, cls):
                raise ValueError(
                    f"`{name}` must be a dict or a {cls.__name__}. "
                    f"Received: {name}={value!r}"
                )
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("full_steps", self.full_steps, 2)
        check_int("max_predict_steps", self.max_predict_steps, 1)
        check_int("min_predict_steps", self.min_predict_steps, 1)
        if self.min_predict_steps > self.max_predict_steps:
            raise ValueError(
                "`min_predict_steps` must be <= `max_predict_steps`. "
                f"Received: min_predict_steps={self.min_predict_steps}, "
                f"max_predict_steps={self.max_predict_steps}"
            )
        check_number(
            "confidence_threshold", self.confidence_threshold, 0.0, 1.0,
        )
        check_number(
            "divergence_threshold", self.divergence_threshold, 0.0,
            low_open=True,
        )
        check_int("correction_interval", self.correction_interval, 0)
        check_int("correct_steps", self.correct_steps, 1)
        check_choice("predict_mode", self.predict_mode, PREDICT_MODES)
        check_int("validation_samples", self.validation_samples, 1)
        check_bool("train_check_batches", self.train_check_batches)
        check_bool("check_jumps", self.check_jumps)
        if self.predict_mode == "jump" and self.train_check_batches:
            if self.validation_samples > self.min_predict_steps:
                raise ValueError(
                    "`validation_samples` must be <= `min_predict_steps` in "
                    "jump mode with `train_check_batches` (the checks run "
                    "on the phase's first batches). "
                    f"Received: validation_samples={self.validation_samples}"
                    f", min_predict_steps={self.min_predict_steps}"
                )
        elif (
            self.predict_mode == "jump"
            and self.validation_samples >= self.min_predict_steps
        ):
            raise ValueError(
                "`validation_samples` must be < `min_predict_steps` in jump "
                "mode (the checks run on the phase's first batches; "
                "`train_check_batches=True` allows equal). "
                f"Received: validation_samples={self.validation_samples}, "
                f"min_predict_steps={self.min_predict_steps}"
            )
        check_number("loss_tolerance", self.loss_tolerance, 0.0, 1.0)
        check_number(
            "horizon_decay", self.horizon_decay, 0.0, 1.0, low_open=True,
        )
        check_number(
            "predictor_memory_budget_mb", self.predictor_memory_budget_mb, 0.0,
            low_open=True,
        )
        check_choice("horizon_policy", self.horizon_policy, HORIZON_POLICIES)
        if self.target_quality is not None:
            check_number("target_quality", self.target_quality, 0.0, 1.0)
        check_bool("adaptive_correction", self.adaptive_correction)
        check_bool("finish_with_prediction", self.finish_with_prediction)
        check_bool("collect_metrics", self.collect_metrics)
        check_bool("enable_prediction", self.enable_prediction)
        check_int("max_quiet_phases", self.max_quiet_phases, 0)
        check_int("outer_patience", self.outer_patience, 0)
        check_bool("outer_check_batches", self.outer_check_batches)
        check_int("seed", self.seed, 0)
        if self.freeze is not None:
            from keras_hybrid.freezing import FreezeSchedule

            if isinstance(self.freeze, FreezeSchedule):
                self.freeze = self.freeze.get_config()
            FreezeSchedule.from_config(self.freeze)  # checks it

    def validate(self):
        """Checks every field again, with the messages of construction.

        A config is validated when it is built; this catches fields changed
        afterwards (`config.warmup_steps = -5`). `HybridPredictCallback`
        calls it when training begins.

        Raises:
            ValueError: a field holds a value that is not allowed.
        """
        for name, cls in _SECTIONS.items():
            section = getattr(self, name)
            if isinstance(section, cls):
                section.__post_init__()
        self.__post_init__()
        return self

    @property
    def loss_trend_steps(self):
        """The recent FULL steps whose losses give the loss trend (the
        log-linear fit the predictors extrapolate and the length bandit
        reads): two FULL phases."""
        return 2 * self.full_steps

    # ------------------------------------------------------------------ I/O
    def to_dict(self):
        """Returns the config as a plain, YAML-safe dict."""

        def plain(value):
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(dataclasses.asdict(self))

    def to_yaml(self):
        """Returns the config as a YAML string."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, config):
        """Builds a config from a (possibly partial, nested) dict.

        Unknown keys raise a `ValueError` that suggests the closest field.

        Args:
            config: a dict of fields. A top-level `"preset": NAME` key starts
                from that preset and overrides it with the other keys, as
                in a YAML file.

        Example:

        ```python
        config = HybridConfig.from_dict({"preset": "outer", "full_steps": 10})
        ```
        """
        if not isinstance(config, dict):
            raise ValueError(
                "`config` must be a dict. "
                f"Received: config={config!r} of type {type(config).__name__}"
            )
        config = dict(config)
        preset = config.pop("preset", None)
        if preset is not None:
            config = _merge(cls.preset(preset).to_dict(), config)
        return _build(cls, config, prefix="")

    @classmethod
    def from_yaml(cls, path):
        """Loads a config from a YAML file.

        Args:
            path: path of the YAML file. A top-level `preset: NAME` key starts
                from that preset and overrides it with the other keys.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(
                f"Config file not found.{_missing_file_hint(path)} "
                f"Received: path={path!r}"
            )
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ValueError(
                    f"Config file is not valid YAML ({e}). "
                    f"Received: path={path!r}"
                ) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(
                "A config file must hold a mapping at the top level. "
                f"Received: path={path!r} holding {type(data).__name__}"
            )
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name):
        """Returns a named preset.

        Args:
            name: one of `"default"` (what `HybridPredictCallback()`
                uses: the same settings as `"conservative"`),
                `"conservative"`, `"balanced"`,
                `"aggressive"`, `"outer"`, `"plain"` (no prediction),
                `"finetune"` (layer-wise freezing by measurement).
        """
        if name not in PRESET_NAMES:
            raise ValueError(
                f"Unknown preset.{_preset_hint(name)} Received: "
                f"preset={name!r}"
            )
        return cls.from_dict(copy.deepcopy(_PRESETS[name]))

    @classmethod
    def resolve(cls, config):
        """Turns `None` (the `"default"` preset), a preset name, a YAML path,
        a dict or a config into a `HybridConfig`.

        A dict or YAML file without a `preset` key starts from the field
        defaults (`HybridConfig()`), not from a preset."""
        if config is None:
            return cls.preset("default")
        if isinstance(config, HybridConfig):
            return config
        if isinstance(config, dict):
            return cls.from_dict(config)
        if isinstance(config, (str, os.PathLike)):
            if str(config) in PRESET_NAMES:
                return cls.preset(str(config))
            return cls.from_yaml(config)
        raise ValueError(
            "`config` must be a HybridConfig, a dict, a preset name "
            f"{list(PRESET_NAMES)} or a YAML path. Received: config={config!r}"
        )


def _preset_hint(name):
    """" The presets are [...]", with the closest one (case-insensitive)
    suggested, for an unknown preset name or a missing config file."""
    stem = os.path.splitext(os.path.basename(str(name)))[0].lower()
    close = difflib.get_close_matches(stem, PRESET_NAMES, n=1, cutoff=0.6)
    hint = f" Did you mean the preset {close[0]!r}?" if close else ""
    return f"{hint} The presets are {list(PRESET_NAMES)}."


def _missing_file_hint(path):
    """For a missing config file: the same file with the other YAML
    extension when that one exists, else the presets (`_preset_hint`)."""
    stem, ext = os.path.splitext(path)
    for other in (".yaml", ".yml"):
        candidate = stem + other
        if other != ext and os.path.isfile(candidate):
            return f" Did you mean {candidate!r}?"
    return _preset_hint(path)


def _build(cls, values, prefix):
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean `{prefix}{close[0]}`?" if close else ""
            raise ValueError(
                f"Unknown config field `{prefix}{key}`.{hint} "
                f"Allowed fields: {names}. Received: {key}={values[key]!r}"
            )
    return cls(**values)


def _merge(base, override):
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Presets differ from the defaults only in the fields listed here.
# `configs/<name>.yaml` are generated from these (see tests/test_config.py).
# Predicts only at confidence 0.9: on the bench tasks it never predicted,
# so it trained exactly as plain `fit()` did, with the monitor, rollback and
# report on (benchmarks/README.md). `HybridPredictCallback()` uses it: a
# default that does no harm.
_CONSERVATIVE = {
    "warmup_steps": 200,
    "full_steps": 40,
    "max_predict_steps": 40,
    "confidence_threshold": 0.9,
    "correction_interval": 10,
    "loss_tolerance": 0.0,
    "divergence": {"loss_sigma": 2.0},
    "predictor": {"refit_interval": 2},
}

_PRESETS = {
    "default": _CONSERVATIVE,
    "conservative": _CONSERVATIVE,
    "balanced": {
        "max_predict_steps": 75,
        "correction_interval": 15,
        "confidence_threshold": 0.60,
        "predictor": {"refit_interval": 4},
    },
    "aggressive": {
        "warmup_steps": 50,
        "full_steps": 20,
        "max_predict_steps": 160,
        "confidence_threshold": 0.5,
        "correction_interval": 0,
        "loss_tolerance": 0.0,
        "horizon_decay": 1.0,
        "predictor": {"refit_interval": 8},
    },
    # Outer Nesterov steps that skip no batch (as in SNOO): after every
    # 30-step FULL phase (once the learning rate has stopped rising and
    # while it is above 20% of its peak), one unchecked jump of about 40
    # steps' worth of the momentum-averaged drift; the 2 batches it held
    # back are then trained on from the jumped weights. Every batch gets
    # its backward pass and no forward pass is added; the gain is reaching
    # a loss sooner.
    # No prediction: every step trains, and the callback's other services
    # run (freeze schedules, the divergence monitor and rollback,
    # checkpoints, the report).
    "plain": {"enable_prediction": False},
    # Fine-tuning: every step trains, and the lowest layer group is frozen
    # once undoing its recent movement no longer raises the loss of fresh
    # batches (`keras_hybrid.layerwise`): the backward pass then stops
    # above it.
    "finetune": {
        "enable_prediction": False,
        "layerwise": {"enabled": True},
    },
    "outer": {
        "warmup_steps": 60,
        "full_steps": 30,
        "max_predict_steps": 2,
        "min_predict_steps": 2,
        "confidence_threshold": 0.0,
        "validation_samples": 2,
        "train_check_batches": True,
        "check_jumps": False,
        "loss_tolerance": 1.0,
        "outer_patience": 2,
        "predictor": {
            "type": "nesterov",
            "jump_scales": [10.0],
            "outer_learning_rate": 2.0,
            "min_agreement": -1.0,
            "shrinkage": "none",
        },
    },
}
