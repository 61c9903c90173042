"""FP16 graphs for GPUs: float16 weights and compute, float32 inputs and outputs.

Built with onnxconverter-common `convert_float_to_float16(keep_io_types=True)`.
Ops whose half-precision form overflows or loses too much are kept in float32
(the converter inserts Casts around them): normalisation statistics
(`LayerNormalization`, and the unfused ReduceMean/Pow/Sqrt/Reciprocal pattern if
clean-up did not fuse it) and exp-like ops. Squares of ConvNeXt activations pass
65504 easily, which is where the NaNs users report come from. GELU's Erf is
bounded and stays in FP16 so GPU providers still fuse GELU. The input
normalisation (everything before the first Conv) stays in float32 too: 0..255
pixels in half precision are only 0.125 apart near 255, which after dividing by
the ImageNet std cost the shipped edge model 2.1e-3 of output accuracy
(5.8e-4 with those few nodes in float32).

ONNX Runtime's CPU provider has almost no FP16 kernels (it inserts casts and is no
faster), so these files are for CUDA/TensorRT/Jetson; parity is still checked on
CPU by `verify.py`.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import onnx
from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from convert.metadata import attach
from edge.atomic import atomic_path
from edge.metadata import ModelMeta
from edge.model import PRECISION_SUFFIX

KEEP_FP32 = (
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Softmax",
    "Range",
)


def to_fp16(model: onnx.ModelProto, keep_fp32: tuple[str, ...] = KEEP_FP32) -> onnx.ModelProto:
    """FP16 copy of `model` with float32 I/O and `keep_fp32` op types left in float32."""
    with warnings.catch_warnings():  # one warning per weight below 1e-7 in magnitude
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        fp16 = convert_float_to_float16(
            model, keep_io_types=True,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32)),
            node_block_list=input_normalisation_nodes(model))
    onnx.checker.check_model(fp16)
    return fp16


def input_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes before the first Conv/MatMul (the in-graph input normalisation)."""
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            break
        names.append(node.name)
    return names


def write_pair(model: onnx.ModelProto, meta: ModelMeta, out: Path) -> list[Path]:
    """`out/<role>.onnx` (`model` with `meta`) and `out/<role>.fp16.onnx` (its FP16 copy), each written
    atomically; returns both paths."""
    fp32 = attach(model, meta)
    fp16 = attach(to_fp16(fp32), dataclasses.replace(meta, precision="fp16"))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, m in ((f"{meta.role}{PRECISION_SUFFIX['fp32']}", fp32), (f"{meta.role}{PRECISION_SUFFIX['fp16']}", fp16)):
        with atomic_path(out / name) as tmp:
            onnx.save(m, str(tmp))
        files.append(out / name)
    return files
