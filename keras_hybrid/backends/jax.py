"""JAX step functions.

JAX training is stateless: the fit loop threads a `state` tuple
`(trainable, non_trainable, optimizer, metrics)` through
`train_function(state, iterator)`. While a hybrid runner is attached, the
step functions take the newest state from a holder on the model and leave
theirs there (as do the trajectory sums), with no per-step Python work per
variable; `sync(model)` writes it into the model's variables (a reference
assignment, no copy) before the runner works on variables as on every other
backend (phase ends, checks, rollbacks, checkpoints; reading the statistics
touches no variable). Every backward step runs one `jax.jit` function and
PREDICT its own; the PREDICT function calls no `jax.grad`/`vjp`, so its
jaxpr has no transpose of the forward pass.
"""

import collections
import contextlib
import types

import jax
import jax.numpy as jnp
import keras

from keras_hybrid.backends import common


def _forward_loss(model, state, data, training):
    """The compiled loss of one batch (no state change)."""
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = common.unpack(data)
    loss, _ = model.compute_loss_and_updates(
        trainable, non_trainable, metrics_vars, x, y, sample_weight,
        training=training, optimizer_variables=optimizer_vars,
    )
    return loss


def train_step(model, state, data):
    """A FULL step: Keras' JAX `train_step` plus the batch loss and the
    global gradient norm under the keys of `common.STAT_KEYS`.

    The update is applied only if the loss and every gradient are finite
    (inside the compiled step; see `GUARD`): a refused step keeps the
    weights, the optimizer slots and the non-trainable state as they were
    and only advances the optimizer's iteration count.
    """
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = common.unpack(data)
    live = _live_indices(model)
    if live is None:
        loss_fn, differentiated = model.compute_loss_and_updates, trainable
    else:
        # Differentiated with respect to the trainable groups only: the
        # frozen ones enter as constants, so nothing below the lowest
        # trainable group is transposed (no backward there).
        def loss_fn(live_values, *args, **kwargs):
            merged = list(trainable)
            for i, value in zip(live, live_values):
                merged[i] = value
            return model.compute_loss_and_updates(merged, *args, **kwargs)

        differentiated = [trainable[i] for i in live]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, aux), grads = grad_fn(
        differentiated, non_trainable, metrics_vars, x, y, sample_weight,
        training=True, optimizer_variables=optimizer_vars,
    )
    unscaled_loss, y_pred, new_non_trainable, metrics_vars = aux
    norm = jnp.sqrt(
        sum(jnp.sum(jnp.square(g)) for g in grads if g is not None)
    )
    finite = common.update_is_finite(unscaled_loss, norm)
    index = _iterations_index(model)
    update = (
        _selected_update if _guard_kind() == "select" else _conditional_update
    )
    trainable, non_trainable, optimizer_vars = update(
        model, finite, grads, trainable, new_non_trainable,
        non_trainable, optimizer_vars, index, live,
    )
    logs, metrics_vars = model._update_metrics_variables(
        metrics_vars, unscaled_loss, x, y, y_pred, sample_weight
    )
    logs = dict(logs)
    logs[common.LOSS_KEY] = unscaled_loss
    logs[common.GRAD_NORM_KEY] = norm
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


# How the compiled FULL step refuses a non-finite update: "cond" (a
# `lax.cond` around the update: cheapest on a CPU, where the predicate is
# local), "select" (the update always runs, then element-wise selects keep
# the old values; XLA fuses them into the update, and an accelerator never
# waits for the predicate on the host, as its conditional does) or "auto"
# (select on accelerators, cond on the CPU). Both give the same values.
GUARD = "auto"


def _guard_kind():
    if GUARD != "auto":
        return GUARD
    return "cond" if jax.default_backend() == "cpu" else "select"


def _live_indices(model):
    """The indices of the trainable variables a step updates (`None`: all;
    see `common.live_variables`)."""
    mask = getattr(model, "_hybrid_live", None)
    if mask is None or len(mask) != len(model.trainable_variables):
        return None
    return [i for i, live in enumerate(mask) if live]


