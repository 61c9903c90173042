"""Where the HD head sits in an exported HD graph: its input and output tensors and its Dense layers.

The head reads the pooled backbone features (a one-pass graph: each view's window means) and ends in
logits, the input of the graph's final Sigmoid; the shipped head is `LayerNorm -> Dense -> GELU -> Dense`.
The open-world run reads evidence at those tensors (`extract`), fine-tunes the head's weights (`tune`),
prunes its hidden units (`prune`) and folds the open-world head into its last Dense layer (`graft`).
"""

from __future__ import annotations

import onnx

from convert.onepass import FEATURES, pooled_head

NOT_THE_HEAD = "the HD head is not LayerNorm -> Dense -> GELU -> Dense"


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


def logits_dense(model: onnx.ModelProto) -> tuple[onnx.NodeProto, str]:
    """The last Dense layer, `logits = MatMul(x, kernel) + bias`: its MatMul node and its bias initializer's
    name; a ValueError when the logits are not a Dense layer's."""
    inits = {t.name for t in model.graph.initializer}
    logits = head_tensors(model)[1]
    nodes = list(model.graph.node)
    add = next((n for n in nodes if n.op_type == "Add" and logits in n.output), None)
    mm = add and next((n for n in nodes if n.op_type == "MatMul" and n.output[0] in add.input
                       and n.input[1] in inits), None)
    bias = add and next((i for i in add.input if i in inits), None)
    if mm is None or bias is None:
        raise ValueError("the HD logits are not a Dense layer's (MatMul, Add)")
    return mm, bias


def head_weights(model: onnx.ModelProto) -> tuple[list[str], float]:
    """The initializer names of the head's LayerNorm scale and bias, Dense 1 kernel and bias, Dense 2 kernel
    and bias (in that order), and the LayerNorm's epsilon; a ValueError for a head of another shape."""
    features = head_tensors(model)[0]
    inits = {t.name for t in model.graph.initializer}
    nodes = list(model.graph.node)

    def find(op: str, test) -> onnx.NodeProto:
        found = next((n for n in nodes if n.op_type == op and test(n)), None)
        if found is None:
            raise ValueError(NOT_THE_HEAD)
        return found

    ln = find("LayerNormalization", lambda n: n.input[0] == features)
    mm1 = find("MatMul", lambda n: n.input[0] == ln.output[0] and n.input[1] in inits)
    add1 = find("Add", lambda n: mm1.output[0] in n.input)
    b1 = next((i for i in add1.input if i in inits), None)
    try:
        mm2, b2 = logits_dense(model)
    except ValueError:
        raise ValueError(NOT_THE_HEAD) from None
    if b1 is None or len(ln.input) < 3:
        raise ValueError(NOT_THE_HEAD)
    eps = next((a.f for a in ln.attribute if a.name == "epsilon"), 1e-5)
    return [ln.input[1], ln.input[2], mm1.input[1], b1, mm2.input[1], b2], eps
