"""A graph shaped like the HD model's head, for tests of what is done to it (tuning, grafting, pruning)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def head_graph(rng: np.random.Generator, f: int, h: int, k: int, spatial: int = 4) -> onnx.ModelProto:
    """images (N, spatial, spatial, f) -> GAP -> LayerNorm -> Dense(h) -> GELU (erf, as exported) -> Dense(k)
    -> Sigmoid, random weights; the pooled features are tensor `pooled`, the logits `z`."""
    init = {"gamma": np.ones(f), "beta": np.zeros(f), "w1": rng.normal(0, 0.3, (f, h)), "b1": np.zeros(h),
            "w2": rng.normal(0, 0.3, (h, k)), "b2": np.zeros(k), "sqrt2": np.array(np.sqrt(2)),
            "one": np.array(1.0), "half": np.array(0.5)}
    n = helper.make_node
    nodes = [n("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]), n("GlobalAveragePool", ["nchw"], ["gap"]),
             n("Flatten", ["gap"], ["pooled"]),
             n("LayerNormalization", ["pooled", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-3),
             n("MatMul", ["ln", "w1"], ["mm1"]), n("Add", ["mm1", "b1"], ["h"]), n("Div", ["h", "sqrt2"], ["hd"]),
             n("Erf", ["hd"], ["he"]), n("Add", ["he", "one"], ["h1"]), n("Mul", ["h", "h1"], ["hm"]),
             n("Mul", ["hm", "half"], ["g"]), n("MatMul", ["g", "w2"], ["mm2"]), n("Add", ["mm2", "b2"], ["z"]),
             n("Sigmoid", ["z"], ["scores"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            ["N", spatial, spatial, f])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k])],
                              [numpy_helper.from_array(v.astype(np.float32), name) for name, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def set_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace initializer `name` of `model` (in place)."""
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