def _stateless_apply(model, optimizer_vars, grads, trainable, live):
    """`optimizer.stateless_apply`, updating only the variables at `live`
    (`None`: all) with `grads` (one per live variable): frozen weights and
    their slots come back unchanged."""
    optimizer = model.optimizer
    if live is None:
        return optimizer.stateless_apply(optimizer_vars, grads, trainable)
    variables = model.trainable_variables
    mapping = list(zip(variables, trainable)) + list(
        zip(optimizer.variables, optimizer_vars)
    )
    with keras.StatelessScope(state_mapping=mapping) as scope:
        optimizer.apply(grads, [variables[i] for i in live])
    return (
        [scope.get_current_value(v) for v in variables],
        [scope.get_current_value(v) for v in optimizer.variables],
    )


def _conditional_update(model, finite, grads, trainable, new_non_trainable,
                        non_trainable, optimizer_vars, index, live=None):
    def apply(operands):
        trainable, optimizer_vars, _ = operands
        trainable, optimizer_vars = _stateless_apply(
            model, optimizer_vars, grads, trainable, live
        )
        return list(trainable), list(optimizer_vars), list(new_non_trainable)

    def refuse(operands):
        trainable, optimizer_vars, non_trainable = operands
        optimizer_vars = list(optimizer_vars)
        optimizer_vars[index] = optimizer_vars[index] + 1
        return list(trainable), optimizer_vars, list(non_trainable)

    trainable, optimizer_vars, non_trainable = jax.lax.cond(
        finite, apply, refuse,
        (list(trainable), list(optimizer_vars), list(non_trainable)),
    )
    return trainable, non_trainable, optimizer_vars


def _selected_update(model, finite, grads, trainable, new_non_trainable,
                     non_trainable, optimizer_vars, index, live=None):
    new_trainable, new_optimizer_vars = _stateless_apply(
        model, optimizer_vars, grads, trainable, live
    )

    def keep(new, old):
        return [jnp.where(finite, a, b) for a, b in zip(new, old)]

    old_optimizer_vars = list(optimizer_vars)
    optimizer_vars = keep(new_optimizer_vars, old_optimizer_vars)
    # The iteration count advances either way (the batch was seen).
    optimizer_vars[index] = old_optimizer_vars[index] + 1
    return (keep(new_trainable, trainable),
            keep(new_non_trainable, non_trainable), optimizer_vars)


def predict_step(model, iterations_index, state, deltas, data):
    """A PREDICT step: forward and loss only, then `w += delta`.

    No `jax.grad`: nothing here differentiates the forward pass.
    """
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = common.unpack(data)
    _, aux = model.compute_loss_and_updates(
        trainable, non_trainable, metrics_vars, x, y, sample_weight,
        training=True, optimizer_variables=optimizer_vars,
    )
    unscaled_loss, y_pred, non_trainable, metrics_vars = aux
    trainable = [w + d for w, d in zip(trainable, deltas)]
    optimizer_vars = list(optimizer_vars)
    optimizer_vars[iterations_index] = optimizer_vars[iterations_index] + 1
    logs, metrics_vars = model._update_metrics_variables(
        metrics_vars, unscaled_loss, x, y, y_pred, sample_weight
    )
    logs = dict(logs)
    logs[common.LOSS_KEY] = unscaled_loss
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


# ------------------------------------------------------------ state
def get_state(model):
    """The fit loop's state tuple, read from the model's variables."""
    optimizer_vars = model.optimizer.variables if model.optimizer else []
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer_vars],
        [v.value for v in model.metrics_variables],
    )


def set_state(model, state):
    """Writes a state tuple into the model's variables."""
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    groups = (
        (model.trainable_variables, trainable),
        (model.non_trainable_variables, non_trainable),
        (model.optimizer.variables if model.optimizer else [], optimizer_vars),
        (model.metrics_variables, metrics_vars),
    )
    for variables, values in groups:
        for variable, value in zip(variables, values):
            variable.assign(value)


def _holder(model):
    holder = getattr(model, "_hybrid_jax", None)
    if holder is None:
        # A plain object: Keras does not track what it holds.
        holder = types.SimpleNamespace(state=None, sums=None,
                                       accumulators=(), in_call=False)
        model._hybrid_jax = holder
    return holder


def current_state(model):
    """The newest state: the holder's, else the variables'."""
    holder = _holder(model)
    if holder.state is not None:
        return holder.state
    return get_state(model)


