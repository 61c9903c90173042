"""One call from a Keras model to verified, self-describing `<role>[.fp16|.int8].onnx` files.

Order of work: export + clean-up -> FP16 (and INT8) -> parity on real images ->
metadata -> write. Files are written to temporary names in the output folder and
renamed only after every requested precision passed verification and was
serialised, so a failed conversion leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convert.export import ConversionError, export_onnx
from convert.fp16 import to_fp16
from convert.int8 import int8_earned, quantize_int8
from convert.metadata import attach, build_meta
from convert.optimize import optimize
from convert.timing import compare_latency
from convert.verify import ParityReport, keras_scores, require, run_onnx, verify
from edge.atomic import atomic_path
from edge.metadata import PRECISIONS, ROLES
from edge.model import PRECISION_SUFFIX

log = logging.getLogger("sixview.convert")

# (fp32 model, int8 model) -> (fp32 mAP, int8 mAP), both 0..1; supplied by evaluation code.
MapCheck = Callable[[onnx.ModelProto, onnx.ModelProto], tuple[float, float]]


@dataclass(frozen=True)
class Converted:
    """What `convert_model` wrote, and what it measured on the way."""

    paths: tuple[Path, ...]  # the model files written, one per precision
    report: ParityReport  # parity of every candidate against Keras
    graph: dict[str, int]  # node counts before/after the clean-up, fused LayerNorm/GELU, opset
    int8: dict[str, Any] | None  # INT8's figures and whether it was kept; None when not tried


def _check_inputs(model, classes: Sequence[str], input_size: Sequence[int], role: str,
                  precisions: Sequence[str], images: np.ndarray | None,
                  int8_calibration: np.ndarray | None) -> np.ndarray:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precisions must be some of {PRECISIONS}, got {tuple(precisions)}")
    out = model.outputs[0].shape[-1]
    if out != len(classes):
        raise ConversionError(f"model has {out} outputs but {len(classes)} classes were given")
    if "int8" in precisions and int8_calibration is None:
        raise ValueError("precision int8 needs calibration images (int8_calibration)")
    if images is None or len(images) == 0:
        raise ValueError("verification needs real images (verify_images)")
    x = np.asarray(images)
    h, w = (int(v) for v in input_size)
    if x.ndim != 4 or x.shape[1:] != (h, w, 3):
        raise ValueError(f"verification images must be (n, {h}, {w}, 3), got {x.shape}")
    return x


def _write_all(files: Mapping[Path, onnx.ModelProto]) -> list[Path]:
    with contextlib.ExitStack() as stack:  # every file saved before any replaces its target
        for dest, model in files.items():
            onnx.save(model, str(stack.enter_context(atomic_path(dest))))
    return list(files)


def convert_model(model, classes: Sequence[str], input_size: Sequence[int], role: str,
                  out_dir: str | Path, provenance: Mapping[str, Any] | None = None,
                  verify_images: np.ndarray | None = None,
                  precisions: Sequence[str] = ("fp32", "fp16"),
                  int8_calibration: np.ndarray | None = None,
                  thresholds: float | Mapping[str, float] | None = None, opset: int = 17,
                  int8_map_check: MapCheck | None = None) -> Converted:
    """Convert, verify and write `<role>.onnx` / `<role>.fp16.onnx` (and `<role>.int8.onnx`
    when `int8_calibration` images are given and INT8 earns it, see `int8.int8_earned`).

    Raises VerificationError (figures inside; nothing written) when parity fails.
    Returns the written `.paths`, with `.report`, `.graph` (node counts) and `.int8`.
    """
    x = _check_inputs(model, classes, input_size, role, precisions, verify_images, int8_calibration)
    raw = export_onnx(model, input_size, opset, optimize_graph=False)
    fp32, graph = optimize(raw)
    del raw  # large models: keep fewer copies alive
    graph["opset"] = opset
    models: dict[str, onnx.ModelProto] = {"fp32": fp32}
    if "fp16" in precisions:
        models["fp16"] = to_fp16(fp32)

    meta0 = build_meta(classes, role, input_size, "fp32", thresholds)  # validates thresholds early
    ref = keras_scores(model, x)
    outputs = {p: run_onnx(m, x) for p, m in models.items()}
    int8_info = None
    if int8_calibration is not None:
        q = quantize_int8(fp32, int8_calibration)
        outputs["int8"] = run_onnx(q, x)
        lat = compare_latency({"fp32": fp32, "int8": q}, batch=6, runs=50, warmup=5)
        maps = tuple(float(v) for v in int8_map_check(fp32, q)) if int8_map_check else (None, None)
        keep, why = int8_earned(lat["fp32"]["mean"], lat["int8"]["mean"], *maps)
        int8_info = {"kept": keep, "decision": why, "fp32_ms": lat["fp32"]["mean"],
                     "int8_ms": lat["int8"]["mean"], "map_fp32": maps[0], "map_int8": maps[1]}
        log.info("int8: %s (%s)", "kept" if keep else "left out", why)
        if keep:
            models["int8"] = q
    report = require(verify(ref, outputs, meta0.threshold_vector()))
    log.info("%s", report.summary())

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[Path, onnx.ModelProto] = {}
    for p, m in models.items():
        if p not in precisions and not (p == "int8" and int8_info and int8_info["kept"]):
            continue
        prov = {**(provenance or {}), "conversion": {
            "opset": opset, "nodes_tf2onnx": graph["nodes_before"], "nodes": len(m.graph.node),
            "fused": {"layernorm": graph["layernorm"], "gelu": graph["gelu"]},
            "parity": report.to_dict(), **({"int8": int8_info} if p == "int8" else {})}}
        files[out / f"{role}{PRECISION_SUFFIX[p]}"] = attach(
            m, build_meta(classes, role, input_size, p, thresholds, prov))
    return Converted(tuple(_write_all(files)), report, graph, int8_info)
