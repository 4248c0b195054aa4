"""`HybridModel`: a `keras.Model` whose training loop can skip backward
passes."""

import keras

# Private Keras modules, used only to build functional-style HybridModels
# without Keras mutating HybridModel's class hierarchy.
from keras.src.models import functional as _functional
from keras.src.models import model as _trainer

from keras_hybrid import backends


@keras.saving.register_keras_serializable(package="keras_hybrid")
class HybridModel(keras.Model):
    """A `keras.Model` that trains in predictive hybrid phases.

    Use it like `keras.Model`: subclass it, build it functionally
    (`HybridModel(inputs, outputs)`), or wrap a model you already have with
    `HybridModel.wrap(model)`. Without a `HybridPredictCallback` it trains
    exactly like a plain Keras model. With one, each call of the train
    function runs the compiled step of the current phase: a full
    forward/backward step, a forward-only PREDICT step (no gradient
    computation at all), or no compute for the rest of a predicted jump.

    Example:

    ```python
    model = keras_hybrid.HybridModel.wrap(my_model)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callback = keras_hybrid.HybridPredictCallback("balanced")
    model.fit(x, y, epochs=5, callbacks=[callback])
    print(callback.report()["training_summary"])
    ```
    """

    def __new__(cls, *args, **kwargs):
        # `HybridModel(inputs, outputs)` builds a `FunctionalHybridModel`.
        # Keras would otherwise inject `Functional` into this class's own
        # bases, breaking every later subclassed `HybridModel`.
        if cls is HybridModel and _functional_arguments(args, kwargs):
            return keras.Model.__new__(FunctionalHybridModel)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hybrid_init()

    def _hybrid_init(self):
        self._hybrid_runner = None
        self._hybrid_pending_full = 0
        self._hybrid_resume = None
        self._hybrid_last_runner = None
        self._hybrid_compiled = None
        # One bool per trainable variable while a freeze schedule holds
        # some frozen (read when a train step is traced); `None`: none.
        self._hybrid_live = None
        self.hybrid_config = None

    # ---------------------------------------------------------- wrapping
    @classmethod
    def wrap(cls, model, config=None):
        """Wraps an existing Keras model.

        The wrapper trains the same variables as `model` (nothing is copied);
        compile the wrapper, not the inner model.

        Args:
            model: a `keras.Model` (Sequential, functional or subclassed).
            config: optional `HybridConfig` (or preset name, YAML path, dict)
                used by a `HybridPredictCallback` created without a config.

        Returns:
            A `HybridModel`.
        """
        if not isinstance(model, keras.Model):
            raise ValueError(
                "`model` must be a keras.Model. "
                f"Received: model={model!r} of type {type(model).__name__}"
            )
        if isinstance(model, HybridModel):
            raise ValueError(
                "`model` is already a HybridModel; use it directly. "
                f"Received: model={model.name!r}"
            )
        if _overrides(model, "train_step"):
            raise ValueError(
                "`model` overrides `train_step`, which the hybrid training "
                "loop replaces (a PREDICT step runs no backward pass). Move "
                "a custom loss into `compute_loss()`, which the wrapper "
                "uses, or keep training this model with plain `fit()`. "
                f"Received: model={model.name!r} of type "
                f"{type(model).__name__}"
            )
        wrapped = WrappedHybridModel(model, name=f"hybrid_{model.name}")
        if config is not None:
            from keras_hybrid.config import HybridConfig

            wrapped.hybrid_config = HybridConfig.resolve(config)
        return wrapped

    # ----------------------------------------------------- train function
    def train_step(self, *args):
        """A full training step that also reports the batch loss and the
        gradient norm to the hybrid runner (hidden from the logs).

        Takes `(data)`, or `(state, data)` on JAX, like `keras.Model`."""
        return backends.get().train_step(self, *args)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        dispatch, plain = backends.get().make_dispatcher(
            self, self.train_function
        )
        self._hybrid_plain_train = plain
        self.train_function = dispatch
        return dispatch

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the data checked first (see
        `keras_hybrid.validation`) and the distribution strategy too (see
        `keras_hybrid.distribution`); a hybrid runner attached by the callback
        is detached when `fit()` ends, however it ends."""
        from keras_hybrid.distribution import check_supported
        from keras_hybrid.validation import check_fit_data

        _check_wrapper_compiled(self)
        check_supported(self)
        check_fit_data(self, x, y, kwargs.get("sample_weight"))
        try:
            return super().fit(x, y, *args, **kwargs)
        finally:
            self._detach_runner()

    # -------------------------------------------------------- attaching
    def _detach_runner(self):
        """Detaches the runner, keeping it for `statistics()`; frozen
        groups train again, as the user left them."""
        runner = self._hybrid_runner
        if runner is not None and runner.freezer is not None:
            runner.freezer.release()
        if self._hybrid_runner is not None:
            self._hybrid_last_runner = self._hybrid_runner
            self._hybrid_runner = None
            # The phase functions' compile decisions no longer know the
            # run's length.
            backends.LazilyCompiled.expect(None)

    def _attach_runner(self, runner):
        self._hybrid_runner = runner
        if runner is None:
            return
        backends.LazilyCompiled.expect(runner.phase_ends_ahead)
        if self._hybrid_pending_full:
            runner.force_full(self._hybrid_pending_full)
            self._hybrid_pending_full = 0

    # ------------------------------------------------------ conveniences
    def force_full_phase(self, steps):
        """Runs only FULL phases for the next `steps` steps (ends a running
        prediction)."""
        if self._hybrid_runner is None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ValueError(
                    "`steps` must be a non-negative integer. "
                    f"Received: steps={steps!r}"
                )
            self._hybrid_pending_full = steps
        else:
            self._hybrid_runner.force_full(steps)

    def save_checkpoint(self, path, include_predictor=True):
        """Writes a resumable checkpoint (see `keras_hybrid.checkpoint`).

        In a multi-process JAX job only process 0 writes: give every
        process the same path on storage they all read.

        Args:
            path: the checkpoint directory (replaced atomically if it
                exists).
            include_predictor: also save the hybrid runner's state, so that
                the phase cycle resumes exactly.

        Returns:
            The path written.
        """
        from keras_hybrid import checkpoint

        runner = self._hybrid_runner
        history = getattr(getattr(self, "history", None), "history", None)
        return checkpoint.save_checkpoint(
            self, path, runner=runner, include_predictor=include_predictor,
            history=history,
            config=runner.config if runner else self.hybrid_config,
        )

    def load_checkpoint(self, path):
        """Loads a checkpoint, all or nothing; the next `fit()` with a
        `HybridPredictCallback` resumes from it (same epoch, same batch,
        same phase).

        Returns:
            The checkpoint's training state (step, epoch, phase, ...).
        """
        from keras_hybrid import checkpoint

        if self._hybrid_runner is not None:
            raise RuntimeError(
                "Cannot load a checkpoint during `fit()`. Load it before "
                "calling `fit()` again."
            )
        return checkpoint.load_checkpoint(self, path)

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """`keras.Model.export`; a SavedModel needs the TensorFlow or JAX
        backend (see `_check_saved_model_backend`)."""
        if format == "tf_saved_model":
            _check_saved_model_backend()
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    def export_with_optimizer(self, path, input_signature=None):
        """Writes a SavedModel of this network with the optimizer's
        variables as the `optimizer_variables` collection."""
        from keras_hybrid import checkpoint

        _check_saved_model_backend()
        return checkpoint.export_with_optimizer(self, path, input_signature)

    @property
    def current_confidence(self):
        """The predictor's confidence, or `None` outside hybrid training."""
        runner = self._hybrid_runner
        return None if runner is None else runner.confidence

    @property
    def current_phase(self):
        """The current `Phase`, or `None` outside hybrid training."""
        runner = self._hybrid_runner
        return None if runner is None else runner.controller.phase

    def statistics(self):
        """Training summary of the current or last hybrid `fit()` (a dict;
        empty before any)."""
        runner = self._hybrid_runner or self._hybrid_last_runner
        if runner is None:
            return {}
        from keras_hybrid.report import build_report

        return build_report(runner)["training_summary"]


