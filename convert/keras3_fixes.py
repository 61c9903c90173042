"""Conversion-time fixes that let tf2onnx 1.17 convert Keras 3 models (TensorFlow backend).

Measured with TensorFlow 2.21, Keras 3.15, tf2onnx 1.17, ONNX Runtime 1.31; without
these, ONNX Runtime refuses the converted graph of a keras.applications ConvNeXt:

1. Grouped convolution. Keras' TensorFlow backend runs `Conv2D(groups=C)` inside
   `tf.function(jit_compile=True)` (TF's CPU kernel lacks grouped convolution),
   which reaches tf2onnx as an opaque `StatefulPartitionedCall`. While tracing for
   export we call `tf.nn.convolution` directly: tf2onnx then emits `Conv` with
   `group=C`. (Only the traced graph changes; nothing is executed by TF.)
2. Exact GELU. `tf.nn.gelu(approximate=False)` lowers to `0.5*x*Erfc(-x/sqrt2)` and
   tf2onnx has no `Erfc` handler. We register one: `Erfc(x) = 1 - Erf(x)`
   (`optimize.py` later rewrites the whole GELU into the form ONNX Runtime fuses).

3. Dense on rank > 2 tensors (ConvNeXt's pointwise layers on NHWC maps). Keras traces
   `matmul(x[..., C], W[C, D])` as `tf.tensordot`, which tf2onnx turns into about
   ten Shape/Gather/ReduceProd/Concat/Reshape nodes per layer. While tracing we use
   a broadcasting `tf.linalg.matmul` instead: one ONNX `MatMul`, same numbers.

`keras3_fixes()` applies all three for the duration of a `with` block and undoes them
on exit, so importing this module changes nothing. `tests/test_convert_fixes.py`
fails when a future Keras/tf2onnx makes a fix unnecessary (time to delete it) or
when a fix stops working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from keras.src.backend import standardize_data_format
from keras.src.backend.tensorflow import nn as keras_tf_nn
from keras.src.backend.tensorflow import numpy as keras_tf_np
from tf2onnx import constants, utils
from tf2onnx.handler import tf_op

# Ops that ONNX Runtime cannot run or tf2onnx leaves unconverted: a converted
# graph containing any of them is broken.
UNSUPPORTED_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall", "Erfc", "XlaConv",
                             "XlaConvV2", "TPUPartitionedCall"})

_ERFC_OPSET = 9  # Erf exists from ONNX opset 9


def _plain_grouped_conv(original):
    """`keras` conv that traces grouped 2-D channels-last convolutions without XLA."""

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        fmt = standardize_data_format(data_format)
        if fmt == "channels_last" and len(inputs.shape) == 4 and inputs.shape[-1] != kernel.shape[-2]:
            return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                                     data_format="NHWC", dilations=dilation_rate)
        return original(inputs, kernel, strides=strides, padding=padding,
                        data_format=data_format, dilation_rate=dilation_rate)

    return conv


def _broadcast_matmul(original):
    """`keras` matmul that traces dense float `x[..., C] @ W[C, D]` as one MatMul."""

    def matmul(x1, x2):
        if not (isinstance(x1, tf.SparseTensor) or isinstance(x2, tf.SparseTensor)):
            a, b = keras_tf_np.convert_to_tensor(x1), keras_tf_np.convert_to_tensor(x2)
            if (a.shape.rank is not None and a.shape.rank > 2 and b.shape.rank == 2
                    and a.dtype == b.dtype and a.dtype.is_floating):
                return tf.linalg.matmul(a, b)
        return original(x1, x2)

    return matmul


def _erfc_handler(ctx, node, **kwargs) -> None:
    """tf2onnx handler: Erfc(x) -> 1 - Erf(x)."""
    x, out = node.input[0], node.output[0]
    shapes, dtypes = node.output_shapes, node.output_dtypes
    np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(x))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1.0, dtype=np_dtype))
    ctx.remove_node(node.name)
    erf = ctx.make_node("Erf", [x], op_name_scope=node.name, name="erf",
                        shapes=shapes, dtypes=dtypes)
    ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=[out], name=node.name,
                  shapes=shapes, dtypes=dtypes)


def erfc_handled_natively() -> bool:
    """True when tf2onnx itself has an `Erfc` handler (then fix 2 is unnecessary)."""
    opsets = tf_op.get_opsets().get(constants.ONNX_DOMAIN, [])
    return any("Erfc" in d and d["Erfc"][0] is not _erfc_handler for d in opsets)


@contextlib.contextmanager
def keras3_fixes() -> Iterator[None]:
    """Apply the Keras-3 conversion fixes inside the block; restore everything after."""
    original_conv, original_matmul = keras_tf_nn.conv, keras_tf_np.matmul
    opsets = tf_op.get_opsets().setdefault(constants.ONNX_DOMAIN, [])
    while len(opsets) <= _ERFC_OPSET:
        opsets.append({})
    registered = "Erfc" not in opsets[_ERFC_OPSET]
    keras_tf_nn.conv = _plain_grouped_conv(original_conv)
    keras_tf_np.matmul = _broadcast_matmul(original_matmul)
    if registered:
        opsets[_ERFC_OPSET]["Erfc"] = (_erfc_handler, {})
    try:
        yield
    finally:
        keras_tf_nn.conv, keras_tf_np.matmul = original_conv, original_matmul
        if registered:
            opsets[_ERFC_OPSET].pop("Erfc", None)
