"""Graph clean-up after tf2onnx so ONNX Runtime runs LayerNorm and GELU as fused kernels.

tf2onnx writes Keras' LayerNormalization as ~13 nodes (moments, rsqrt, the
`x*inv + (beta - mean*inv)` form, often on axis 1 after its NHWC->NCHW transpose
push-down) and exact GELU as `0.5*x*(1 - Erf(-x/sqrt2))`; ONNX Runtime fuses
neither. We rewrite:

- LayerNorm -> ONNX `LayerNormalization` (opset >= 17; normalising axis 1 of an
  NCHW tensor becomes Transpose -> LayerNormalization(axis=-1) -> Transpose, and the
  transposes then cancel against tf2onnx's own);
- GELU -> `x * 0.5 * (1 + Erf(x / sqrt2))`, the form ORT's GeluFusion (and
  BiasGelu) recognise;
- a per-channel scale after a MatMul (+ bias), e.g. ConvNeXt's LayerScale, into the
  MatMul's weights;
- Transpose pairs that undo each other, and nodes left unused.

Each rewrite is a pattern match on structure and constants; anything that does not
match exactly is left alone (the parity check in `verify.py` has the last word).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from convert.onnx_graph import Graph

SQRT2 = float(np.sqrt(2.0))


def _reduce_axes(g: Graph, node) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and g.const(node.input[1]) is not None:
        return [int(v) for v in g.const(node.input[1]).ravel()]
    return None


def _keepdims(node) -> int:
    return next((a.i for a in node.attribute if a.name == "keepdims"), 1)


def _layernorm_stats(g: Graph, mean) -> tuple[str, int, int, float, str, set[str]] | None:
    """Match the statistics half of a LayerNorm from its first ReduceMean: x - mean, squared, mean,
    + eps, sqrt, reciprocal. Returns (x, axis, rank, eps, 1/std tensor, the mean's names) or None."""
    x = mean.input[0]
    axes = _reduce_axes(g, mean)
    rank = g.rank.get(x)
    if axes is None or len(axes) != 1 or rank is None or not _keepdims(mean):
        return None
    mean_like = {mean.output[0]}
    for c in g.consumers[mean.output[0]]:  # tf2onnx may reshape the mean to the same shape
        if c.op_type == "Reshape":
            mean_like.add(c.output[0])
    sub = next((c for c in g.consumers[x] if c.op_type == "Sub" and c.input[0] == x
                and c.input[1] in mean_like), None)
    if sub is None:
        return None
    sq = next((c for c in g.consumers[sub.output[0]]
               if (c.op_type == "Mul" and c.input[0] == c.input[1] == sub.output[0])
               or (c.op_type == "Pow" and g.scalar(c.input[1]) == 2.0)), None)
    var = sq and g.only_consumer(sq.output[0], "ReduceMean")
    if var is None or _reduce_axes(g, var) != axes or not _keepdims(var):
        return None
    add_eps = g.only_consumer(var.output[0], "Add")
    eps = add_eps and g.scalar(g.split(add_eps, var.output[0]))
    sqrt = add_eps and g.only_consumer(add_eps.output[0], "Sqrt")
    rec = sqrt and g.only_consumer(sqrt.output[0], "Reciprocal")
    if eps is None or rec is None:
        return None
    return x, axes[0] % rank, rank, eps, rec.output[0], mean_like


def _layernorm_affine(g: Graph, x: str, inv: str, mean_like: set[str]):
    """Match the output half, x*inv + (-mean*inv [+ beta]) with inv optionally scaled by gamma:
    (the final Add node, gamma or None, beta or None), or None."""
    gamma = None
    scale = g.only_consumer(inv, "Mul")
    if scale is not None and g.const(g.split(scale, inv)) is not None:
        inv, gamma = scale.output[0], g.const(g.split(scale, inv))
    muls = g.consumers[inv]
    xm = next((m for m in muls if m.op_type == "Mul" and g.split(m, inv) == x), None)
    nm = next((m for m in muls if m.op_type == "Mul" and m is not xm
               and (neg := g.prod(g.split(m, inv) or "", "Neg")) is not None
               and neg.input[0] in mean_like), None)
    if xm is None or nm is None or len(muls) != 2:
        return None
    res, beta = nm.output[0], None
    add_beta = g.only_consumer(res, "Add")
    if add_beta is not None and g.const(g.split(add_beta, res)) is not None:
        res, beta = add_beta.output[0], g.const(g.split(add_beta, res))
    out = next((c for c in g.consumers[xm.output[0]] if c.op_type == "Add"
                and g.split(c, xm.output[0]) == res), None)
    return None if out is None else (out, gamma, beta)


def _layernorm_nodes(g: Graph, x: str, axis: int, rank: int, eps: float, gamma: np.ndarray | None,
                     beta: np.ndarray | None, target: str) -> list | None:
    """The fused nodes writing `target`: LayerNormalization on the last axis, or on axis 1 of a 4-D
    tensor between two Transposes; None for any other axis or parameters of the wrong size."""
    channels = g.shape.get(x, [None] * rank)[axis]
    for p in (gamma, beta):
        if p is not None and p.size > 1:
            channels = p.size
    if not channels or any(p is not None and p.size not in (1, channels) for p in (gamma, beta)):
        return None
    gamma = np.ones(channels) if gamma is None else np.broadcast_to(gamma.ravel(), (channels,))
    beta = np.zeros(channels) if beta is None else np.broadcast_to(beta.ravel(), (channels,))
    ins = [g.new_const(gamma.astype(np.float32), "ln_gamma"), g.new_const(beta.astype(np.float32), "ln_beta")]
    if axis == rank - 1:
        return [helper.make_node("LayerNormalization", [x, *ins], [target], axis=-1, epsilon=eps,
                                 name=g.new_name("LayerNorm"))]
    if axis == 1 and rank == 4:
        t_in, ln_out = g.new_name("ln_nhwc"), g.new_name("ln_out")
        return [helper.make_node("Transpose", [x], [t_in], perm=[0, 2, 3, 1], name=g.new_name("T")),
                helper.make_node("LayerNormalization", [t_in, *ins], [ln_out], axis=-1, epsilon=eps,
                                 name=g.new_name("LayerNorm")),
                helper.make_node("Transpose", [ln_out], [target], perm=[0, 3, 1, 2], name=g.new_name("T"))]
    return None


def _fuse_layernorm(g: Graph, mean) -> bool:
    """Replace the LayerNorm starting at the ReduceMean `mean` by fused nodes; False when it does not match."""
    stats = _layernorm_stats(g, mean)
    if stats is None:
        return False
    x, axis, rank, eps, inv, mean_like = stats
    affine = _layernorm_affine(g, x, inv, mean_like)
    if affine is None:
        return False
    out, gamma, beta = affine
    new = _layernorm_nodes(g, x, axis, rank, eps, gamma, beta, out.output[0])
    if new is None:
        return False
    i = g.nodes.index(out)
    g.nodes[i:i + 1] = new
    return True


def _fuse_gelu(g: Graph, erf) -> bool:
    arg = g.prod(erf.input[0])
    if arg is None or arg.op_type not in ("Mul", "Div"):
        return False
    const_at = [j for j, i in enumerate(arg.input) if g.scalar(i) is not None]
    if len(const_at) != 1 or (arg.op_type == "Div" and const_at != [1]):
        return False
    k = g.scalar(arg.input[const_at[0]])
    src = arg.input[1 - const_at[0]]
    factor = k if arg.op_type == "Mul" else 1.0 / k
    sign = 1.0
    if (neg := g.prod(src, "Neg")) is not None:
        src, sign = neg.input[0], -1.0
    if abs(abs(factor) - 1.0 / SQRT2) > 1e-6:
        return False
    sign *= np.sign(factor)
    x = src
    one = (g.only_consumer(erf.output[0], "Sub") if sign < 0 else g.only_consumer(erf.output[0], "Add"))
    if one is None:
        return False
    if sign < 0 and not (g.scalar(one.input[0]) == 1.0 and one.input[1] == erf.output[0]):
        return False
    if sign > 0 and g.scalar(g.split(one, erf.output[0])) != 1.0:
        return False
    mul = g.only_consumer(one.output[0], "Mul")
    other = mul and g.split(mul, one.output[0])
    if other is None:
        return False
    half = g.prod(other, "Mul")
    if half is not None and x in half.input and g.scalar(g.split(half, x)) == 0.5:
        out = mul  # (0.5*x) * (1+erf)
    elif other == x:
        out = g.only_consumer(mul.output[0], "Mul")  # (x*(1+erf)) * 0.5
        if out is None or g.scalar(g.split(out, mul.output[0])) != 0.5:
            return False
    else:
        return False
    names = [g.new_name(s) for s in ("gelu_div", "gelu_erf", "gelu_add", "gelu_mul")]
    new = [
        helper.make_node("Div", [x, g.new_const(np.array(SQRT2, np.float32), "sqrt2")], [names[0]]),
        helper.make_node("Erf", [names[0]], [names[1]]),
        helper.make_node("Add", [names[1], g.new_const(np.array(1.0, np.float32), "one")], [names[2]]),
        helper.make_node("Mul", [x, names[2]], [names[3]]),
        helper.make_node("Mul", [names[3], g.new_const(np.array(0.5, np.float32), "half")], [out.output[0]]),
    ]
    for n in new:
        n.name = g.new_name("Gelu")
    i = g.nodes.index(out)
    g.nodes[i:i + 1] = new
    return True


def _fold_scale(g: Graph, mul) -> bool:
    """MatMul(x, W) [+ b] then * s (per output channel, e.g. LayerScale) -> MatMul(x, W*s) [+ b*s]."""
    s_name = next((i for i in mul.input if g.const(i) is not None), None)
    y = s_name and g.split(mul, s_name)
    if y is None:
        return False
    add = g.prod(y, "Add")
    b_name = add and next((i for i in add.input if g.const(i) is not None), None)
    mm = g.prod(g.split(add, b_name), "MatMul") if b_name else g.prod(y, "MatMul")
    w = mm and g.const(mm.input[1])
    if w is None or w.ndim != 2 or not g.only_consumer(mm.output[0], "Add" if b_name else "Mul"):
        return False
    if b_name and not g.only_consumer(add.output[0], "Mul"):
        return False
    s = g.const(s_name)
    d = w.shape[1]
    if (s.size not in (1, d) or (s.ndim > 1 and any(n != 1 for n in s.shape[:-1]))
            or s.ndim > g.rank.get(y, 2)):
        return False
    s = np.broadcast_to(s.reshape(-1), (d,))
    mm_out = g.new_name("scaled_matmul")
    new = [helper.make_node("MatMul", [mm.input[0], g.new_const(w * s, "W_scaled")],
                            [mm_out if b_name else mul.output[0]], name=g.new_name("MatMul"))]
    if b_name:
        b = g.const(b_name)
        if b.size not in (1, d):
            return False
        new.append(helper.make_node("Add", [mm_out, g.new_const(np.broadcast_to(b.reshape(-1), (d,)) * s,
                                                                 "b_scaled")],
                                    [mul.output[0]], name=g.new_name("Add")))
    i = g.nodes.index(mul)
    g.nodes[i:i + 1] = new
    return True


def _cancel_transposes(g: Graph) -> int:
    outputs = {o.name for o in g.g.output}
    done = 0
    for t2 in g.nodes:
        t1 = g.prod(t2.input[0], "Transpose") if t2.op_type == "Transpose" else None
        if t1 is None or t2.output[0] in outputs:
            continue
        p1 = next(a.ints for a in t1.attribute if a.name == "perm")
        p2 = next(a.ints for a in t2.attribute if a.name == "perm")
        if [p1[j] for j in p2] != list(range(len(p1))):
            continue
        for c in g.consumers[t2.output[0]]:
            for j, name in enumerate(c.input):
                if name == t2.output[0]:
                    c.input[j] = t1.input[0]
        done += 1
    return done


def optimize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Rewrite LayerNorm/GELU into ORT-fusable forms; return the new model and counts."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    stats = {"nodes_before": len(model.graph.node), "layernorm": 0, "gelu": 0}
    g = Graph(model)
    if opset >= 17:
        for node in [n for n in g.nodes if n.op_type == "ReduceMean"]:
            if node in g.nodes and _fuse_layernorm(g, node):
                stats["layernorm"] += 1
                g.reindex()
    for node in [n for n in g.nodes if n.op_type == "Erf"]:
        if _fuse_gelu(g, node):
            stats["gelu"] += 1
            g.reindex()
    stats["scale_folds"] = 0
    for node in [n for n in g.nodes if n.op_type == "Mul"]:
        if _fold_scale(g, node):
            stats["scale_folds"] += 1
            g.reindex()
    stats["transposes"] = _cancel_transposes(g)
    model = g.finish()
    stats["nodes_after"] = len(model.graph.node)
    onnx.checker.check_model(model)
    return model, stats


def ort_node_count(model: onnx.ModelProto) -> int:
    """Nodes ONNX Runtime actually runs on CPU after its own fusions (ORT_ENABLE_ALL)."""
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(d, "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return len(onnx.load(opts.optimized_model_filepath).graph.node)
