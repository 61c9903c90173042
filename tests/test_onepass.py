"""The one-pass graph (`convert.onepass`): the six views' windows of one feature map, through the runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from convert.onepass import STRIDE, one_pass, windows, write_one_pass
from edge.decode import Decoded
from edge.engine import Engine
from edge.metadata import MetadataError, ModelMeta
from edge.tiling import VIEW_NAMES


def cell_model(size: int = 224) -> onnx.ModelProto:
    """A per-view "HD" graph shaped like the real ones (transpose, stride-32 backbone, global average pool,
    flatten, head, sigmoid): each 32-px cell's mean redness (R - G, clipped at 0), pooled, and one class
    `red` whose logit is 0.05 x the pooled redness - 3."""
    w = np.zeros((1, 3, STRIDE, STRIDE), np.float32)
    w[0, 0], w[0, 1] = 1 / STRIDE ** 2, -1 / STRIDE ** 2
    init = [numpy_helper.from_array(w, "conv_w"), numpy_helper.from_array(np.array([[0.05]], np.float32), "dense_w"),
            numpy_helper.from_array(np.array([-3.0], np.float32), "dense_b")]
    n = helper.make_node
    nodes = [n("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
             n("Conv", ["nchw", "conv_w"], ["cells"], strides=[STRIDE, STRIDE], kernel_shape=[STRIDE, STRIDE]),
             n("Relu", ["cells"], ["fmap"]),
             n("GlobalAveragePool", ["fmap"], ["gap"]),
             n("Flatten", ["gap"], ["pooled"]),
             n("MatMul", ["pooled", "dense_w"], ["mm"]),
             n("Add", ["mm", "dense_b"], ["logits"]),
             n("Sigmoid", ["logits"], ["scores"])]
    for k, node in enumerate(nodes):
        node.name = f"{node.op_type}_{k}"
    graph = helper.make_graph(nodes, "cells", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             ["N", size, size, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(classes=("red",), role="hd", input_size=(size, size), thresholds={"red": 0.5}, precision="fp32")
    helper.set_model_props(model, meta.to_props())
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x.astype(np.float32)})[0]


def test_windows_fall_on_whole_cells_of_the_grid():
    assert windows(10, 0.6) == [(0, 0, 10, 10), (0, 0, 6, 6), (4, 0, 10, 6), (0, 4, 6, 10), (4, 4, 10, 10),
                                (2, 2, 8, 8)]
    with pytest.raises(ValueError, match="whole"):
        windows(12, 0.6)  # 0.6 x 12 cells is not a whole number of cells


def test_each_row_equals_the_per_view_graph_on_its_crop():
    """The stride-32 cells see only their own pixels, so a window's row is the per-view graph on that crop."""
    frame = np.random.default_rng(0).uniform(0, 255, (2, 320, 320, 3))
    rows = run(one_pass(cell_model(), 10), frame).reshape(2, 6, 1)
    for k, (x0, y0, x1, y1) in enumerate(windows(10, 0.6)):
        crop = frame[:, y0 * STRIDE:y1 * STRIDE, x0 * STRIDE:x1 * STRIDE]
        np.testing.assert_allclose(rows[:, k], run(cell_model(crop.shape[1]), crop), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("corner", "where"), [("top_left", (0, 0)), ("bottom_right", (1, 1)), ("top_right", (0, 1))])
def test_an_object_in_one_corner_is_won_by_that_corners_view(tmp_path, corner, where):
    """Through the runtime: a red square in one corner of a photo is labelled, and the view that wins it is
    that corner's (its window holds the square whole; the whole view and the centre only part of it)."""
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(cell_model(), str(src / "hd.onnx"))
    write_one_pass(src / "hd.onnx", 10, tmp_path / "models")
    bgr = np.zeros((600, 800, 3), np.uint8)
    ys, xs = (slice(0, 240), slice(600, 800)) if where[0] == 0 else (slice(360, 600), slice(600, 800))
    xs = slice(0, 320) if where[1] == 0 else xs
    bgr[ys, xs] = (0, 0, 255)  # BGR red
    engine = Engine(tmp_path / "models", routing="hd", threshold=0.5)
    verdict = engine.classify_image(Decoded(bgr, 800, 600))
    assert verdict.decision.labels == ["red"]
    assert verdict.decision.views["red"] == corner
    assert [v.name for v in verdict.views] == list(VIEW_NAMES)


def test_without_tiling_the_whole_view_alone_decides(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(cell_model(), str(src / "hd.onnx"))
    write_one_pass(src / "hd.onnx", 10, tmp_path / "models")
    bgr = np.zeros((640, 640, 3), np.uint8)
    bgr[:200, :200] = (0, 0, 255)  # a corner object: too small a share of the whole view
    engine = Engine(tmp_path / "models", routing="hd", threshold=0.5)
    tiled = engine.classify_image(Decoded(bgr, 640, 640))
    whole = engine.classify([engine.prepare(Decoded(bgr, 640, 640), tiling=False)])[0]
    assert tiled.decision.labels == ["red"] and whole.decision.labels == []
    assert [v.name for v in whole.views] == ["whole"]


def test_metadata_says_one_pass_and_older_formats_cannot_misread_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(cell_model(), str(src / "hd.onnx"))
    fp32, _ = write_one_pass(src / "hd.onnx", 10, tmp_path / "out")
    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    meta = ModelMeta.from_props(props)
    assert meta.views_in_graph and meta.input_size == (320, 320) and props["sixview.format"] == "2"
    assert meta.provenance["one_pass"]["grid"] == 10
    with pytest.raises(MetadataError, match="in_graph"):  # the flag without the format that announces it
        ModelMeta.from_props({**props, "sixview.format": "1"})
    with pytest.raises(ValueError, match="already"):
        write_one_pass(fp32, 10, tmp_path / "again")


def test_a_graph_without_a_pooled_head_is_refused_in_one_line(tmp_path, capsys):
    """The CLI on a model it cannot rewrite (the toy colour detector has no backbone) or a missing folder."""
    from convert.onepass import main
    from convert.toy import save_colour_model

    save_colour_model(tmp_path / "m" / "hd.onnx", role="hd", input_size=(64, 64))
    assert main([str(tmp_path / "m"), "--out", str(tmp_path / "out")]) == 2
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "global average pool" in err[0] and "error:" in err[1]
    assert not (tmp_path / "out" / "hd.onnx").exists()


def test_benchmark_compares_both_graphs_frame_for_frame(tmp_path):
    """`benchmarks.one_pass` (a smoke run): the per-view and the one-pass file timed in one run, with their
    multiply-adds per frame (the one-pass frame is one 320-px pass against six 224-px views)."""
    from benchmarks.one_pass import main

    before = tmp_path / "before"
    before.mkdir()
    onnx.save(cell_model(), str(before / "hd.onnx"))
    write_one_pass(before / "hd.onnx", 10, tmp_path / "after")
    assert main(["--before", str(before), "--after", str(tmp_path / "after"), "--quick", "--out",
                 str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "one_pass.json").read_text())
    g = result["gmac_per_frame"]
    assert g["after"] / g["before"] == pytest.approx((320 / 224) ** 2 / 6, rel=0.01)
    ort_row = result["caps"]["native"]["ONNX Runtime fp32"]
    assert ort_row["runs"] == 3 and ort_row["p50_ms"]["after"] > 0
    assert "| native | ONNX Runtime fp32 |" in (tmp_path / "out" / "one_pass.md").read_text()