def _take_state(model):
    """`current_state(model)`, which the caller then donates: the holder
    forgets it."""
    holder = _holder(model)
    state, holder.state = holder.state, None
    return state if state is not None else get_state(model)


def sync(model):
    """Writes the newest state and trajectory sums into the variables.

    Between two calls of the train function the fit loop holds the newest
    state: it goes into the variables as Keras' callbacks see it
    (`jax_state_sync()`), and the loop reads them back before its next
    call, with whatever the runner changed.
    """
    holder = _holder(model)
    if holder.state is not None:
        set_state(model, holder.state)
        holder.state = None
    elif not holder.in_call and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    if holder.sums is not None:
        for acc, value in zip(holder.accumulators, holder.sums):
            acc.assign(value)
        holder.sums = None


def make_dispatcher(model, plain):
    """The fit loop's `train_function(state, iterator)`.

    Without a runner it is Keras' own compiled step (statistics dropped).

    Returns:
        `(dispatch, stateful_plain)`: the train function, and `plain` as a
        function of the iterator alone working on the model's variables.
    """

    def stateful_plain(iterator):
        logs, state = plain(_take_state(model), iterator)
        _holder(model).state = state
        return logs

    def dispatch(state, iterator):
        runner = model._hybrid_runner
        if runner is None:
            logs, state = plain(state, iterator)
            return common.strip_stats(logs), state
        holder = _holder(model)
        holder.state, holder.in_call = state, True
        try:
            logs = runner.run(iterator)
        except BaseException:
            # The newest state goes into the variables (the holder's, or
            # what the runner left there, e.g. the restored good point
            # before a `DivergenceError`); the loop's last state may have
            # been donated since. Keep `jax_state_sync()` from writing it
            # back.
            sync(model)
            model._jax_state_synced = True
            raise
        finally:
            holder.in_call = False
        # The loop owns the newest state from here on: Keras may donate it
        # (the next call, or `evaluate()` on the validation data after the
        # epoch) and puts what comes back into the variables. A copy kept
        # in the holder would be a deleted array by the time the runner
        # next syncs it into the variables (at the end of `fit()`).
        return logs, _take_state(model)

    return dispatch, stateful_plain


def _jit(model, function, donate=True, state_out=None):
    """`jax.jit` of a step (none when the model runs eagerly).

    Args:
        state_out: under a `keras.distribution`, the shardings of the state
            the step returns second (as Keras' own train function keeps
            them), so that the state keeps the variables' layouts between
            steps; `None` otherwise.
    """
    if model.run_eagerly or not model.jit_compile:
        return function
    out_shardings = None
    if state_out is not None:
        out_shardings = (None, state_out)
    return jax.jit(function, donate_argnums=0 if donate else (),
                   out_shardings=out_shardings)


def _state_shardings(model, accumulators):
    """`(state shardings, trajectory-sum shardings)` under a
    `keras.distribution`, else `(None, None)`."""
    from keras.src import distribution

    if distribution.distribution() is None:
        return None, None
    return (
        tuple(model._get_state_sharding_spec()),
        [a.value.sharding for a in accumulators],
    )


def _iterations_index(model):
    optimizer_vars = model.optimizer.variables
    for i, variable in enumerate(optimizer_vars):
        if variable is model.optimizer.iterations:
            return i
    raise ValueError(
        "The optimizer's `iterations` is not among its variables. "
        f"Received: optimizer={model.optimizer!r}"
    )


def variable_scope(model):
    """The scope to create the runner's variables in (none needed here)."""
    return contextlib.nullcontext()


