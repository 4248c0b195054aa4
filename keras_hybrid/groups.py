"""Layer groups: a model's trainable layers split, in order from the input,
into groups that are frozen and unfrozen together.

A group list is what a freeze schedule and layer-wise prediction work on.
Freezing the lowest groups (a frozen *prefix*) saves their whole backward
pass; a frozen group with a trainable one below it still passes the
gradient through to its input. `LayerGroups.backward_work` accounts for
both.
"""

import difflib
import math

import keras

AUTO_GROUPS = 4


class LayerGroups:
    """A model's trainable layers in groups, in order from the input.

    Layers of nested models (a pretrained backbone used as a layer) are
    grouped one by one, and a nested model's name stands for all its
    layers; any other layer, however many layers it holds, is one unit.
    The layers of a subclassed model are taken in the order its attributes
    were set (`model.layers`), which is normally the order from the input. Layers without trainable
    weights (inputs, pooling, dropout, and layers the user set
    `trainable=False`) belong to no group and are never touched.

    Args:
        model: a built `keras.Model` (a `HybridModel` or the model it wraps).
        groups: `"auto"` (the last trainable layer, the head, on its own;
            the layers below it in `num_groups - 1` groups of similar
            parameter count); a list whose entries are layer names or lists
            of layer names, one group each, listed from the input; or a
            function `layer -> key` (layers with the same key form a group;
            groups are ordered by their first layer from the input). Every
            trainable layer must be in exactly one group.
        num_groups: the number of groups `"auto"` makes (at most the number
            of trainable layers).

    Example:

    ```python
    groups = LayerGroups(model, [["embedding", "block_0"], "block_1",
                                 "block_2", "head"])
    groups.names()  # [['embedding', 'block_0'], ['block_1'], ...]
    ```
    """

    def __init__(self, model, groups="auto", num_groups=AUTO_GROUPS):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "`model` must be a keras.Model. "
                f"Received: model={model!r}"
            )
        if not model.built:
            raise ValueError(
                "The model must be built before its layers are grouped: "
                "call it on data or build it first. "
                f"Received: model={model.name!r} (not built)"
            )
        units, nested = trainable_units(model)
        if not units:
            raise ValueError(
                "The model has no trainable layer to group. "
                f"Received: model={model.name!r}"
            )
        if isinstance(groups, str):
            if groups != "auto":
                raise ValueError(
                    "`groups` must be 'auto', a list of layer names (or of "
                    "lists of names), or a function layer -> key. "
                    f"Received: groups={groups!r}"
                )
            check_num_groups(num_groups)
            layers = _auto(units, num_groups)
        elif callable(groups):
            layers = _by_function(units, groups)
        elif isinstance(groups, (list, tuple)):
            layers = _by_names(units, nested, groups)
        else:
            raise ValueError(
                "`groups` must be 'auto', a list of layer names (or of "
                "lists of names), or a function layer -> key. "
                f"Received: groups={groups!r}"
            )
        self.model = model
        self.layers = layers
        self._index_variables(model)

    def _index_variables(self, model):
        position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.variable_indices = []
        owner = {}
        for g, layers in enumerate(self.layers):
            indices = []
            for layer in layers:
                for variable in layer.trainable_variables:
                    i = position.get(id(variable))
                    if i is None:
                        continue  # not trained by this model
                    if i in owner and owner[i] != g:
                        raise ValueError(
                            "A weight is shared by layers of two groups; "
                            "put those layers in one group. Received: "
                            f"weight {variable.path!r} in groups "
                            f"{owner[i]} and {g}"
                        )
                    owner[i] = g
                    indices.append(i)
            self.variable_indices.append(tuple(sorted(set(indices))))
        missing = [
            v.path for i, v in enumerate(model.trainable_variables)
            if i not in owner
        ]
        if missing:
            raise ValueError(
                "Every trainable weight must belong to a group. "
                f"Received: groups that leave out {missing[:5]}"
                + (" ..." if len(missing) > 5 else "")
            )
        self.num_variables = len(model.trainable_variables)

    def __len__(self):
        return len(self.layers)

    def names(self):
        """The groups as lists of layer names."""
        return [[layer.name for layer in layers] for layers in self.layers]

    def parameter_counts(self):
        """The number of trainable parameters in each group."""
        variables = self.model.trainable_variables
        return [
            sum(math.prod(variables[i].shape) for i in indices)
            for indices in self.variable_indices
        ]

    def live_mask(self, frozen):
        """A tuple with one bool per trainable variable of the model: False
        for those of the bottom `frozen` groups (`None` if none is
        frozen)."""
        frozen = int(frozen)
        if frozen <= 0:
            return None
        mask = [True] * self.num_variables
        for indices in self.variable_indices[:frozen]:
            for i in indices:
                mask[i] = False
        return tuple(mask)

    def forward_costs(self):
        """An estimate of each group's forward cost per example, in
        multiply-adds: each weight tensor counts its size times the number
        of positions it is applied at (the sequence or spatial positions of
        the layer's output); embedding lookups count nothing. Attention's
        products of activations are not counted, so the estimate leans
        toward weight-heavy layers."""
        return [
            sum(_layer_cost(layer) for layer in layers)
            for layers in self.layers
        ]

    def backward_work(self, frozen):
        """The backward work of a step with the bottom `frozen` groups
        frozen, as a share of a step that trains every group.

        A trainable group costs two forward passes (the gradients of its
        input and of its weights); a frozen group above a trainable one
        costs one (the gradient of its input, passed down); a frozen prefix
        costs nothing.
        """
        costs = self.forward_costs()
        total = 2.0 * sum(costs)
        if total <= 0:
            return 1.0 if frozen < len(costs) else 0.0
        # Groups are in input order: the prefix `[:frozen]` is frozen and
        # has nothing trainable below it.
        work = sum(2.0 * c for c in costs[frozen:])
        return work / total


