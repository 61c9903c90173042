"""One backbone pass for the six views: an HD graph rewritten to see a frame once.

The six views are fixed fractions of the image (`edge.tiling.view_boxes`). Fed the whole frame at
`grid` x 32 pixels, the backbone's last feature map is `grid` x `grid` cells, and at grid 10 every
60% view is an exact window of it (6 x 6 cells: the corners at 0 and 4, the centre at 2). So each
view's pooled features are the mean of its window, and the head, unchanged, runs on the six rows:

    frame (N, S, S, 3) -> backbone -> (N, C, g, g) -> 6 window means -> (N * 6, C) -> head -> (N * 6, K)

The rows come in `VIEW_NAMES` order per frame, as a six-pass batch's do, so the runtime's merge and
winning view are unchanged; the metadata says `tiling.in_graph` (format 2: an older runtime refuses
the file rather than feeding it views). At grid 10 a frame costs one pass at 320 px, about 2.04
passes at 224 px against 6; each crop is seen at 192 px instead of 224, with the context around it.
Thresholds, presence threshold and merge are reset: `sixview eval --calibrate --fit-merge` chooses
them again on held-out photos.

    python -m convert.onepass MODELS_DIR --grid 10 --out DIR    (DIR/hd.onnx, DIR/hd.fp16.onnx)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convert.fp16 import write_pair
from convert.metadata import fresh_decision, read_meta
from edge.inputs import file_sha256
from edge.tiling import view_boxes

STRIDE = 32  # input pixels per cell of the backbone's last feature map (EfficientNet, ConvNeXt)
PREFIX = "sixview_onepass/"
FEATURES = PREFIX + "features"  # (N * 6, C): the views' pooled features, the head's input


def windows(grid: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """Each view's (x0, y0, x1, y1) in cells of a `grid` x `grid` map; a ValueError when a view at
    `grid` x STRIDE pixels does not fall on whole cells."""
    size = grid * STRIDE
    out = []
    for v in view_boxes(size, size, fraction):
        box = (v.x0, v.y0, v.x1, v.y1)
        if any(b % STRIDE for b in box):
            raise ValueError(f"at grid {grid} ({size} px) the {v.name} view {box} is not on whole "
                             f"{STRIDE}-px cells (fraction {fraction}); grid 10 fits 0.6")
        out.append(tuple(b // STRIDE for b in box))
    return out


def _pool_nodes(fmap: str, cells: list[tuple[int, int, int, int]], channels: int) -> tuple[list, list]:
    """Nodes and constants: each window's mean of `fmap` (N, C, g, g), stacked to FEATURES (N * 6, C)."""
    p, nodes, consts, means = PREFIX, [], [], []
    consts += [numpy_helper.from_array(np.array([2, 3], np.int64), p + "axes"),
               numpy_helper.from_array(np.array([1], np.int64), p + "view_axis"),
               numpy_helper.from_array(np.array([-1, channels], np.int64), p + "rows")]
    for k, (x0, y0, x1, y1) in enumerate(cells):
        consts += [numpy_helper.from_array(np.array([y0, x0], np.int64), f"{p}start{k}"),
                   numpy_helper.from_array(np.array([y1, x1], np.int64), f"{p}end{k}")]
        nodes += [helper.make_node("Slice", [fmap, f"{p}start{k}", f"{p}end{k}", p + "axes"], [f"{p}win{k}"],
                                   name=f"{p}Slice{k}"),
                  helper.make_node("ReduceMean", [f"{p}win{k}"], [f"{p}mean{k}"], axes=[2, 3], keepdims=0,
                                   name=f"{p}Mean{k}"),
                  helper.make_node("Unsqueeze", [f"{p}mean{k}", p + "view_axis"], [f"{p}view{k}"],
                                   name=f"{p}Unsqueeze{k}")]
        means.append(f"{p}view{k}")
    nodes += [helper.make_node("Concat", means, [p + "views"], axis=1, name=p + "Concat"),
              helper.make_node("Reshape", [p + "views", p + "rows"], [FEATURES], name=p + "Rows")]
    return nodes, consts


def pooled_head(nodes: list[onnx.NodeProto]) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The backbone's last global average pool and the node that flattens it (its output: the pooled
    features the head reads); a ValueError for a graph without them."""
    gap = next((n for n in reversed(nodes) if n.op_type == "GlobalAveragePool"), None)
    flat = gap and next((n for n in nodes if n.op_type in ("Squeeze", "Flatten", "Reshape")
                         and n.input[0] == gap.output[0]), None)
    if flat is None:
        raise ValueError("no global average pool and flatten before the head: not a per-view backbone graph")
    return gap, flat


def one_pass(model: onnx.ModelProto, grid: int = 10, fraction: float = 0.6) -> onnx.ModelProto:
    """A copy of a per-view HD graph (input (N, h, w, 3), a global average pool before its head) that takes
    frames of grid x STRIDE pixels and returns their six views' scores, (N * 6, K)."""
    cells = windows(grid, fraction)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = list(g.node)
    gap, flat = pooled_head(nodes)
    pooled = flat.output[0]
    dims = g.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = dims[2].dim_value = grid * STRIDE
    del g.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(out)
    info = {v.name: v for v in inferred.graph.value_info}
    channels = info[gap.input[0]].type.tensor_type.shape.dim[1].dim_value
    fmap_hw = [d.dim_value for d in info[gap.input[0]].type.tensor_type.shape.dim[2:]]
    if fmap_hw != [grid, grid]:
        raise ValueError(f"the feature map is {fmap_hw} at {grid * STRIDE} px, not {grid} x {grid}: "
                         f"the backbone's stride is not {STRIDE}")
    pool, consts = _pool_nodes(gap.input[0], cells, channels)
    index = nodes.index(gap)
    g.node.remove(gap)
    g.node.remove(flat)
    for k, node in enumerate(pool):
        g.node.insert(index + k, node)
    for node in g.node:  # the head reads the views' rows where it read the pooled features
        node.input[:] = [FEATURES if i == pooled else i for i in node.input]
    g.initializer.extend(consts)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:  # the removed flatten's axes
        g.initializer.remove(t)
    onnx.checker.check_model(out)
    return out


def write_one_pass(src: Path, grid: int, out: Path) -> list[Path]:
    """`out/hd.onnx` and `out/hd.fp16.onnx`: `src` (a per-view HD file) as a one-pass graph, its metadata
    saying so, the decision reset to the defaults, the source in its provenance."""
    model = onnx.load(str(src))
    meta = read_meta(model, str(src))
    if meta.views_in_graph:
        raise ValueError(f"{src} already computes its views in one pass")
    size = grid * STRIDE
    prov = {**meta.provenance, "one_pass": {"grid": grid, "input_px": size, "source_sha256": file_sha256(src)}}
    fresh = fresh_decision(meta, prov, input_size=(size, size), tiling={**meta.tiling, "in_graph": True})
    return write_pair(one_pass(model, grid, meta.view_fraction), fresh, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path, help="folder with a per-view hd.onnx (and standard*.onnx, copied)")
    ap.add_argument("--grid", type=int, default=10, help="feature-map cells per side (input = grid x 32 px)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the one-pass hd.onnx and hd.fp16.onnx")
    args = ap.parse_args(argv)
    try:
        files = write_one_pass(args.models / "hd.onnx", args.grid, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in args.models.glob("standard*.onnx"):  # the pair stays whole
        shutil.copy2(f, args.out / f.name)
    print("\n".join(f"wrote {f}" for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
