"""Paying for the open-world head inside the HD head: the hidden units that change its logits least go.

The head grafted into the HD graph adds one (F, K) product per view (`graft`). The HD model's own
head, `LayerNorm -> Dense(H) -> GELU -> Dense(K)` (`head_graph`), has a hidden layer; each of its H
units costs (its Dense's input width + K) multiply-adds. `units_to_pay` is how many units pay
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

from training.openworld.head_graph import head_tensors, head_weights, logits_dense


@dataclass(frozen=True)
class Hidden:
    """The HD head's hidden layer: its output tensor (the GELU's) and the initializers of the Dense layers
    around it (`w1` (D, H), `b1` (H,) into the activation; `w2` (H, K), `b2` (K,) out to the logits)."""

    output: str
    w1: str
    b1: str
    w2: str
    b2: str


def hidden_layer(model: onnx.ModelProto) -> Hidden | None:
    """The hidden layer of an HD head shaped as shipped (`head_graph.head_weights`), or None for another."""
    try:
        names = head_weights(model)[0]
    except ValueError:
        return None
    mm2 = logits_dense(model)[0]
    return Hidden(mm2.input[0], *names[2:])


def weights(model: onnx.ModelProto, layer: Hidden) -> dict[str, np.ndarray]:
    """The layer's four initializers as arrays (keys w1, b1, w2, b2)."""
    inits = {i.name: i for i in model.graph.initializer}
    return {k: numpy_helper.to_array(inits[getattr(layer, k)]) for k in ("w1", "b1", "w2", "b2")}


def units_to_pay(width_in: int, k: int, macs: int) -> int:
    """Hidden units to remove so that `macs` more per view cost none: each saves (width_in + k)."""
    return math.ceil(macs / (width_in + k))


def activations(model: onnx.ModelProto, layer: Hidden, parts: list[np.ndarray], batch: int = 4096) -> list[np.ndarray]:
    """Per (n, F) array of pooled-feature rows in `parts`, its (n, H) float32 hidden activations, by the
    graph's own ops."""
    features = head_tensors(model)[0]
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


def pay(model: onnx.ModelProto, evs: list, held: list[np.ndarray],
        macs: int) -> tuple[Hidden, np.ndarray, np.ndarray] | None:
    """Choose the units that pay for `macs` on the fit photos' views (`held`: per set, which photos are
    held out) and correct every set's cached logits (`evs`, SetEvidence, in place) to the pruned graph's;
    (layer, units, means), or None for a head not shaped as shipped (no hidden layer to pay with)."""
    layer = hidden_layer(model)
    if layer is None:
        return None
    w = weights(model, layer)
    hs = activations(model, layer, [e.features.reshape(-1, e.features.shape[-1]) for e in evs])
    fit = np.concatenate([h.reshape(len(m), -1, h.shape[-1])[~m].reshape(-1, h.shape[-1])
                          for h, m in zip(hs, held, strict=True)])
    units, means = choose(fit, w["w2"], units_to_pay(w["w1"].shape[0], w["w2"].shape[1], macs))
    for e, h in zip(evs, hs, strict=True):
        shift = logit_shift(h[:, units], means, w["w2"][units]).reshape(e.logits.shape)
        e.logits = (e.logits + shift).astype(np.float32)
    return layer, units, means