def make_phase_functions(model, accumulators, deltas):
    """Builds the compiled functions of every phase (see the TensorFlow
    module for the contract). Each works on the model's variables: it reads
    their values, runs one jitted function and assigns the results."""
    n = int(model.steps_per_execution or 1)
    iterations_index = _iterations_index(model)

    def full_collect(carry, data, collecting):
        state, sums = carry
        logs, state = model.train_step(state, data)
        sums = jax.lax.cond(
            collecting,
            lambda: [s + w for s, w in zip(sums, state[0])],
            lambda: list(sums),
        )
        return logs, (state, sums)

    def predict(state, delta_values, data):
        return predict_step(model, iterations_index, state, delta_values, data)

    def eval_loss(state, data):
        return _forward_loss(model, state, data, False)

    state_out, sums_out = _state_shardings(model, accumulators)
    full_jit = _jit(model, full_collect, state_out=(
        None if state_out is None else (state_out, sums_out)
    ))
    predict_jit = _jit(model, predict, state_out=state_out)
    eval_jit = _jit(model, eval_loss, donate=False)

    holder = _holder(model)
    holder.accumulators = list(accumulators)
    # Passed to the collecting step as an array: a traced flag (one
    # compilation for both values), made once.
    flags = {True: jnp.asarray(True), False: jnp.asarray(False)}
    collect = common.Switch(True)

    def batches(iterator):
        # All batches of the call are taken before the state: a
        # `StopIteration` at the end of the data leaves the newest state in
        # the holder.
        taken = [next(iterator)]
        for _ in range(n - 1):
            data = _next_or_none(iterator)
            if data is None:
                break
            taken.append(data)
        return taken

    def run_full(iterator):
        logs = None
        for i, data in enumerate(batches(iterator)):
            if i == 0:
                sums = holder.sums
                if sums is None:
                    sums = [a.value for a in accumulators]
                carry = (_take_state(model), sums)
                holder.sums = None
            logs, carry = full_jit(carry, data, flags[collect.value])
        holder.state, holder.sums = carry
        return logs

    def run_predict(iterator):
        delta_values = [d.value for d in deltas]
        logs = None
        for i, data in enumerate(batches(iterator)):
            if i == 0:
                state = _take_state(model)
            logs, state = predict_jit(state, delta_values, data)
        holder.state = state
        return logs

    def run_eval(batch):
        return eval_jit(current_state(model), batch)

    def run_train_batch(batch):
        # The collecting step (compiled once for every backward step); the
        # runner discards the sums it adds to.
        return run_full(iter([batch]))

    return {
        "full": run_full,
        "predict": run_predict,
        "train_batch": run_train_batch,
        "eval_loss": run_eval,
        "collect": collect,
    }


def _next_or_none(iterator):
    try:
        return next(iterator)
    except StopIteration:
        return None


def next_batch(iterator):
    """Takes one batch from the fit loop's iterator."""
    return next(iterator)


def step_jaxpr(model, kind, deltas, batch):
    """The jaxpr of one phase's step on `batch` (to inspect what it
    computes, e.g. that PREDICT has no transpose of the forward pass).

    Args:
        model: the `HybridModel` (built and compiled).
        kind: `"full"`, `"predict"` or `"forward"` (the loss alone).
        deltas: the per-step delta values (arrays or variables).
        batch: a batch of data.
    """
    state = get_state(model)
    if kind == "full":
        # Traced as the runner calls it (a bound method given to
        # `make_jaxpr` directly does not see the model's frozen groups).
        return jax.make_jaxpr(
            lambda s, b: model.train_step(s, b)
        )(state, batch)
    if kind == "forward":
        return jax.make_jaxpr(
            lambda s, b: _forward_loss(model, s, b, True)
        )(state, batch)
    if kind == "predict":
        index = _iterations_index(model)
        values = [keras.ops.convert_to_tensor(d) for d in deltas]
        return jax.make_jaxpr(
            lambda s, d, b: predict_step(model, index, s, d, b)
        )(state, values, batch)
    raise ValueError(
        "`kind` must be 'full', 'predict' or 'forward'. "
        f"Received: kind={kind!r}"
    )


def primitive_counts(jaxpr):
    """How often each primitive occurs in a jaxpr, sub-jaxprs included.

    The backward pass of a step shows as extra matrix products
    (`dot_general`, `conv_general_dilated`): a FULL step of a dense network
    has about three times the forward's, a PREDICT step exactly as many.
    """
    counts = collections.Counter()
    stack = [jaxpr.jaxpr if hasattr(jaxpr, "jaxpr") else jaxpr]
    while stack:
        current = stack.pop()
        for eqn in current.eqns:
            counts[eqn.primitive.name] += 1
            for param in eqn.params.values():
                subs = param if isinstance(param, (list, tuple)) else [param]
                for sub in subs:
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        stack.append(getattr(inner, "jaxpr", inner))
    return counts
