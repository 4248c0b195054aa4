"""TensorFlow step functions.

Each phase gets its own compiled function, built with the model's own
`_make_function` so that `steps_per_execution`, `jit_compile` and the
distribution strategy are handled exactly as in a plain `fit()`. The PREDICT
function has no `tf.GradientTape` at all: no gradient op is in its graph.
"""

import tensorflow as tf

from keras_hybrid.backends import common


def _batch_size(x):
    first = next(t for t in tf.nest.flatten(x) if t is not None)
    return tf.shape(first)[0]


def _forward(model, data, training):
    data = tf.nest.map_structure(
        lambda t: None if isinstance(t, tf.experimental.Optional) else t, data
    )
    return common.forward(model, data, training)


def _track_loss(model, loss, x):
    """Adds the batch loss to the loss metric; returns it unscaled (under a
    strategy Keras divides each replica's loss by the replica count)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    unscaled = loss * replicas if replicas > 1 else loss
    model._loss_tracker.update_state(unscaled, sample_weight=_batch_size(x))
    return unscaled


def train_step(model, data):
    """A FULL step: forward, backward, optimizer update.

    Mirrors `keras.Model.train_step` and also returns the batch loss and the
    global gradient norm under the private keys of `common.STAT_KEYS`. The
    update is applied only if the loss and every gradient are finite (on
    every replica); a refused step changes no weight and no optimizer slot
    and only advances `optimizer.iterations` (the batch was seen).
    """
    variables, partial = common.live_variables(model)
    # With frozen groups, only the trainable ones are watched: the tape
    # records nothing below the lowest of them, so a frozen prefix runs no
    # backward at all.
    with tf.GradientTape(watch_accessed_variables=not partial) as tape:
        if partial:
            tape.watch([v.value for v in variables])
        x, y, sample_weight, y_pred, loss = _forward(model, data, True)
        unscaled = _track_loss(model, loss, x)
        scaled = model.optimizer.scale_loss(loss)
    if not partial:
        # Read after the forward pass, which builds a subclassed model's
        # weights on its first call.
        variables = model.trainable_variables
    logs_stats = {common.LOSS_KEY: unscaled}
    if variables:
        grads = tape.gradient(scaled, variables)
        norm = tf.linalg.global_norm([g for g in grads if g is not None])
        finite = _all_replicas(common.update_is_finite(unscaled, norm))
        if model.jit_compile and not tf.distribute.has_strategy():
            _selected_apply(model.optimizer, grads, variables, finite,
                            model.trainable_variables)
        else:
            _guarded_apply(model.optimizer, grads, variables, finite)
        logs_stats[common.GRAD_NORM_KEY] = norm
    else:
        common.warn_no_trainable_weights()
    logs = dict(
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    )
    logs.update(logs_stats)
    return logs


def _all_replicas(finite):
    """`finite` reduced over the replicas: True only where every replica's
    loss and gradients are finite, so that all refuse the same step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return finite
    bad = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), "float32")
    )
    return tf.equal(bad, 0.0)


def _selected_apply(optimizer, grads, variables, finite, all_variables):
    """`optimizer.apply_gradients` only where `finite`, for XLA: the
    update always runs, then every variable it may change takes back its
    previous value where `finite` is false (element-wise selects, which XLA
    fuses into the update; a `tf.cond` there copies the whole optimizer
    state). `optimizer.iterations` advances either way, as after a refused
    step. The optimizer is built for `all_variables` (every trainable
    one, frozen or not)."""
    if not optimizer.built:
        # Its slots must exist (outside the compiled function) to be read.
        with tf.init_scope():
            optimizer.build(all_variables)
    guarded = [v for v in list(variables) + list(optimizer.variables)
               if v is not optimizer.iterations]
    before = [tf.identity(v.value) for v in guarded]
    with tf.control_dependencies(before):
        optimizer.apply_gradients(zip(grads, variables))
    for variable, old in zip(guarded, before):
        variable.assign(tf.where(finite, variable.value, old))


def _guarded_apply(optimizer, grads, variables, finite):
    """`optimizer.apply_gradients` only where `finite` (in the graph).

    Under a strategy whose optimizer update needs `merge_call` (e.g.
    `MirroredStrategy`), the condition is taken in the cross-replica context,
    as Keras' `LossScaleOptimizer` does: a `cond` in a replica context may
    not hold a branch that calls `merge_call`.
    """

    def refuse():
        optimizer.iterations.assign_add(1)

    def apply_here():
        optimizer.apply_gradients(zip(grads, variables))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, apply_here, refuse)
        return

    def cross_replica(distribution, grads, variables, finite):
        first = distribution.experimental_local_results(finite)[0]

        def apply():
            def one_replica(g, v):
                optimizer.apply_gradients(zip(g, v))

            distribution.extended.call_for_each_replica(
                one_replica, args=(grads, variables)
            )

        tf.cond(first, apply, refuse)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(grads, variables, finite)
    )


