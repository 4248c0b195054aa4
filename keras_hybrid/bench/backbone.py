"""The byte-level transformer backbone of the fine-tuning tasks.

A pre-norm causal transformer over bytes whose layers are named in input
order, so that layer groups can be formed from the bottom up:

- `embedding` (`keras.layers.Embedding(256, width)`) and
  `position_embedding` (`keras_hybrid.bench.transformer.PositionEmbedding`);
- `block_0` .. `block_{n-1}`: one `TransformerBlock` layer each (attention
  and MLP with their norms and residuals);
- `final_norm`, then the task's head: `head` (`Dense(256)`, the language
  model's next-byte logits) or `pool` + `head` (mean over positions, then
  `Dense(classes)`).

`block_names(model)` lists them grouped as `[[embedding,
position_embedding], [block_0], ..., [final_norm, (pool,) head]]`.

Example:

```python
config = BackboneConfig(sequence_length=128, width=128, blocks=4, heads=4)
lm = language_model(config)
clf = classifier(config, classes=26, source=lm)  # lm's backbone weights
block_names(clf)
# [['embedding', 'position_embedding'], ['block_0'], ['block_1'],
#  ['block_2'], ['block_3'], ['final_norm', 'pool', 'head']]
```
"""

import dataclasses
import re

import keras

from keras_hybrid.bench.transformer import PositionEmbedding

VOCABULARY = 256
_BLOCK_NAME = re.compile(r"^block_(\d+)$")


@keras.saving.register_keras_serializable(package="keras_hybrid")
class TransformerBlock(keras.layers.Layer):
    """One pre-norm causal transformer block.

    `x + attention(norm(x))`, then `h + mlp(norm(h))` with an MLP of
    `mlp_ratio * width` GELU units.

    Args:
        width: the model width (the last axis of the input).
        heads: attention heads (`width` must be a multiple of it).
        mlp_ratio: hidden units of the MLP per unit of width.
        **kwargs: base layer arguments (`name`, `trainable`, ...).
    """

    def __init__(self, width, heads, mlp_ratio=4, **kwargs):
        super().__init__(**kwargs)
        width, heads, mlp_ratio = int(width), int(heads), int(mlp_ratio)
        if width < 1 or heads < 1 or width % heads:
            raise ValueError(
                "`width` must be a positive multiple of `heads`. "
                f"Received: width={width}, heads={heads}"
            )
        if mlp_ratio < 1:
            raise ValueError(
                f"`mlp_ratio` must be >= 1. Received: mlp_ratio={mlp_ratio}"
            )
        self.width, self.heads, self.mlp_ratio = width, heads, mlp_ratio
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=heads, key_dim=width // heads, name="attention")
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="mlp_norm")
        self.mlp_in = keras.layers.Dense(
            mlp_ratio * width, activation="gelu", name="mlp_in")
        self.mlp_out = keras.layers.Dense(width, name="mlp_out")

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.attention_norm.build(shape)
        self.attention.build(shape, shape)
        self.mlp_norm.build(shape)
        self.mlp_in.build(shape)
        self.mlp_out.build(shape[:-1] + (self.mlp_ratio * self.width,))

    def call(self, inputs):
        a = self.attention_norm(inputs)
        h = inputs + self.attention(a, a, use_causal_mask=True)
        return h + self.mlp_out(self.mlp_in(self.mlp_norm(h)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"width": self.width, "heads": self.heads,
                       "mlp_ratio": self.mlp_ratio})
        return config


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """The shape of the backbone.

    Attributes:
        sequence_length: bytes per input (the position embedding's length).
        width: the model width (`d_model`).
        blocks: transformer blocks.
        heads: attention heads per block.
        mlp_ratio: MLP hidden units per unit of width.
    """

    sequence_length: int = 128
    width: int = 128
    blocks: int = 4
    heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or (
                value < 1
            ):
                raise ValueError(
                    f"`{field.name}` must be a positive integer. "
                    f"Received: {field.name}={value!r}"
                )

    def to_dict(self):
        """The config as a plain dict."""
        return dataclasses.asdict(self)


