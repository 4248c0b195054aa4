"""Per-backend compiled step functions.

`get()` returns the module of the active Keras backend. Each module provides
`train_step(model, ...)` (the backend's `Model.train_step` arguments),
`make_dispatcher(model, plain)`, `make_phase_functions(model, accumulators,
deltas)`, `next_batch(iterator)`, `variable_scope(model)` and `sync(model)`
(the runner calls it before it reads or writes variables between steps).
"""

import contextlib
import time

import keras


def get():
    """Returns the step-function module of the active backend."""
    name = keras.backend.backend()
    if name == "tensorflow":
        from keras_hybrid.backends import tensorflow as module
    elif name == "jax":
        from keras_hybrid.backends import jax as module
    elif name == "torch":
        from keras_hybrid.backends import torch as module
    else:
        raise NotImplementedError(
            "keras_hybrid supports the TensorFlow, JAX and PyTorch backends. "
            f"Received: KERAS_BACKEND={name!r}"
        )
    return module


def compile_function(function):
    """Compiles a pure function of tensors (no variable read or written
    inside) into one dispatch where the backend can (`jax.jit`; on
    TensorFlow a `tf.function` once it is likely to pay, see
    `LazilyCompiled`; PyTorch runs it eagerly): phase-boundary work
    (averages, drift, agreement) would otherwise cost one eager op per
    variable."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        def compile_pure():
            # One function serves every model in the process, so it is
            # traced once per argument structure and shapes. Relaxed shapes
            # (`reduce_retracing`) would merge two models' lists into
            # tensors of unknown rank, which Keras ops cannot broadcast.
            compiled = tf.function(function, autograph=False)
            if hasattr(compiled, "_omit_frequent_tracing_warning"):
                compiled._omit_frequent_tracing_warning = True
            return ConcreteCalls(compiled)

        return LazilyCompiled(function, compile_pure)
    if name == "jax":
        import jax

        return jax.jit(function)
    return function


def compile_update(function, variables):
    """Compiles `function(values, *args) -> (new_values, output)` into a
    callable `(*args) -> output` that reads `variables`, runs `function`
    once and assigns `new_values` to them (`None`: no assignment).

    TensorFlow reads and assigns the variables inside one `tf.function`
    (eagerly until compiling it is likely to pay, see `LazilyCompiled`);
    JAX runs one `jax.jit` call between reading the arrays and assigning the
    results (both without device work); PyTorch runs it eagerly.
    """
    variables = list(variables)
    name = keras.backend.backend()

    def stateful(*args):
        values = [keras.ops.convert_to_tensor(v) for v in variables]
        new_values, output = function(values, *args)
        if new_values is not None:
            for variable, value in zip(variables, new_values):
                variable.assign(value)
        return output

    if name == "tensorflow":
        import tensorflow as tf

        def compile_stateful():
            compiled = tf.function(stateful, reduce_retracing=True,
                                   autograph=False)
            # TensorFlow counts retracing per code object: every function
            # made here shares `stateful`'s, so the first trace of each
            # would be reported as a retrace of one function. Each is
            # traced once per argument structure.
            if hasattr(compiled, "_omit_frequent_tracing_warning"):
                compiled._omit_frequent_tracing_warning = True
            return ConcreteCalls(compiled)

        return LazilyCompiled(stateful, compile_stateful,
                              name=function.__name__)
    if name != "jax":
        return stateful
    import jax

    pure = jax.jit(function)

    def jax_stateful(*args):
        new_values, output = pure([v.value for v in variables], *args)
        if new_values is not None:
            for variable, value in zip(variables, new_values):
                variable.assign(value)
        return output

    return jax_stateful


class ConcreteCalls:
    """Calls a `tf.function` of tensors through the concrete function of
    its arguments' structure, dtypes and shapes, kept after the first call.

    A phase-boundary function takes every variable's average or drift as
    arguments: dozens of tensors. Calling the `tf.function` matches each of
    them against its traces, which costs more than running the graph (on a
    6-variable MLP, 1.1 ms a call against 0.44 ms for the graph). Here the
    key is computed once per call from the flat tensors (about 1 us each)
    and the graph runs on them directly. Arguments that are not all tensors
    take the `tf.function`'s own path.

    A concrete function's graph is rewritten by TensorFlow's graph
    optimizer (Grappler) when it is first instantiated: 57-86 ms for a
    small CNN's phase-end function (17-28 ms without), against 0.5 ms for a
    call, and nothing to gain on element-wise work on the weights (the
    calls cost the same, measured). These functions run with the optimizer
    off (`_unoptimized`).

    Args:
        function: the `tf.function`.
    """

    def __init__(self, function):
        self.function = function
        self._concrete = {}

    def __call__(self, *args):
        import tensorflow as tf

        flat = tf.nest.flatten(args)
        if not all(isinstance(t, tf.Tensor) for t in flat):
            return self.function(*args)
        key = (_structure(args),
               tuple((t.dtype, tuple(t.shape)) for t in flat))
        concrete = self._concrete.get(key)
        if concrete is None:
            concrete = self.function.get_concrete_function(*args)
            self._concrete[key] = concrete
        if not hasattr(concrete, "_call_flat"):  # not in this TensorFlow
            return concrete(*args)
        with _unoptimized():
            return concrete._call_flat(flat, concrete.captured_inputs)


# `(call options, the same without Grappler)`, last made.
_UNOPTIMIZED = [None, None]


@contextlib.contextmanager
def _unoptimized():
    """Within it (this thread only), TensorFlow functions are instantiated
    and run without Grappler's rewrites. The options are part of what
    identifies an instantiation: a function called both with and without
    them is instantiated (and optimized) twice. Where this TensorFlow lacks
    the options object, nothing changes."""
    from tensorflow.python.eager import context

    ctx = context.context()
    make = getattr(context, "FunctionCallOptions", None)
    saved = getattr(ctx, "function_call_options", None)
    if make is None or saved is None:
        yield
        return
    if _UNOPTIMIZED[0] is not saved:
        config = ctx.config
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        _UNOPTIMIZED[:] = [saved, make(executor_type=saved.executor_type,
                                       config_proto=config)]
    ctx.function_call_options = _UNOPTIMIZED[1]
    try:
        yield
    finally:
        ctx.function_call_options = saved


def _structure(value):
    """The nesting of lists, tuples and dicts in `value` (what `tf.nest`
    flattens), as a hashable key."""
    if isinstance(value, (list, tuple)):
        return (type(value) is tuple, tuple(_structure(v) for v in value))
    if isinstance(value, dict):
        return tuple((k, _structure(value[k])) for k in sorted(value))
    return None


class LazilyCompiled:
    """A phase-boundary function that runs eagerly until compiling it is
    likely to pay (TensorFlow).

    Such a function runs once or twice per FULL phase. Its first compiled
    call traces and instantiates it: 10-90 ms of CPU time for a small
    model's (without Grappler, `ConcreteCalls`), and far more wall-clock on
    a loaded machine, while an eager call costs from about
    what a compiled one does (a copy of the weights) to ten times as much
    (the phase's averages and drift: one op per variable). Like renting
    skis until the rent would have bought a pair, it runs eagerly until its
    eager calls have cost `min_seconds` in all (about one small trace),
    then compiles (once) and runs the compiled function from then on: the
    costly functions compile after a call or two, the cheap ones and those
    called once (the first phase's) are never traced. Where the run says how
    many calls can still come (`calls_ahead`, the FULL phase ends left in
    the `fit()`), a function compiles as soon as its eager calls to come
    would cost more than its trace (a trace costs about `trace_per_call`
    eager calls): on a long run the phase functions compile at their second
    call instead of after 30 ms of eager calls each. Eager and compiled
    calls run the same ops (the same values; tested).

    Args:
        eager: the function, run eagerly.
        compile: returns the compiled function (called once, when due).
        name: what it is called in profiles (default: `eager`'s name).

    Attributes:
        compiled: the compiled function (`None` while it runs eagerly).
        calls: its eager calls so far.
        seconds: the time they took, in all.
        min_calls: eager calls before it compiles, at least (class-wide).
        min_seconds: seconds of eager calls before it compiles, unless the
            calls to come pay for it first (class-wide).
        calls_ahead: a callable with no argument returning how many more
            times a phase function can be called in the running `fit()`
            (class-wide; set while a runner is attached, else 0: unknown).
        trace_per_call: how many of a function's eager calls its trace
            costs, at most (TensorFlow on a CPU: about 0.3 ms an op traced
            against 0.04-0.06 ms an op run eagerly; the compiling calls
            measured 1-8 eager calls).
    """

    # Class-wide, so that tests can make every such function compile at
    # once (0, 0) or never (`float("inf")`).
    min_calls = 1
    min_seconds = 0.03
    calls_ahead = staticmethod(lambda: 0)
    trace_per_call = 8

    @classmethod
    def expect(cls, calls_ahead=None):
        """Sets `calls_ahead` (`None`: unknown, as when no run is
        attached)."""
        cls.calls_ahead = staticmethod(calls_ahead or (lambda: 0))

    def __init__(self, eager, compile, name=None):
        self.eager = eager
        self.name = name or getattr(eager, "__name__", repr(eager))
        self._compile = compile
        self.compiled = None
        self.calls = 0
        self.seconds = 0.0

    def _due(self):
        """Whether compiling is likely to pay now."""
        if self.calls < self.min_calls:
            return False
        if self.seconds >= self.min_seconds:
            return True
        if self.calls == 0:
            return False
        ahead = LazilyCompiled.calls_ahead()
        return ahead >= self.trace_per_call and (
            ahead * self.seconds / self.calls >= self.min_seconds)

    def __call__(self, *args):
        if self.compiled is None and self._due():
            self.compiled = self._compile()
        if self.compiled is not None:
            return self.compiled(*args)
        start = time.perf_counter()
        try:
            return self.eager(*args)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start


def global_random_state():
    """The backend's global random generator state, where Keras draws from
    one (PyTorch: unseeded dropout masks and the DataLoader's base seed);
    `None` elsewhere (TensorFlow and JAX keep theirs in seed variables)."""
    if keras.backend.backend() != "torch":
        return None
    import torch

    return torch.get_rng_state().tolist()


def set_global_random_state(state):
    """Restores `global_random_state()` output (`None`: nothing to do)."""
    if state is None or keras.backend.backend() != "torch":
        return
    import torch

    torch.set_rng_state(torch.tensor(state, dtype=torch.uint8))