def variable_scope(model):
    """The scope to create the runner's variables in: the model's
    distribution strategy, so that deltas and trajectory sums are mirrored
    like the weights.

    Inside `strategy.run`, `assign_add` on a mirrored variable updates each
    replica's own copy. The PREDICT and FULL steps only add values that are
    equal on every replica (mirrored deltas, the weights themselves), so the
    copies stay identical (tested on 2 logical CPUs). A variable created
    outside the scope would be one copy updated by every replica.
    """
    return model.distribute_strategy.scope()


def predict_step(model, deltas, data):
    """A PREDICT step: forward and loss only, then `w += delta`.

    No gradient tape: nothing here records or computes gradients.
    """
    x, y, sample_weight, y_pred, loss = _forward(model, data, True)
    unscaled = _track_loss(model, loss, x)
    for variable, delta in zip(model.trainable_variables, deltas):
        variable.assign_add(delta)
    model.optimizer.iterations.assign_add(1)
    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    logs[common.LOSS_KEY] = unscaled
    return logs


make_dispatcher = common.make_dispatcher
sync = common.sync


def make_phase_functions(model, accumulators, deltas):
    """Builds the compiled functions of every phase.

    Args:
        model: the `HybridModel`.
        accumulators: variables that a collecting FULL step adds the weights
            to (the trajectory running sums).
        deltas: variables holding the per-step predicted weight change.

    Returns:
        A dict of callables: `"full"` (a training step that also adds the
        weights to `accumulators` while collecting: every step with a
        backward pass runs it, so that the model's step is traced once) and
        `"predict"`, each taking the fit loop's iterator; `"train_batch"`,
        a training step on one batch as returned by `next(iterator)` (a
        rejected jump's check batches; it collects like `"full"`);
        `"eval_loss"`, taking one such batch and returning the forward loss
        as a scalar tensor (inference mode, no state change); and
        `"collect"`, taking a bool: whether the next training steps add the
        weights to `accumulators` (outside a fitting FULL phase the sums
        would be discarded: the steps skip them).
    """
    with variable_scope(model):
        # Read in the compiled step: switching it costs one assignment
        # when the phase changes, and no second trace.
        collecting = tf.Variable(True, trainable=False, dtype=tf.bool,
                                 name="hybrid_collecting")

    def add_weights():
        for acc, variable in zip(accumulators, model.trainable_variables):
            acc.assign_add(variable)
        return tf.constant(True)

    def full_collect(data):
        logs = model.train_step(data)
        tf.cond(collecting, add_weights, lambda: tf.constant(False))
        return logs

    strategy = model.distribute_strategy

    def one_eval(data):
        return _forward(model, data, False)[-1]

    def eval_loss(data):
        per_replica = strategy.run(one_eval, args=(data,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, None)

    if not model.run_eagerly:
        eval_loss = tf.function(eval_loss, reduce_retracing=True)

    full = model._make_function(full_collect)
    return {
        "full": full,
        "predict": model._make_function(
            lambda data: predict_step(model, deltas, data)
        ),
        # Given a list of batches instead of an iterator, Keras' function
        # runs its compiled one-batch step on each: the FULL step's trace
        # serves the retrained batches too (no second trace of the model).
        "train_batch": lambda batch: full([batch]),
        "eval_loss": eval_loss,
        "collect": common.Switch(apply=collecting.assign),
    }


def next_batch(iterator):
    """Takes one batch from the fit loop's iterator."""
    try:
        return next(iterator)
    except tf.errors.OutOfRangeError:
        raise StopIteration from None


def step_graph(model, kind, deltas, batch):
    """Traces one phase's step on `batch` and returns its `tf.Graph`.

    Used to check what the compiled functions contain (e.g. that the
    PREDICT step has no gradient op).

    Args:
        model: the `HybridModel`.
        kind: `"full"` or `"predict"`.
        deltas: the per-step delta variables.
        batch: a batch of data.
    """
    steps = {
        "full": model.train_step,
        "predict": lambda data: predict_step(model, deltas, data),
    }
    if kind not in steps:
        raise ValueError(
            f"`kind` must be one of {sorted(steps)}. Received: kind={kind!r}"
        )
    return tf.function(steps[kind]).get_concrete_function(batch).graph


def gradient_ops(graph):
    """Names of the gradient ops in a traced graph (recursing into
    function bodies)."""
    found = []
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        for op in g.get_operations():
            if op.type.endswith("Grad") or "gradient_tape" in op.name:
                found.append(op.name)
        for fn in getattr(g, "_functions", {}).values():
            if hasattr(fn, "graph"):
                graphs.append(fn.graph)
    return found
