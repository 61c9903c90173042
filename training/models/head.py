"""The multi-label classification head every sixview backbone ends with.

Global average pooling, LayerNorm, a GELU hidden layer, dropout and one sigmoid
per class (float32 even under mixed precision). Its layers are named `head_*`
and `predictions`, the same for every backbone: transfer learning freezes what
is not the head, and checkpoints copy across by these names.
"""

from __future__ import annotations

import keras
from keras import layers

from training.models.layers import GELU

HEAD_LAYERS = ("head_", "predictions")  # name prefixes of the head's layers
HEAD_NORM = "head_layernorm"


def sigmoid_head(features, num_classes: int, head_width: int = 1024, dropout: float = 0.3):
    """The head on a backbone's (N, H, W, C) features; returns the (N, num_classes) scores."""
    x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    x = layers.LayerNormalization(epsilon=1e-6, name=HEAD_NORM)(x)
    x = layers.Dense(head_width, name="head_dense")(x)
    x = GELU(name="head_gelu")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="sigmoid", dtype="float32", name="predictions")(x)


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers below the classification head (`head_*` and `predictions` excluded)."""
    return [layer for layer in model.layers if not layer.name.startswith(HEAD_LAYERS)]
