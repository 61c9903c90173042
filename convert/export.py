"""Keras model -> ONNX graph: NHWC float32 `images` (0..255 RGB), dynamic batch, `scores` out.

tf2onnx's `from_keras` route over a fixed input signature, under the Keras 3 fixes
of `keras3_fixes.py`; `from_keras` (unlike `from_function`) freezes constants the
model captures (e.g. the Normalization layer's mean/variance) instead of turning
them into extra graph inputs. The result is checked for ops no runtime can execute.

Memory: under protobuf's default upb backend tf2onnx keeps every intermediate
TensorProto alive in message arenas; exporting ConvNeXt-Base peaked above 14 GB,
against 7 GB with `PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python` (ConvNeXt-Tiny:
6.7 -> 2.9 GB), and was faster too (184 -> 129 s). The variable must be set before
anything imports protobuf, so entry points set it (`sixview convert`,
benchmarks/convert_latency.py); this module does not change the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import onnx
import tensorflow as tf
import tf2onnx

from convert.keras3_fixes import UNSUPPORTED_OPS, keras3_fixes
from convert.optimize import optimize
from edge.errors import FatalError
from edge.metadata import INPUT_NAME

OUTPUT_NAME = "scores"
BATCH_DIM = "N"
OPSETS = range(13, 19)  # tf2onnx 1.17 refuses opsets above 18


class ConversionError(FatalError, RuntimeError):
    """The model could not be turned into a graph ONNX Runtime can run."""

    code = "conversion_failed"
    http_status = 500


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types in `model` that are not standard ONNX at its opset (or are known-bad)."""
    opset = {o.domain or "": o.version for o in model.opset_import}
    bad = set()
    for n in model.graph.node:
        domain = n.domain or ""
        name = n.op_type if not domain else f"{domain}.{n.op_type}"
        if n.op_type in UNSUPPORTED_OPS or domain not in ("", "ai.onnx"):
            bad.add(name)
            continue
        try:
            onnx.defs.get_schema(n.op_type, opset.get(domain, 1), domain)
        except onnx.defs.SchemaError:
            bad.add(name)
    return sorted(bad)


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for n in model.graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if vi.name == old:
            vi.name = new


def export_onnx(model: keras.Model, input_size: Sequence[int] | None = None, opset: int = 17,
                optimize_graph: bool = True) -> onnx.ModelProto:
    """Convert a single-input, single-output Keras image model to ONNX.

    Input `images` [N, H, W, 3] float32 0..255 RGB (normalisation is in the model),
    output `scores` [N, K] (the model's own sigmoid outputs). With `optimize_graph`,
    LayerNorm/GELU are rewritten for ONNX Runtime's fusions (`optimize.py`).
    """
    if opset not in OPSETS:
        raise ConversionError(f"opset {opset} not supported (tf2onnx 1.17 handles "
                              f"{OPSETS.start}..{OPSETS.stop - 1})")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError("expected a model with one image input and one score output")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ConversionError(f"expected an NHWC RGB input (N, H, W, 3), model takes {shape}")
    if input_size is None and None in shape[1:3]:
        raise ConversionError("the model takes any image size: give input_size (h, w)")
    h, w = (int(v) for v in (input_size or shape[1:3]))
    if None not in shape[1:3] and (h, w) != tuple(shape[1:3]):
        raise ConversionError(f"input size {h}x{w} differs from the model's {shape[1]}x{shape[2]}")
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name=INPUT_NAME),)
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.ERROR)
    try:
        with keras3_fixes():
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    finally:
        tf2onnx_log.setLevel(level)
    bad = unsupported_ops(proto)
    if bad:
        raise ConversionError(f"converted graph has ops ONNX Runtime cannot run: {', '.join(bad)}")
    _rename(proto, proto.graph.input[0].name, INPUT_NAME)
    _rename(proto, proto.graph.output[0].name, OUTPUT_NAME)
    for vi in (proto.graph.input[0], proto.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    proto.producer_name = "sixview.convert"
    proto.doc_string = f"sixview: {model.name} converted with tf2onnx {tf2onnx.__version__}"
    if optimize_graph:
        proto, _ = optimize(proto)
    onnx.checker.check_model(proto)
    return proto