def check_num_groups(num_groups):
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or (
        num_groups < 2
    ):
        raise ValueError(
            "`num_groups` must be an integer >= 2 (the head and at least one "
            f"group below it). Received: num_groups={num_groups!r}"
        )


def trainable_units(model):
    """The layers with trainable weights, in order from the input, nested
    models expanded into their own layers.

    Returns:
        `(units, nested)`: the layers, and each nested model's name mapped
        to the units inside it (a layer without trainable weights maps its
        name to no unit).
    """
    units, nested, seen = [], {}, set()

    def visit(layer, parents):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            inner = getattr(layer, "inner", None)
            children = [inner] if isinstance(inner, keras.Model) else (
                layer.layers
            )
            if parents is not None:
                parents = parents + (layer.name,)
            for child in children:
                visit(child, () if parents is None else parents)
            return
        if layer.trainable_variables:
            units.append(layer)
            for name in parents or ():
                nested.setdefault(name, []).append(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            nested.setdefault(layer.name, [])

    # The model itself is not a "nested" model: no name for it.
    visit(model, None)
    return units, nested


def _auto(units, num_groups):
    head, body = units[-1:], units[:-1]
    if not body:
        return [head]
    n = min(num_groups - 1, len(body))
    sizes = [_size(layer) for layer in body]
    total = float(sum(sizes)) or 1.0
    groups, current, done = [], [], 0.0
    for i, (layer, size) in enumerate(zip(body, sizes)):
        current.append(layer)
        done += size
        remaining_layers = len(body) - i - 1
        remaining_groups = n - len(groups) - 1
        boundary = total * (len(groups) + 1) / n
        if remaining_groups > 0 and (
            done >= boundary - 0.5 * size or remaining_layers == remaining_groups
        ):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups + [head]


def _size(layer):
    return sum(math.prod(v.shape) for v in layer.trainable_variables)


def _by_function(units, key_of):
    order, groups = [], {}
    for layer in units:
        key = key_of(layer)
        if key is None:
            raise ValueError(
                "A `groups` function must give every trainable layer a key. "
                f"Received: None for layer {layer.name!r}"
            )
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(layer)
    return [groups[key] for key in order]


def _by_names(units, nested, groups):
    if not groups:
        raise ValueError(
            "`groups` must list at least one group. Received: groups=[]"
        )
    by_name = {}
    for layer in units:
        by_name.setdefault(layer.name, layer)
    # A nested model's own name stands for all its layers.
    result, seen = [], {}
    for g, entry in enumerate(groups):
        names = [entry] if isinstance(entry, str) else entry
        if not isinstance(names, (list, tuple)) or not names:
            raise ValueError(
                "Each group must be a layer name or a non-empty list of "
                f"layer names. Received: group {g} = {entry!r}"
            )
        layers = []
        for name in names:
            if not isinstance(name, str):
                raise ValueError(
                    "Layer names must be strings. "
                    f"Received: {name!r} in group {g}"
                )
            if name in by_name:
                found = [by_name[name]]
            elif name in nested:
                found = nested[name]  # none for a layer without weights
            else:
                close = difflib.get_close_matches(
                    name, list(by_name) + list(nested), n=1
                )
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"Unknown layer name in `groups`.{hint} Known layers "
                    f"with trainable weights: {sorted(by_name)[:20]}. "
                    f"Received: {name!r} in group {g}"
                )
            for layer in found:
                if id(layer) in seen:
                    raise ValueError(
                        "Groups must not overlap. Received: layer "
                        f"{layer.name!r} in groups {seen[id(layer)]} and {g}"
                    )
                seen[id(layer)] = g
                layers.append(layer)
        if not layers:
            raise ValueError(
                "Each group must hold a layer with trainable weights. "
                f"Received: group {g} = {entry!r}"
            )
        result.append(layers)
    left_out = [layer.name for layer in units if id(layer) not in seen]
    if left_out:
        raise ValueError(
            "`groups` must cover every layer with trainable weights. "
            f"Received: groups that leave out {left_out}"
        )
    return result


def _layer_cost(layer):
    if isinstance(layer, keras.layers.Embedding):
        return 0
    positions = 1
    shape = getattr(layer, "output", None)
    try:
        shape = tuple(layer.output.shape) if shape is not None else None
    except (AttributeError, ValueError):
        shape = None
    if shape and len(shape) > 2:
        positions = math.prod(d for d in shape[1:-1] if d) or 1
    return _size(layer) * positions