def _check_saved_model_backend():
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise NotImplementedError(
            "A SavedModel is exported from the TensorFlow or JAX backend "
            "(Keras' PyTorch path goes through torch.export and fails for "
            "Keras models here). Save the model with `model.save(path)` or "
            "`save_checkpoint(path)` and export it under KERAS_BACKEND="
            f"tensorflow or jax. Received: KERAS_BACKEND={backend!r}"
        )
    from keras_hybrid.dependencies import require

    require("tensorflow", "Exporting a SavedModel")


# Wrapper attributes never looked up on the wrapped model: its symbolic
# inputs and outputs would make Keras treat the wrapper as a functional model.
_NOT_FORWARDED = frozenset(
    ("inputs", "outputs", "input", "output", "input_spec")
)


def _check_wrapper_compiled(model):
    """Raises a clear error when the model inside a `HybridModel.wrap`
    wrapper was compiled but the wrapper, which `fit()` trains, was not."""
    if not isinstance(model, WrappedHybridModel) or model.compiled:
        return
    inner = getattr(model, "inner", None)
    if getattr(inner, "compiled", False):
        raise ValueError(
            "The wrapped model was compiled, but not the wrapper that "
            "`fit()` trains. Compile the model returned by "
            "`HybridModel.wrap()` instead of the inner model: "
            "`model = HybridModel.wrap(inner); model.compile(...)`. "
            f"Received: wrapper={model.name!r} (not compiled) around "
            f"model={inner.name!r} (compiled)"
        )


