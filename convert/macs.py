"""Counting the multiply-adds of an ONNX graph for one input (a view), from its shapes.

Convolutions (out elements x kernel area x input channels per group) and matrix products
(MatMul, Gemm) are counted; element-wise ops, pooling and normalisation are left out (they
are a small share of a convolution net's work and not multiply-adds of weights). Shapes come
from ONNX shape inference with the batch set to 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from convert.metadata import read_meta
from edge.metadata import VIEWS_PER_FRAME


def _fixed(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for inp in out.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return shape_inference.infer_shapes(out)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def graph_macs(model: onnx.ModelProto) -> int:
    """Multiply-adds of `model` for a batch of one (convolutions and matrix products)."""
    model = _fixed(model)
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out:
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b:
                total += int(np.prod(a)) * int(b[-1] if node.op_type == "MatMul" or not _trans_b(node) else b[0])
    return total


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def frame_macs(path: str | Path) -> int:
    """Multiply-adds of one six-view frame through a sixview ONNX file: its input's, times the inputs a frame
    takes (six views; one frame for a one-pass graph, whose metadata says so)."""
    model = onnx.load(str(path))
    inputs = read_meta(model, str(path)).frame_inputs if model.metadata_props else VIEWS_PER_FRAME
    return graph_macs(model) * inputs
