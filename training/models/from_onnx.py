"""An EfficientNet-Lite backbone's weights read back from its exported ONNX graph, and written into it.

The shipped HD file is the only copy of the adapted backbone's weights. Its graph (tf2onnx, then
`convert.optimize`) keeps the Keras layer names in its node and initializer names, but batch norm is
folded: a convolution followed by batch norm became one Conv with a bias, and a depthwise
convolution's batch norm became a Mul (scale) and an Add (bias). So each Keras convolution gets the
Conv's kernel (OIHW -> HWIO, depthwise (C, 1, h, w) -> (h, w, C, 1)) and each Keras BatchNormalization
becomes the affine map it folded into: mean 0, variance 1 - eps (so x / sqrt(var + eps) = x), gamma
the scale (1 where the Conv absorbed it), beta the bias. The network then computes what the graph does
(`tests/test_distill.py`), and with its batch norms frozen, training changes only convolution
kernels, which `write_kernels` puts back into the graph's own initializers.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import onnx
from onnx import numpy_helper

from training.models.efficientnet_lite import BN_EPS

_LAYER = re.compile(r"(lite\d_[a-z0-9_]+?)_1/")  # a Keras layer's name inside a tf2onnx tensor name


def _layer(*names: str) -> str | None:
    """The Keras layer named in the first of `names` that names one."""
    return next((m.group(1) for m in map(_LAYER.search, names) if m), None)


def conv_map(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """{Keras layer: {"kernel" | "scale" | "bias": initializer}} for the backbone's convolutions and batch
    norms (a folded batch norm's "bias" is its Conv's bias; it has no "scale"; tf2onnx drops a zero bias)."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, dict[str, str]] = {}
    for n in model.graph.node:
        consts = [i for i in n.input if i in inits]
        if n.op_type == "Conv":
            conv = _layer(n.name, consts[0])
            if conv is None:
                raise ValueError(f"ONNX Conv {n.name!r} names no Keras layer: not an exported sixview graph")
            out.setdefault(conv, {})["kernel"] = n.input[1]
            if "/batchnorm/" in n.output[0]:  # a batch norm folded in; its bias dropped if it was zero
                out.setdefault(_layer(n.output[0]), {})
            if len(n.input) > 2:
                out.setdefault(_layer(n.input[2]), {})["bias"] = n.input[2]
        elif n.op_type in ("Mul", "Add") and "/batchnorm/" in n.name and len(consts) == 1:
            out.setdefault(_layer(n.name), {})["scale" if n.op_type == "Mul" else "bias"] = consts[0]
    return out


def _kernel(value: np.ndarray, depthwise: bool) -> np.ndarray:
    """An ONNX kernel in Keras' layout: OIHW -> HWIO, depthwise (C, 1, h, w) -> (h, w, C, 1)."""
    return value.transpose(2, 3, 0, 1) if depthwise else value.transpose(2, 3, 1, 0)


def _onnx_kernel(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """The inverse of `_kernel`."""
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(3, 2, 0, 1))


def load_backbone(keras_model: keras.Model, model: onnx.ModelProto) -> int:
    """Set `keras_model`'s convolutions and batch norms from the exported graph `model`; returns the number
    of layers set. A ValueError when a backbone layer has no counterpart in the graph."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found, done = conv_map(model), 0
    for layer in keras_model.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.BatchNormalization):
            continue
        names = found.get(layer.name)
        if names is None:
            raise ValueError(f"the ONNX graph has no weights for the Keras layer {layer.name!r}")
        if isinstance(layer, keras.layers.BatchNormalization):
            zeros = np.zeros_like(layer.get_weights()[0])
            bias = inits[names["bias"]].reshape(-1) if "bias" in names else zeros
            scale = inits[names["scale"]].reshape(-1) if "scale" in names else zeros + 1.0
            layer.set_weights([scale, bias, zeros, zeros + (1.0 - BN_EPS)])
        else:
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            layer.set_weights([_kernel(inits[names["kernel"]], depthwise)])
        done += 1
    return done


def write_kernels(keras_model: keras.Model, model: onnx.ModelProto) -> int:
    """Put `keras_model`'s convolution kernels into the graph `model`'s initializers (in place); returns how
    many. The batch norms are not written: they must be the ones `load_backbone` set (frozen)."""
    found = conv_map(model)
    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for layer in keras_model.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            continue
        name = found[layer.name]["kernel"]
        value = _onnx_kernel(np.asarray(layer.get_weights()[0], np.float32),
                             isinstance(layer, keras.layers.DepthwiseConv2D))
        if tuple(inits[name].dims) != value.shape:
            raise ValueError(f"{layer.name}: kernel {value.shape} does not fit the graph's {tuple(inits[name].dims)}")
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
        done += 1
    return done
