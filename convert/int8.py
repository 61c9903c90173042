"""INT8 graphs for CPUs: ONNX Runtime static quantisation (QDQ), calibrated on real images.

Weights int8 per channel, activations uint8 (U8S8, what ORT's x86 kernels with
VNNI run fastest), MinMax calibration on a few hundred training images. Only Conv
and MatMul are quantised: LayerNorm, GELU and the sigmoid head stay float32.

An INT8 file is kept only when it earns its place (`int8_earned`): measurably
faster than FP32 on the CPU, in the same run, and no more than 1 point of mAP
lost on the evaluation set (measured by the evaluation code, not here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

QUANTIZED_OPS = ("Conv", "MatMul")
MIN_SPEEDUP = 1.10  # "measurably faster": at least 10% lower mean batch latency
MAX_MAP_LOSS_POINTS = 1.0


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray, batch: int = 8,
                  per_channel: bool = True) -> onnx.ModelProto:
    """QDQ-quantised copy of an FP32 model, calibrated on NHWC 0..255 `calibration` images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = model.graph.input[0].name
    x = np.asarray(calibration, np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"calibration images must be (n, H, W, 3), got {x.shape}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([x[i:i + batch] for i in range(0, len(x), batch)])

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {name: b}

    with tempfile.TemporaryDirectory() as d:
        src, pre, out = (str(Path(d) / f) for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, src)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        # (not CalibMaxIntermediateOutputs: ORT 1.31 drops, not merges, the
                        # batches it flushes)
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        q = onnx.load(out)
    del q.metadata_props[:]
    onnx.helper.set_model_props(q, {p.key: p.value for p in model.metadata_props})
    return q


def int8_earned(fp32_ms: float, int8_ms: float, fp32_map: float | None = None,
                int8_map: float | None = None, min_speedup: float = MIN_SPEEDUP,
                max_map_loss: float = MAX_MAP_LOSS_POINTS) -> tuple[bool, str]:
    """Whether to ship INT8: faster by `min_speedup`x and (when given) mAP (0..1) lost <=
    `max_map_loss` points. Returns (decision, reason with the figures)."""
    speedup = fp32_ms / int8_ms if int8_ms > 0 else 0.0
    why = [f"speedup {speedup:.2f}x (need >= {min_speedup:.2f}x)"]
    ok = speedup >= min_speedup
    if fp32_map is None or int8_map is None:
        why.append("mAP not measured")
        ok = False if fp32_map is not None or int8_map is not None else ok
    else:
        loss = (fp32_map - int8_map) * 100.0
        why.append(f"mAP {fp32_map * 100:.2f} -> {int8_map * 100:.2f} "
                   f"({loss:+.2f} points lost, limit {max_map_loss:g})")
        ok = ok and loss <= max_map_loss
    return ok, "; ".join(why)
