"""Writing the open-world head into the HD graph: one graph, one output, the same decision rule.

The head's two linear maps become five nodes between the HD model's pooled features, its
logits and its final Sigmoid (`head_tensors`):

    other  = features @ other_w + other_b                 (N, 1)
    logits = a * logits + b * other + features @ u + d    (N, K)
    scores = Sigmoid(logits)                              the graph's output, as before

so every backend runs it unchanged, and the runtime's decision (merge, thresholds) applies to
the new scores. The metadata keeps the model's, with the head's provenance added and the
thresholds, merge and presence threshold reset to the defaults: they were chosen for the old
scores, and `sixview eval --calibrate --fit-merge` chooses them again on held-out photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convert.fp16 import write_pair
from convert.metadata import fresh_decision, read_meta
from convert.onepass import FEATURES, pooled_head
from training.openworld.head import OpenHead

PREFIX = "sixview_open/"


def head_tensors(model: onnx.ModelProto) -> tuple[str, str]:
    """The names of the pooled-features tensor (the head's input, after the global average pool, or a
    one-pass graph's window means) and of the logits (the input of the final Sigmoid, the graph's output)
    in an HD graph."""
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    sig = next(n for n in reversed(nodes) if n.op_type == "Sigmoid" and n.output[0] in outputs)
    if any(FEATURES in n.input for n in nodes):  # a one-pass graph: its views' pooled rows
        return FEATURES, sig.input[0]
    return pooled_head(nodes)[1].output[0], sig.input[0]


def graft(model: onnx.ModelProto, head: OpenHead) -> onnx.ModelProto:
    """A copy of the HD graph with `head` between its features, logits and Sigmoid."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    features, logits = head_tensors(out)
    consts = {"other_w": head.other_w.reshape(-1, 1), "other_b": np.array([head.other_b]),
              "a": head.a, "b": head.b, "d": head.d, "u": head.u}
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), PREFIX + k)
                                 for k, v in consts.items())
    p = PREFIX
    nodes = [helper.make_node("MatMul", [features, p + "other_w"], [p + "other_mm"], name=p + "OtherMatMul"),
             helper.make_node("Add", [p + "other_mm", p + "other_b"], [p + "other"], name=p + "OtherAdd"),
             helper.make_node("Mul", [logits, p + "a"], [p + "za"], name=p + "ScaleLogits"),
             helper.make_node("Mul", [p + "other", p + "b"], [p + "ob"], name=p + "ScaleOther"),
             helper.make_node("Add", [p + "za", p + "ob"], [p + "zo"], name=p + "AddOther"),
             helper.make_node("MatMul", [features, p + "u"], [p + "fu"], name=p + "FeatureMatMul"),
             helper.make_node("Add", [p + "zo", p + "fu"], [p + "zf"], name=p + "AddFeatures"),
             helper.make_node("Add", [p + "zf", p + "d"], [p + "logits"], name=p + "AddBias")]
    sig = next(n for n in out.graph.node if n.op_type == "Sigmoid" and n.input[0] == logits)
    sig.input[0] = p + "logits"
    index = list(out.graph.node).index(sig)
    for k, node in enumerate(nodes):
        out.graph.node.insert(index + k, node)
    onnx.checker.check_model(out)
    return out


def head_macs(head: OpenHead) -> int:
    """Multiply-adds the head adds per view (its two products with the features, the per-class scaling)."""
    return int(head.other_w.size + head.u.size + 2 * head.a.size)


def write_models(hd_onnx: Path, head: OpenHead, provenance: dict[str, Any], out: Path) -> list[Path]:
    """`out/hd.onnx` (FP32) and `out/hd.fp16.onnx` with the head grafted and the metadata updated."""
    model = onnx.load(str(hd_onnx))
    meta = read_meta(model, str(hd_onnx))
    prov = {**meta.provenance, "open_world": provenance}
    prov["training_data"] = sorted({*prov.get("training_data", []), *provenance.get("sets", [])})
    return write_pair(graft(model, head), fresh_decision(meta, prov), out)
