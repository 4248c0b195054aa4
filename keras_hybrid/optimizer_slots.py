"""The optimizer's per-weight slots (momenta, second moments, averages).

Keras names a slot after the weight it belongs to
(`{weight.path with '/' -> '_'}_{slot name}`, see
`BaseOptimizer.add_variable_from_reference`); `slots_of` finds a weight's
slots by that name and `reset` gives them the values a newly built
optimizer would (a group unfrozen inside `fit()` starts afresh, as after
compiling a new optimizer).
"""

import warnings

import keras


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def slots_of(optimizer, variables):
    """The optimizer variables that belong to `variables`, as
    `{index in optimizer.variables: variable}` (the longest matching
    weight name wins: `dense_1_kernel_momentum` is `dense_1/kernel`'s)."""
    keys = {}
    for variable in variables:
        keys[variable.path.replace("/", "_")] = variable
    found = {}
    for i, slot in enumerate(_inner(optimizer).variables):
        name = slot.name
        best = None
        for key in keys:
            if name.startswith(key + "_") and (
                best is None or len(key) > len(best)
            ):
                best = key
        if best is not None:
            found[i] = keys[best]
    return found


def reset(optimizer, variables):
    """Gives the slots of `variables` the values a newly built optimizer
    of the same configuration would give them (zeros for most; an
    optimizer's own initial value, e.g. Adagrad's, otherwise). Nothing
    happens before the optimizer is built."""
    inner = _inner(optimizer)
    if not getattr(inner, "built", False) or not variables:
        return
    own = slots_of(inner, variables)
    if not own:
        return
    fresh = _fresh_values(inner)
    for i in own:
        slot = inner.variables[i]
        value = fresh.get(slot.name) if fresh is not None else None
        if value is None:
            value = keras.ops.zeros(slot.shape, dtype=slot.dtype)
        slot.assign(value)


def _fresh_values(optimizer):
    """`{slot name: initial value}` of an optimizer built anew with the
    same configuration, or `None` if it cannot be rebuilt."""
    try:
        fresh = type(optimizer).from_config(optimizer.get_config())
        fresh.build(list(optimizer._trainable_variables))
    except Exception as e:  # a custom optimizer may not rebuild
        warnings.warn(
            "Could not rebuild the optimizer to read its initial slot values "
            f"({type(e).__name__}: {e}); unfrozen weights' slots are reset "
            "to zeros."
        )
        return None
    return {
        v.name: keras.ops.convert_to_numpy(v) for v in fresh.variables
    }
