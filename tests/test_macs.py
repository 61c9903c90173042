"""Multiply-adds counted from an ONNX graph's shapes: a convolution and a matrix product of known size."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from convert.macs import graph_macs


def test_conv_and_matmul_are_counted_per_input():
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")  # 8 filters of 3x3x3
    m = numpy_helper.from_array(np.zeros((8, 5), np.float32), "m")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # out (1, 8, 4, 4)
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Squeeze", ["g", "axes"], ["s"]),
             helper.make_node("MatMul", ["s", "m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [w, m, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert graph_macs(model) == 8 * 4 * 4 * 27 + 8 * 5
