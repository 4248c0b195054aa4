"""The causal transformer of the `stdlib-gpt` benchmark task."""

import keras


@keras.saving.register_keras_serializable(package="keras_hybrid")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length,
    width)` input.

    Args:
        length: the sequence length.
        width: the embedding width.
    """

    def __init__(self, length, width, **kwargs):
        super().__init__(**kwargs)
        self.length = int(length)
        self.width = int(width)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.length, self.width),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embeddings",
        )

    def call(self, inputs):
        return inputs + self.embeddings[None, : keras.ops.shape(inputs)[1]]

    def get_config(self):
        return {**super().get_config(), "length": self.length,
                "width": self.width}


def _transformer_block(h, width, heads):
    a = keras.layers.LayerNormalization(epsilon=1e-5)(h)
    a = keras.layers.MultiHeadAttention(
        num_heads=heads, key_dim=width // heads
    )(a, a, use_causal_mask=True)
    h = keras.layers.Add()([h, a])
    m = keras.layers.LayerNormalization(epsilon=1e-5)(h)
    m = keras.layers.Dense(4 * width, activation="gelu")(m)
    m = keras.layers.Dense(width)(m)
    return keras.layers.Add()([h, m])


def byte_transformer(sequence_length, width=128, blocks=2, heads=4):
    """A pre-norm causal transformer over bytes (256 classes).

    Args:
        sequence_length: the input length.
        width: the model width.
        blocks: the number of blocks (attention + MLP of `4 * width`).
        heads: attention heads per block.

    Returns:
        An uncompiled `keras.Model` from `(batch, sequence_length)` int32
        bytes to `(batch, sequence_length, 256)` logits.
    """
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="bytes")
    h = keras.layers.Embedding(256, width)(inputs)
    h = PositionEmbedding(sequence_length, width)(h)
    for _ in range(blocks):
        h = _transformer_block(h, width, heads)
    h = keras.layers.LayerNormalization(epsilon=1e-5)(h)
    outputs = keras.layers.Dense(256, name="logits")(h)
    return keras.Model(inputs, outputs, name="stdlib_gpt")