def _overrides(model, method):
    """Whether `model`'s class replaces `keras.Model`'s `method`."""
    return getattr(type(model), method) is not getattr(keras.Model, method)


def _functional_arguments(args, kwargs):
    return (len(args) == 2) or (len(args) == 1 and "outputs" in kwargs) or (
        "inputs" in kwargs and "outputs" in kwargs
    )


@keras.saving.register_keras_serializable(package="keras_hybrid")
class FunctionalHybridModel(HybridModel, _functional.Functional):
    """A `HybridModel` built from inputs and outputs:
    `HybridModel(inputs, outputs)`."""

    def __init__(self, inputs, outputs, name=None, **kwargs):
        _trainer.Trainer.__init__(self)
        _functional.Functional.__init__(
            self, inputs, outputs, name=name, **kwargs
        )
        self._hybrid_init()


@keras.saving.register_keras_serializable(package="keras_hybrid")
class WrappedHybridModel(HybridModel):
    """A `HybridModel` around an existing model (see `HybridModel.wrap`).

    Args:
        model: the wrapped `keras.Model`.
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    @property
    def output_names(self):
        """The wrapped model's output names (what named losses, metrics
        and History keys refer to); absent like the model's own if it has
        none."""
        names = getattr(self.inner, "output_names", None)
        if names is None:
            raise AttributeError(
                f"{type(self.inner).__name__} has no `output_names`"
            )
        return names

    def __getattr__(self, name):
        # Only reached when normal lookup fails: an attribute of the wrapped
        # model's own (e.g. a counter a callback reads from `self.model`).
        lookup = getattr(super(), "__getattr__", None)
        if lookup is not None:  # PyTorch modules find their parameters here
            try:
                return lookup(name)
            except AttributeError:
                pass
        if name.startswith("_") or name in _NOT_FORWARDED or name == "inner":
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        return getattr(self.inner, name)

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Saves the wrapped model's weights: the file is the same as the
        wrapped model's own and loads into it, wrapped or not."""
        return self.inner.save_weights(
            filepath, overwrite=overwrite, max_shard_size=max_shard_size
        )

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads weights saved by the wrapped model, wrapped or not (or,
        from a `.keras` file, a whole saved wrapper's)."""
        target = super() if str(filepath).endswith(".keras") else self.inner
        return target.load_weights(
            filepath, skip_mismatch=skip_mismatch, **kwargs
        )

    @property
    def layers(self):
        """The wrapped model's layers (as callbacks such as `TensorBoard`
        expect of the model they are given)."""
        return self.inner.layers

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """The wrapped model's `compute_loss()` if it overrides it (with
        this wrapper's compiled loss in place of the model's own), else
        `keras.Model.compute_loss`."""
        if not _overrides(self.inner, "compute_loss"):
            return super().compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        inner = self.inner
        own = inner._compile_loss
        inner._compile_loss = self._compile_loss
        try:
            return inner._compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        finally:
            inner._compile_loss = own

    def build(self, input_shape):
        if not self.inner.built:
            self.inner.build(input_shape)
        self.built = True

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, **kwargs):
        """`keras.Model.export` of the wrapped network; the input signature
        defaults to the wrapped model's inputs."""
        if input_signature is None:
            input_signature = self.input_signature()
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    def input_signature(self):
        """`[spec]` from the wrapped model's inputs, or `None` if it has
        none (a subclassed model: pass `input_signature` yourself)."""
        try:
            inputs = self.inner.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            return None
        structure = getattr(self.inner, "_inputs_struct", None)
        if structure is None:
            structure = inputs[0] if len(inputs) == 1 else inputs
        return [keras.tree.map_structure(
            lambda t: keras.InputSpec(shape=t.shape, dtype=t.dtype),
            structure,
        )]

    def get_config(self):
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.inner)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(inner, **config)
