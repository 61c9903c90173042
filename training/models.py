"""ConvNeXt builders for sixview: Tiny/Small/Base (ImageNet-compatible) and Edge.

Blocks use `DepthwiseConv2D(7)` rather than `Conv2D(groups=C)` (several times
faster on CPU in Keras and in exported graphs, see DESIGN.md) and 1x1 `Conv2D`
rather than `Dense` for the pointwise layers; ImageNet weights from
`keras.applications` are copied in with kernel reshapes. The model takes
0..255 RGB float32 NHWC and normalises with ImageNet mean/std inside. GELU is
written with erf (`training.layers.GELU`) so tf2onnx can export it.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from training.errors import WeightsError  # noqa: E402
from training.layers import GELU, LayerScale, Normalize, StochasticDepth  # noqa: E402

ARCHS: dict[str, dict] = {
    "convnext-tiny": {"depths": (3, 3, 9, 3), "widths": (96, 192, 384, 768)},
    "convnext-small": {"depths": (3, 3, 27, 3), "widths": (96, 192, 384, 768)},
    "convnext-base": {"depths": (3, 3, 27, 3), "widths": (128, 256, 512, 1024)},
    "convnext-edge": {"depths": (2, 2, 6, 2), "widths": (32, 64, 128, 256)},
}
# ImageNet-pretrained edge backbone ported from PyTorch weights (training/efficientnet.py)
EFFICIENTNETS = ("efficientnet-lite0",)
ALL_ARCHS = (*ARCHS, *EFFICIENTNETS)
KERAS_APPS = {"convnext-tiny": "ConvNeXtTiny", "convnext-small": "ConvNeXtSmall",
              "convnext-base": "ConvNeXtBase"}
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def default_lr(arch: str, weights: str = "none") -> float:
    """Learning rate per architecture: 5e-5 for pretrained Base (the reference), else by size."""
    pretrained = weights not in ("none", "", None)
    if pretrained:
        return 5e-5 if arch == "convnext-base" else 1e-4
    return 2e-3 if arch == "convnext-edge" else 1e-3


def use_jit(setting: str) -> bool:
    """XLA for the train step: "auto" = only with a GPU (on CPU XLA made our ConvNeXt
    train ~15x slower: 37 against 535 images/s at 32 px on 2 cores)."""
    if setting == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return setting in ("on", "true", "1", True)


def _size(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = (int(v) for v in input_size)
    return (h, w)


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


def build_model(arch: str, num_classes: int, input_size: int | Sequence[int] = 224,
                weights: str | Path = "none", head_width: int = 1024, drop_path: float = 0.0,
                dropout: float = 0.3, width_scale: float = 1.0,
                depths: Sequence[int] | None = None, layer_scale_init: float = 1e-6) -> keras.Model:
    """Build a sixview ConvNeXt classifier (sigmoid outputs, float32).

    `weights`: "none", "imagenet" (tiny/small/base: keras.applications weights,
    from ~/.keras/models/ or downloaded) or a path (`.keras` run checkpoint or
    `.weights.h5`/`.h5` file). `width_scale`/`depths` shrink the design (tests).
    Uses the current global Keras dtype policy (set it for mixed precision).
    """
    if arch in EFFICIENTNETS:
        return _build_efficientnet(num_classes, _size(input_size), weights, head_width, drop_path, dropout)
    if arch not in ARCHS:
        raise WeightsError(f"unknown --arch {arch!r} (choose from {', '.join(ALL_ARCHS)})")
    spec = ARCHS[arch]
    widths = scaled_widths(spec["widths"], width_scale)
    depths = tuple(depths or spec["depths"])
    if len(depths) != 4:
        raise ValueError(f"depths must have 4 stages, got {depths}")
    h, w = _size(input_size)
    if h < 32 or w < 32:
        raise ValueError(f"input size must be at least 32x32, got {h}x{w}")
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
    x = layers.GlobalAveragePooling2D(name="head_gap")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="head_layernorm")(x)
    x = layers.Dense(head_width, name="head_dense")(x)
    x = GELU(name="head_gelu")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    out = layers.Dense(num_classes, activation="sigmoid", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, out, name=f"sixview_{p}")
    source = str(weights)
    if source == "imagenet":
        load_imagenet(model, arch, (h, w))
    elif source not in ("none", ""):
        load_weights_file(model, Path(source).expanduser(), arch)
    return model


def _build_efficientnet(num_classes: int, size: tuple[int, int], weights: str | Path, head_width: int,
                        drop_path: float, dropout: float) -> keras.Model:
    from training.efficientnet import build_lite0, load_torch_weights

    if min(size) < 32:
        raise ValueError(f"input size must be at least 32x32, got {size[0]}x{size[1]}")
    model = build_lite0(num_classes, size, head_width=head_width, drop_path=drop_path, dropout=dropout)
    source = str(weights)
    if source == "imagenet":
        load_torch_weights(model)
    elif source.endswith(".pth"):
        load_torch_weights(model, Path(source).expanduser())
    elif source not in ("none", ""):
        load_weights_file(model, Path(source).expanduser(), "efficientnet-lite0")
    return model


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers below the classification head (`head_*` and `predictions` excluded)."""
    return [layer for layer in model.layers if not layer.name.startswith(("head_", "predictions"))]


def weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Layers of `model` (nested ones included) that hold weights, by name."""
    out = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.weights and not isinstance(layer, keras.Model):
            out[layer.name] = layer
    return out


def _copy_layer(src: keras.layers.Layer, dst: keras.layers.Layer) -> None:
    vals = src.get_weights()
    targets = [v.shape for v in dst.weights]
    fixed = []
    for v, shape in zip(vals, targets, strict=True):
        if v.shape != tuple(shape) and v.size == int(np.prod(shape)):
            v = v.reshape(shape)  # grouped (7,7,1,C) -> depthwise (7,7,C,1)
        fixed.append(v)
    dst.set_weights(fixed)


def copy_backbone(ref: keras.Model, model: keras.Model, final_norm_to: str | None = None) -> int:
    """Copy weights layer by layer, by name, from `ref` into `model`; return layers copied.

    `final_norm_to` names the layer of `model` that receives `ref`'s unnamed last
    LayerNormalization (keras.applications adds one after the backbone).
    """
    mine = weighted_layers(model)
    theirs = weighted_layers(ref)
    copied = 0
    for name, layer in theirs.items():
        target = mine.get(name)
        if target is None and final_norm_to and isinstance(layer, layers.LayerNormalization) \
                and name.startswith("layer_normalization"):
            target = mine.get(final_norm_to)
        if target is None:
            continue
        if [tuple(v.shape) for v in target.weights] != [tuple(v.shape) for v in layer.weights] \
                and not all(int(np.prod(a.shape)) == int(np.prod(b.shape))
                            for a, b in zip(target.weights, layer.weights, strict=False)):
            continue
        _copy_layer(layer, target)
        copied += 1
    return copied


def imagenet_file(arch: str) -> str:
    """File name keras.applications uses for the no-top ImageNet weights of `arch`."""
    return f"{arch.replace('-', '_')}_notop.h5"


def load_imagenet(model: keras.Model, arch: str, input_size: tuple[int, int]) -> None:
    """Load keras.applications ImageNet weights of `arch` into `model` (backbone + head norm)."""
    if arch not in KERAS_APPS:
        raise WeightsError(f"--weights imagenet is available for {', '.join(KERAS_APPS)}, "
                           f"not {arch} (train it from scratch with --weights none)")
    fname = imagenet_file(arch)
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"
    app = getattr(keras.applications, KERAS_APPS[arch])
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ref = app(include_top=False, weights="imagenet", input_shape=(*input_size, 3))
    except Exception as e:  # keras raises a bare Exception on a failed download
        reason = str(e).split(" -- ")[-1].strip().splitlines()[0][:120]
        raise WeightsError(
            f"ImageNet weights for {arch} are not available: could not get {fname} "
            f"({reason}); download it from "
            f"https://storage.googleapis.com/tensorflow/keras-applications/convnext/{fname} "
            f"and place it in {home}/") from None
    n = copy_backbone(ref, model, final_norm_to="head_layernorm")
    expected = len(weighted_layers(ref))
    if n != expected:
        raise WeightsError(f"ImageNet weights for {arch}: copied {n} of {expected} layers")


def load_weights_file(model: keras.Model, path: Path, arch: str) -> None:
    """Load weights from a local file: a `.keras` checkpoint, our `.weights.h5`, or a
    keras.applications ConvNeXt `.h5` (no-top) file."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.name.endswith(".keras"):
        import training.layers  # noqa: F401  (registers custom layers)

        try:
            ref = keras.models.load_model(path, compile=False)
        except Exception as e:
            raise WeightsError(f"{path}: cannot load checkpoint ({str(e).splitlines()[0]})") from None
        if copy_backbone(ref, model) == 0:
            raise WeightsError(f"{path}: no layer matches {arch}")
        return
    try:
        model.load_weights(path)
        return
    except Exception as first:
        if arch not in KERAS_APPS:
            raise WeightsError(f"{path}: cannot load weights ({str(first).splitlines()[0]})") from None
    try:
        app = getattr(keras.applications, KERAS_APPS[arch])
        ref = app(include_top=False, weights=str(path), input_shape=tuple(model.input_shape[1:]))
    except Exception as e:
        raise WeightsError(f"{path}: cannot load weights ({str(e).splitlines()[0]})") from None
    copy_backbone(ref, model, final_norm_to="head_layernorm")
