"""Forward FLOPs per layer, and the backward work of a frozen prefix.

Only matrix products are counted (2 FLOPs per multiply-add): `Dense` and
`EinsumDense` kernels (the "weighted" FLOPs) and attention's `Q K^T` and
`A V` products (the "activation" FLOPs, two operands that both carry a
gradient). Embedding look-ups, norms, element-wise ops and pooling count 0:
for the models here they are a few percent of the total. Figures are per
example (the batch axis left out).

Backward work, in the same units, follows from which layers train:

- a trainable layer pays its weight gradient and its input gradient:
  `2 * weighted + 2 * activation` (about twice its forward);
- a frozen layer with a trainable layer below it still pays its input
  gradient (the gradient must pass through it): `weighted +
  2 * activation`;
- a frozen prefix (no trainable layer below) pays nothing.

The lowest trainable layer is charged its input gradient too, which a
framework may prune: the figures slightly overstate the work of a frozen
run, so they understate what freezing saves.

Example:

```python
per_layer = forward_flops(model)
share = backward_share(model, frozen=["embedding", "position_embedding",
                                      "block_0", "block_1"])
```
"""

import math

import keras


def _rows(shape):
    """Positions: the product of every axis but the last (batch left out)."""
    return math.prod(int(d) for d in shape[:-1])


def _kernel_size(layer):
    return math.prod(int(d) for d in layer.kernel.shape)


def _attention_flops(layer, query_shape, value_shape):
    """A `MultiHeadAttention`'s projections and its two products."""
    t_q, t_k = _rows(query_shape), _rows(value_shape)
    weighted = 2 * (
        t_q * _kernel_size(layer.query_dense)
        + t_k * _kernel_size(layer.key_dense)
        + t_k * _kernel_size(layer.value_dense)
        + t_q * _kernel_size(layer.output_dense)
    )
    heads = int(layer.num_heads)
    key_dim = int(layer.key_dim)
    value_dim = int(layer.value_dim or layer.key_dim)
    activation = 2 * t_q * t_k * heads * (key_dim + value_dim)
    return {"weighted": weighted, "activation": activation}


def layer_flops(layer, input_shape):
    """Forward FLOPs of one layer applied to one example.

    Args:
        layer: a built Keras layer. `Dense`, `EinsumDense` and
            `MultiHeadAttention` (self-attention) are counted; a layer made
            of sublayers (a transformer block) is the sum of its sublayers,
            each applied at the same positions as the layer itself; any
            other layer counts 0.
        input_shape: the layer's input shape without the batch axis.

    Returns:
        A dict `{"weighted": int, "activation": int}`.
    """
    shape = tuple(input_shape)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_flops(layer, shape, shape)
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            return {"weighted": 0, "activation": 0}
        # Positions: the input's axes left of those the kernel contracts.
        contracted = (1 if isinstance(layer, keras.layers.Dense)
                      else _contracted_axes(layer))
        positions = math.prod(int(d) for d in shape[: len(shape) -
                                                    contracted])
        return {"weighted": 2 * positions * _kernel_size(layer),
                "activation": 0}
    total = {"weighted": 0, "activation": 0}
    for sub in getattr(layer, "_layers", None) or ():
        sub_shape = shape
        if isinstance(sub, (keras.layers.Dense, keras.layers.EinsumDense)) \
                and getattr(sub, "kernel", None) is not None:
            # A sublayer sees the parent's positions with its own input
            # width (the kernel's first axis: an MLP's second layer).
            sub_shape = shape[:-1] + (int(sub.kernel.shape[0]),)
        for key, value in layer_flops(sub, sub_shape).items():
            total[key] += value
    return total


def _contracted_axes(layer):
    equation = layer.equation.split("->")[0]
    left, kernel = equation.split(",")
    return len(set(left) & set(kernel))


def forward_flops(model):
    """Forward FLOPs of each layer of a functional model, in input order.

    Args:
        model: a built functional `keras.Model` whose layers are each used
            once.

    Returns:
        A dict `{layer name: {"weighted": int, "activation": int}}` over the
        model's layers (input layers left out), in the order of
        `model.layers`.
    """
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input
        shape = (inputs[0] if isinstance(inputs, (list, tuple))
                 else inputs).shape
        out[layer.name] = layer_flops(layer, tuple(shape[1:]))
    return out


def group_flops(model, groups, flops=None):
    """Forward FLOPs (weighted + activation) summed per group of layer
    names; a list, one per group."""
    flops = forward_flops(model) if flops is None else flops
    return [sum(flops[n]["weighted"] + flops[n]["activation"] for n in group)
            for group in groups]


def backward_work(model, frozen=(), flops=None):
    """The backward FLOPs of one example when the layers `frozen` do not
    train (see the module docstring for the rule).

    Args:
        model: a functional `keras.Model`.
        frozen: names of the layers that do not train.
        flops: `forward_flops(model)`, if already computed.

    Returns:
        The backward FLOPs (an int).
    """
    flops = forward_flops(model) if flops is None else flops
    frozen = set(frozen)
    unknown = frozen - set(flops)
    if unknown:
        raise ValueError(
            "`frozen` must name layers of the model. "
            f"Received: frozen={sorted(unknown)} (layers: {list(flops)})"
        )
    work, below = 0, False
    for name in flops:
        layer = model.get_layer(name)
        trains = name not in frozen and bool(layer.weights)
        f = flops[name]
        if trains:
            work += 2 * f["weighted"] + 2 * f["activation"]
        elif below:
            work += f["weighted"] + 2 * f["activation"]
        below = below or trains
    return work


def backward_share(model, frozen=(), flops=None):
    """`backward_work(model, frozen)` over the work with every layer
    training (full fine-tuning)."""
    flops = forward_flops(model) if flops is None else flops
    full = backward_work(model, (), flops)
    return backward_work(model, frozen, flops) / full if full else 0.0