class _Backbone:
    """The backbone's layers, created once so several heads can share them."""

    def __init__(self, config):
        self.config = config
        self.layers = [
            keras.layers.Embedding(VOCABULARY, config.width, name="embedding"),
            PositionEmbedding(config.sequence_length, config.width,
                              name="position_embedding"),
            *[
                TransformerBlock(config.width, config.heads, config.mlp_ratio,
                                 name=f"block_{i}")
                for i in range(config.blocks)
            ],
            keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm"),
        ]

    def __call__(self, inputs):
        h = inputs
        for layer in self.layers:
            h = layer(h)
        return h


def _inputs(config):
    return keras.Input(shape=(config.sequence_length,), dtype="int32",
                       name="bytes")


def language_model(config, name="byte_lm"):
    """The backbone with a next-byte head.

    Args:
        config: a `BackboneConfig`.
        name: the model's name.

    Returns:
        An uncompiled `keras.Model` from `(batch, sequence_length)` int32
        bytes to `(batch, sequence_length, 256)` logits; its last layer is
        `head`.
    """
    inputs = _inputs(config)
    hidden = _Backbone(config)(inputs)
    outputs = keras.layers.Dense(VOCABULARY, name="head")(hidden)
    return keras.Model(inputs, outputs, name=name)


def classifier(config, classes, source=None, name="byte_classifier"):
    """The backbone with a new classification head.

    The final hidden states are averaged over positions (`pool`) and mapped
    to `classes` logits (`head`, a new `Dense`).

    Args:
        config: a `BackboneConfig`.
        classes: the number of classes (>= 2).
        source: `None`, or a model built by `language_model` (or
            `classifier`) with the same `config` whose backbone weights the
            classifier's (new) backbone layers take.
        name: the model's name.

    Returns:
        An uncompiled `keras.Model` from `(batch, sequence_length)` int32
        bytes to `(batch, classes)` logits.
    """
    if isinstance(classes, bool) or not isinstance(classes, int) or (
        classes < 2
    ):
        raise ValueError(
            f"`classes` must be an integer >= 2. Received: classes={classes!r}"
        )
    inputs = _inputs(config)
    hidden = _Backbone(config)(inputs)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(hidden)
    outputs = keras.layers.Dense(classes, name="head")(pooled)
    model = keras.Model(inputs, outputs, name=name)
    if source is not None:
        for layer_name in backbone_layer_names(config):
            model.get_layer(layer_name).set_weights(
                source.get_layer(layer_name).get_weights())
    return model


def backbone_layer_names(config):
    """The backbone's layer names in input order (no head)."""
    return (["embedding", "position_embedding"]
            + [f"block_{i}" for i in range(config.blocks)] + ["final_norm"])


def block_names(model):
    """The model's layer names in input order, grouped for freezing.

    Groups: every layer below the first `block_<i>` (the embeddings), each
    `block_<i>` alone, then every layer above the last block (final norm and
    head). Input layers are left out.

    Args:
        model: a model built by `language_model` or `classifier` (any
            functional model whose blocks are layers named `block_<i>`).

    Returns:
        A list of lists of layer names, from the input up.
    """
    names = [layer.name for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer)]
    blocks = [i for i, n in enumerate(names) if _BLOCK_NAME.match(n)]
    if not blocks:
        raise ValueError(
            "`model` must have layers named 'block_<i>'. "
            f"Received: a model with layers {names}"
        )
    groups = [names[: blocks[0]]] if blocks[0] else []
    groups += [[names[i]] for i in blocks]
    if blocks != list(range(blocks[0], blocks[-1] + 1)):
        raise ValueError(
            "The blocks must be consecutive layers. "
            f"Received: a model with layers {names}"
        )
    if blocks[-1] + 1 < len(names):
        groups.append(names[blocks[-1] + 1:])
    return groups


def set_frozen_prefix(model, depth, groups=None):
    """Freezes the bottom `depth` groups, makes the rest trainable.

    The model must be compiled again for the change to take effect.

    Args:
        model: the model.
        depth: the number of groups frozen, from the input (0 .. number of
            groups).
        groups: the groups (default: `block_names(model)`).

    Returns:
        The names of the frozen layers.
    """
    groups = block_names(model) if groups is None else groups
    if isinstance(depth, bool) or not isinstance(depth, int) or not (
        0 <= depth <= len(groups)
    ):
        raise ValueError(
            f"`depth` must be an integer in [0, {len(groups)}]. "
            f"Received: depth={depth!r}"
        )
    frozen = [name for group in groups[:depth] for name in group]
    for group in groups:
        for name in group:
            model.get_layer(name).trainable = name not in frozen
    return frozen
