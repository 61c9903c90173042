"""Custom Keras layers of sixview's ConvNeXt, registered for `.keras` loading.

Import this module before `keras.models.load_model` on a sixview checkpoint.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sixview")
class LayerScale(keras.layers.Layer):
    """Per-channel learnable scale (gamma), initialised to a small constant."""

    def __init__(self, init_values: float = 1e-6, projection_dim: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_values = float(init_values)
        self.projection_dim = int(projection_dim)

    def build(self, input_shape) -> None:
        """Create gamma, one value per channel."""
        dim = self.projection_dim or int(input_shape[-1])
        self.gamma = self.add_weight(
            name="gamma", shape=(dim,),
            initializer=keras.initializers.Constant(self.init_values), trainable=True)

    def call(self, x):
        """Scale `x` channel-wise."""
        return x * ops.cast(self.gamma, x.dtype)

    def get_config(self) -> dict:
        """Serializable configuration."""
        return {**super().get_config(), "init_values": self.init_values,
                "projection_dim": self.projection_dim}


@keras.saving.register_keras_serializable(package="sixview")
class StochasticDepth(keras.layers.Layer):
    """Drop the residual branch per sample while training (drop path).

    The keep mask is cast to the input's dtype, so it works under mixed
    precision (Keras' own ConvNeXt version mixes float16 and float32 there).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self._rng = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, x, training=None):
        """Identity at inference; x / keep * Bernoulli(keep) per sample in training."""
        if not training or self.rate <= 0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, 0.0, 1.0, dtype="float32", seed=self._rng)
        mask = ops.cast(ops.floor(keep + noise) / keep, x.dtype)
        return x * mask

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict:
        """Serializable configuration."""
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="sixview")
class GELU(keras.layers.Layer):
    """Exact GELU written with erf: 0.5 * x * (1 + erf(x / sqrt(2))).

    Same values as Keras' "gelu", but TensorFlow's own kernel lowers to Erfc,
    which tf2onnx 1.17 cannot convert; Erf maps to ONNX directly and ONNX
    Runtime fuses the pattern into its Gelu kernel.
    """

    def call(self, x):
        """Apply GELU element-wise."""
        half = ops.cast(0.5, x.dtype)
        return half * x * (ops.cast(1.0, x.dtype) + ops.erf(x * ops.cast(0.7071067811865476, x.dtype)))

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape


@keras.saving.register_keras_serializable(package="sixview")
class Normalize(keras.layers.Layer):
    """(x - mean) / std per channel with constants baked into the graph.

    Replaces keras.layers.Normalization, whose mean/variance tensors tf2onnx
    sees as extra graph inputs.
    """

    def __init__(self, mean: list[float], std: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, x):
        """Normalise the last axis."""
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        inv = ops.convert_to_tensor([1.0 / s for s in self.std], dtype=x.dtype)
        return (x - mean) * inv

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict:
        """Serializable configuration."""
        return {**super().get_config(), "mean": self.mean, "std": self.std}
