"""ConvNeXt for sixview: Tiny/Small/Base (ImageNet-compatible layer names) and Edge.

Blocks use `DepthwiseConv2D(7)` rather than `Conv2D(groups=C)` (several times
faster on CPU in Keras and in exported graphs) and 1x1 `Conv2D` rather than
`Dense` for the pointwise layers; ImageNet weights from `keras.applications`
are copied in with kernel reshapes (`training.models.factory`). The model takes
0..255 RGB float32 NHWC and normalises with ImageNet mean/std inside. GELU is
written with erf (`training.models.layers.GELU`) so tf2onnx can export it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from training.models.archs import CONVNEXTS
from training.models.head import sigmoid_head
from training.models.layers import GELU, LayerScale, Normalize, StochasticDepth

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def scaled_widths(widths: Sequence[int], scale: float) -> tuple[int, ...]:
    """Stage widths times `scale`, rounded to multiples of 8 (at least 8)."""
    return tuple(max(8, int(round(w * scale / 8)) * 8) for w in widths)


def _block(x, dim: int, drop: float, ls_init: float, name: str):
    r = x
    x = layers.DepthwiseConv2D(7, padding="same", name=f"{name}_depthwise_conv")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_layernorm")(x)
    # 1x1 convolutions, not Dense: same maths and weights (reshaped), but Dense on
    # NHWC exports as dynamic reshapes around MatMul, 4x slower in ONNX Runtime
    # (six views at 128 px: 113 against 27 ms); training is no slower
    x = layers.Conv2D(4 * dim, 1, name=f"{name}_pointwise_conv_1")(x)
    x = GELU(name=f"{name}_gelu")(x)
    x = layers.Conv2D(dim, 1, name=f"{name}_pointwise_conv_2")(x)
    x = LayerScale(ls_init, dim, name=f"{name}_layer_scale")(x)
    if drop > 0:
        x = StochasticDepth(drop, name=f"{name}_stochastic_depth")(x)
    return layers.Add(name=f"{name}_add")([r, x])


def build_convnext(arch: str, num_classes: int, input_size: tuple[int, int], head_width: int = 1024,
                   drop_path: float = 0.0, dropout: float = 0.3, width_scale: float = 1.0,
                   depths: Sequence[int] | None = None, layer_scale_init: float = 1e-6) -> keras.Model:
    """An untrained ConvNeXt `arch` (a key of `CONVNEXTS`) with the sigmoid head.
    `width_scale`/`depths` shrink the design (tests)."""
    spec = CONVNEXTS[arch]
    widths = scaled_widths(spec["widths"], width_scale)
    depths = tuple(depths or spec["depths"])
    if len(depths) != 4:
        raise ValueError(f"depths must have 4 stages, got {depths}")
    h, w = input_size
    p = arch.replace("-", "_")
    inputs = keras.Input((h, w, 3), name="image")
    x = Normalize(IMAGENET_MEAN, IMAGENET_STD, name=f"{p}_prestem_normalization")(inputs)
    x = layers.Conv2D(widths[0], 4, strides=4, name=f"{p}_stem_conv")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_stem_layernorm")(x)
    rates = np.linspace(0.0, drop_path, sum(depths)).tolist()
    k = 0
    for i, (dim, depth) in enumerate(zip(widths, depths, strict=True)):
        if i > 0:
            x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_downsampling_layernorm_{i - 1}")(x)
            x = layers.Conv2D(dim, 2, strides=2, name=f"{p}_downsampling_conv_{i - 1}")(x)
        for j in range(depth):
            x = _block(x, dim, rates[k], layer_scale_init, f"{p}_stage_{i}_block_{j}")
            k += 1
    out = sigmoid_head(x, num_classes, head_width, dropout)
    return keras.Model(inputs, out, name=f"sixview_{p}")
