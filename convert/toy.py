"""A tiny synthetic "colour detector" sixview model, built with onnx.helper (no TensorFlow).

Input NHWC float32 [N, H, W, 3], 0..255 RGB, like the real models. Class i has a
target colour c_i; per pixel, `sigmoid(k * (r0 - ||px - c_i||))` is a soft
"this pixel is colour i" indicator; its mean over the view is the fraction f_i
of the view in that colour, and `score_i = sigmoid(steep * (f_i - 0.05))`.
With steep = 100 a colour filling 8% of a view scores about 0.95 and one
filling 2.5% about 0.08. Used by runtime tests, benchmarks and camera tests.

`delay_ms > 0` adds a sequential Loop of cheap ops whose length is calibrated
once per process on this machine, so a run takes roughly that much longer
(for frame-dropping tests; approximate, and machine dependent by nature).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.metadata import DEFAULT_THRESHOLD, ModelMeta

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
RADIUS = 60.0  # RGB distance at which a pixel is half "in" the colour
SHARPNESS = 0.2  # per RGB unit: distance 0 -> 0.99999, distance 120 -> 6e-6
STEEP = 100.0
FRACTION = 0.05

_loop_iter_ms: float | None = None  # calibrated cost of one delay-loop iteration


def _thresholds(classes: Sequence[str], role: str,
                threshold: float | dict[str, float] | None) -> dict[str, float]:
    if threshold is None:
        return {c: DEFAULT_THRESHOLD[role] for c in classes}
    if isinstance(threshold, dict):
        return {c: float(threshold[c]) for c in classes}
    return {c: float(threshold) for c in classes}


def _delay(delay_iters: int) -> tuple[list, list]:
    """Initializers and nodes of the delay: a sequential Loop over a small vector whose start depends
    on the input (so it cannot be constant-folded); its result, times zero, is added to the logits."""
    n = helper.make_node
    init = [
        numpy_helper.from_array(np.array(delay_iters, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond0"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.full((64,), 0.5, np.float32), "half"),
    ]
    body = helper.make_graph(
        [n("Mul", ["v_in", "b_half"], ["v_mul"]),
         n("Add", ["v_mul", "b_half"], ["v_out"]),
         n("Identity", ["c_in"], ["c_out"])],
        "delay_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [64])],
        initializer=[numpy_helper.from_array(np.full((64,), 0.5, np.float32), "b_half")],
    )
    nodes = [
        n("ReduceMean", ["images"], ["mean_all"], keepdims=0),
        n("Mul", ["mean_all", "zero"], ["nil"]),
        n("Add", ["half", "nil"], ["v0"]),
        n("Loop", ["trips", "cond0", "v0"], ["v_end"], body=body),
        n("ReduceSum", ["v_end"], ["v_sum"], keepdims=0),
        n("Mul", ["v_sum", "zero"], ["nil_end"]),
        n("Add", ["logit", "nil_end"], ["logit_delayed"]),
    ]
    return init, nodes


def _graph(colours: np.ndarray, input_size: tuple[int, int], delay_iters: int) -> onnx.GraphProto:
    k = len(colours)
    h, w = input_size
    init = [
        numpy_helper.from_array(colours.astype(np.float32), "colours"),  # [K, 3]
        numpy_helper.from_array(np.array([3], np.int64), "axis_chan"),
        numpy_helper.from_array(np.array([4], np.int64), "axis_rgb"),
        numpy_helper.from_array(np.array(RADIUS, np.float32), "radius"),
        numpy_helper.from_array(np.array(SHARPNESS, np.float32), "sharpness"),
        numpy_helper.from_array(np.array(FRACTION, np.float32), "fraction"),
        numpy_helper.from_array(np.array(STEEP, np.float32), "steep"),
    ]
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["images", "axis_chan"], ["px"]),  # [N,H,W,1,3]
        n("Sub", ["px", "colours"], ["diff"]),  # [N,H,W,K,3]
        n("Mul", ["diff", "diff"], ["sq"]),
        n("ReduceSum", ["sq", "axis_rgb"], ["d2"], keepdims=0),  # [N,H,W,K]
        n("Sqrt", ["d2"], ["dist"]),
        n("Sub", ["radius", "dist"], ["margin"]),
        n("Mul", ["margin", "sharpness"], ["logit_px"]),
        n("Sigmoid", ["logit_px"], ["inside"]),
        n("ReduceMean", ["inside"], ["frac"], axes=[1, 2], keepdims=0),  # [N,K]
        n("Sub", ["frac", "fraction"], ["excess"]),
        n("Mul", ["excess", "steep"], ["logit"]),
    ]
    last = "logit"
    if delay_iters > 0:
        more_init, more_nodes = _delay(delay_iters)
        init += more_init
        nodes += more_nodes
        last = "logit_delayed"
    nodes.append(n("Sigmoid", [last], [OUTPUT_NAME]))
    return helper.make_graph(
        nodes, "sixview_colour_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", k])],
        initializer=init,
    )


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sixview.convert.toy")
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    return model


def _iter_ms() -> float:
    """Milliseconds per delay-loop iteration on this machine (measured once)."""
    global _loop_iter_ms
    if _loop_iter_ms is None:
        import onnxruntime as ort

        trips = 20000
        m = _model(_graph(np.zeros((1, 3)), (4, 4), trips))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = np.zeros((1, 4, 4, 3), np.float32)
        sess.run(None, {INPUT_NAME: x})
        runs = []
        for _ in range(5):  # the fastest run: on a loaded machine the others overstate the cost (too short a delay)
            t0 = time.perf_counter()
            sess.run(None, {INPUT_NAME: x})
            runs.append((time.perf_counter() - t0) * 1000.0 / trips)
        _loop_iter_ms = max(min(runs), 1e-5)
    return _loop_iter_ms


def colour_model(classes: Sequence[str] = ("red", "green", "blue"),
                 colours: Sequence[Sequence[float]] = ((255, 0, 0), (0, 255, 0), (0, 0, 255)),
                 input_size: tuple[int, int] = (32, 32), role: str = "standard",
                 threshold: float | dict[str, float] | None = None, delay_ms: float = 0,
                 precision: str = "fp32", presence_threshold: float = 0.0) -> onnx.ModelProto:
    """Build the colour-detector model with valid sixview metadata."""
    classes = tuple(classes)
    cols = np.asarray(colours, np.float32).reshape(-1, 3)
    if len(cols) != len(classes):
        raise ValueError(f"{len(classes)} classes but {len(cols)} colours")
    iters = int(round(delay_ms / _iter_ms())) if delay_ms > 0 else 0
    model = _model(_graph(cols, tuple(input_size), iters))
    meta = ModelMeta(
        classes=classes, role=role, input_size=(int(input_size[0]), int(input_size[1])),
        thresholds=_thresholds(classes, role, threshold), precision=precision,
        provenance={"source": "convert.toy colour detector", "colours": cols.tolist(),
                    "delay_ms": delay_ms, "delay_iters": iters},
        presence_threshold=presence_threshold,
    )
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    return model


def save_colour_model(path: str | Path, **kwargs) -> Path:
    """Build `colour_model(**kwargs)` and write it to `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(colour_model(**kwargs), str(path))
    return path
