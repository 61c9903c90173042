"""Paying for the open-world head inside the HD head: the hidden units that change its logits least go.

The head grafted into the HD graph adds one (F, K) product per view (`graft`). The HD model's own
head has a hidden layer, `features -> ... -> Dense(H) -> element-wise activation -> Dense(K)`; each of
its H units costs (its Dense's input width + K) multiply-adds. `units_to_pay` is how many units pay
for the graft; `choose` picks the units whose replacement by their mean output changes the logits
least on the fit parts' views (variance of the unit times the squared norm of its outgoing weights);
`prune` removes them from the graph and adds their mean contribution to the logits' bias, so the
frame costs no more multiply-adds than before. The gate is then fitted on the pruned graph's logits
(`logit_shift` corrects the cached ones), so the written graph computes exactly what was fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

# Ops that act on each unit alone (an activation, however exported: GELU becomes Div, Erf, Add, Mul)
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Sigmoid", "Relu", "Clip", "Pow", "Exp", "Identity"}


@dataclass(frozen=True)
class Hidden:
    """The HD head's hidden layer: its output tensor and the initializers of the Dense layers around it
    (`w1` (D, H), `b1` (H,) into the activation; `w2` (H, K), `b2` (K,) out to the logits)."""

    output: str
    w1: str
    b1: str
    w2: str
    b2: str


def dense(nodes: list[onnx.NodeProto], inits: dict, out: str) -> tuple[onnx.NodeProto, str, str] | None:
    """(MatMul, kernel, bias) when `out` is `Add(MatMul(x, kernel), bias)` with both initializers."""
    add = next((n for n in nodes if out in n.output and n.op_type == "Add"), None)
    if add is None:
        return None
    bias = next((i for i in add.input if i in inits), None)
    mm = next((n for n in nodes if n.op_type == "MatMul" and n.output[0] in add.input), None)
    if bias is None or mm is None or mm.input[1] not in inits:
        return None
    return mm, mm.input[1], bias


def hidden_layer(model: onnx.ModelProto, logits: str) -> Hidden | None:
    """The hidden layer before `logits` (the HD head's output before its Sigmoid), or None when the logits
    are not `Dense(activation(Dense(x)))` with element-wise ops between the two Dense layers."""
    nodes, inits = list(model.graph.node), {i.name: i for i in model.graph.initializer}
    top = dense(nodes, inits, logits)
    if top is None:
        return None
    mm2, w2, b2 = top
    hidden, width = mm2.input[0], inits[w2].dims[0]
    frontier, seen = [hidden], set()
    while frontier:  # back through the activation to the Dense layer that feeds it
        name = frontier.pop()
        below = dense(nodes, inits, name)
        if below and list(inits[below[1]].dims)[-1] == width:
            layer = Hidden(hidden, below[1], below[2], w2, b2)
            uses = [i for n in nodes for i in n.input]
            return layer if all(uses.count(getattr(layer, k)) == 1 for k in ("w1", "b1", "w2", "b2")) else None
        if name in seen:
            continue
        node = next((n for n in nodes if name in n.output), None)
        if node is None or node.op_type not in ELEMENTWISE:
            return None
        seen.add(name)
        frontier += [i for i in node.input if i and i not in inits
                     and not any(n.op_type == "Constant" and i in n.output for n in nodes)]
    return None


def weights(model: onnx.ModelProto, layer: Hidden) -> dict[str, np.ndarray]:
    """The layer's four initializers as arrays (keys w1, b1, w2, b2)."""
    inits = {i.name: i for i in model.graph.initializer}
    return {k: numpy_helper.to_array(inits[getattr(layer, k)]) for k in ("w1", "b1", "w2", "b2")}


def units_to_pay(width_in: int, k: int, macs: int) -> int:
    """Hidden units to remove so that `macs` more per view cost none: each saves (width_in + k)."""
    return math.ceil(macs / (width_in + k))


def activations(model: onnx.ModelProto, features: str, layer: Hidden, parts: list[np.ndarray],
                batch: int = 4096) -> list[np.ndarray]:
    """Per (n, F) array of pooled-feature rows in `parts`, its (n, H) float32 hidden activations, by the
    graph's own ops."""
    sub = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([features], [layer.output])
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [np.concatenate([session.run(None, {name: rows[i:i + batch].astype(np.float32)})[0]
                            for i in range(0, len(rows), batch)]) for rows in parts]


def choose(h: np.ndarray, w2: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(units, their means): the `n` units of (rows, H) activations `h` whose replacement by their mean
    changes the logits least (variance times the squared norm of the unit's row of `w2`)."""
    cost = h.var(0, dtype=np.float64) * (w2.astype(np.float64) ** 2).sum(1)
    units = np.sort(np.argsort(cost, kind="stable")[:n])
    return units, h[:, units].mean(0, dtype=np.float64)


def logit_shift(h_units: np.ndarray, means: np.ndarray, w2_units: np.ndarray) -> np.ndarray:
    """(n, K): what pruning adds to the logits of rows whose pruned units' activations are `h_units`."""
    return (means - h_units.astype(np.float64)) @ w2_units.astype(np.float64)


def prune(model: onnx.ModelProto, layer: Hidden, units: np.ndarray, means: np.ndarray) -> None:
    """Remove `units` from the hidden layer of `model` (in place), their mean contribution kept in the bias."""
    w = weights(model, layer)
    keep = np.setdiff1d(np.arange(w["w2"].shape[0]), units)
    new = {"w1": w["w1"][:, keep], "b1": w["b1"][keep], "w2": w["w2"][keep],
           "b2": w["b2"] + (means @ w["w2"][units].astype(np.float64)).astype(w["b2"].dtype)}
    for init in model.graph.initializer:
        for k, arr in new.items():
            if init.name == getattr(layer, k):
                init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), init.name))
    del model.graph.value_info[:]  # the hidden width changed: shapes are inferred again


def pay(model: onnx.ModelProto, features: str, logits: str, evs: list, held: list[np.ndarray],
        macs: int) -> tuple[Hidden, np.ndarray, np.ndarray] | None:
    """Choose the units that pay for `macs` on the fit photos' views (`held`: per set, which photos are
    held out) and correct every set's cached logits (`evs`, SetEvidence, in place) to the pruned graph's;
    (layer, units, means), or None for a head without a hidden layer."""
    layer = hidden_layer(model, logits)
    if layer is None:
        return None
    w = weights(model, layer)
    hs = activations(model, features, layer, [e.features.reshape(-1, e.features.shape[-1]) for e in evs])
    fit = np.concatenate([h.reshape(len(m), -1, h.shape[-1])[~m].reshape(-1, h.shape[-1])
                          for h, m in zip(hs, held, strict=True)])
    units, means = choose(fit, w["w2"], units_to_pay(w["w1"].shape[0], w["w2"].shape[1], macs))
    for e, h in zip(evs, hs, strict=True):
        shift = logit_shift(h[:, units], means, w["w2"][units]).reshape(e.logits.shape)
        e.logits = (e.logits + shift).astype(np.float32)
    return layer, units, means
