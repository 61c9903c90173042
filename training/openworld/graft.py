"""Writing the open-world head into the HD graph: one graph, one output, the same decision rule.

The head's logits, `a * z + b * other + features @ u + d` with `other = features @ other_w + other_b`,
are folded into the HD head's own last Dense layer (`z = h @ w2 + b2`) and one product of the features:

    w2' = w2 * a,   b2' = a * b2 + b * other_b + d,   u' = u + other_w (x) b
    logits = h @ w2' + b2' + features @ u'           (two nodes: MatMul, Add)
    scores = Sigmoid(logits)                          the graph's output, as before

so every backend runs it unchanged, and the runtime's decision (merge, thresholds) applies to the
new scores. With `pruned` (`prune.pay`), the hidden units that pay for the product's multiply-adds
are removed first. The metadata keeps the model's, with the head's provenance added and the
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
from convert.metadata import fresh_decision
from edge.metadata import ModelMeta
from training.openworld.head import OpenHead
from training.openworld.head_graph import head_tensors, logits_dense
from training.openworld.prune import Hidden, prune

PREFIX = "sixview_open/"


def graft(model: onnx.ModelProto, head: OpenHead,
          pruned: tuple[Hidden, np.ndarray, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of the HD graph whose logits are `head`'s, folded as the module says; a ValueError when the
    logits are not a Dense layer's."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    features, logits = head_tensors(out)
    if pruned:
        prune(out, *pruned)
    inits = {i.name: i for i in out.graph.initializer}
    mm, b2 = logits_dense(out)
    w2 = mm.input[1]
    a, b = np.asarray(head.a, np.float64), np.asarray(head.b, np.float64)
    new = {w2: numpy_helper.to_array(inits[w2]) * a,
           b2: a * numpy_helper.to_array(inits[b2]) + b * head.other_b + head.d}
    for name, value in new.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    u = head.u + np.outer(head.other_w, b)
    out.graph.initializer.append(numpy_helper.from_array(np.asarray(u, np.float32), PREFIX + "u"))
    nodes = [helper.make_node("MatMul", [features, PREFIX + "u"], [PREFIX + "fu"], name=PREFIX + "FeatureMatMul"),
             helper.make_node("Add", [logits, PREFIX + "fu"], [PREFIX + "logits"], name=PREFIX + "AddFeatures")]
    sig = next(n for n in out.graph.node if n.op_type == "Sigmoid" and n.input[0] == logits)
    sig.input[0] = PREFIX + "logits"
    index = list(out.graph.node).index(sig)
    for k, node in enumerate(nodes):
        out.graph.node.insert(index + k, node)
    onnx.checker.check_model(out)
    return out


def write_models(meta: ModelMeta, grafted: onnx.ModelProto, provenance: dict[str, Any], out: Path) -> list[Path]:
    """`out/hd.onnx` (FP32) and `out/hd.fp16.onnx`: `grafted` (`graft` of the HD file whose metadata is
    `meta`) with that metadata updated."""
    prov = {**meta.provenance, "open_world": provenance}
    prov["training_data"] = sorted({*prov.get("training_data", []), *provenance.get("sets", [])})
    return write_pair(grafted, fresh_decision(meta, prov), out)
