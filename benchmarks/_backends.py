"""Which backends a benchmark times side by side on this machine: what is installed, and at which precisions."""

from __future__ import annotations

import argparse
import importlib.util


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported here."""
    return importlib.util.find_spec("openvino") is not None


def available_devices() -> list[str]:
    """cpu, openvino when it is installed, plus cuda and tensorrt when this onnxruntime build lists them."""
    import onnxruntime as ort

    from edge.providers import PROVIDER

    have = set(ort.get_available_providers())
    ov = ["openvino"] if openvino_installed() else []
    return ["cpu", *ov] + [d for d in ("cuda", "tensorrt") if PROVIDER[d] in have]


def cpu_configs(devices: list[str], ov_precisions: list[str]) -> list[tuple[str, str]]:
    """(device, precision) of the CPU backends to time side by side: ONNX Runtime (the file's
    precision), then OpenVINO at each precision (bf16 only where the CPU has it natively)."""
    from edge.openvino_backend import native_bf16

    out = [("cpu", "auto")] if "cpu" in devices else []
    if "openvino" in devices:
        out += [("openvino", p) for p in ov_precisions if p != "bf16" or native_bf16()]
    return out


def backend_specs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(label, device, precision) per backend to run side by side: --backends DEVICE[:PRECISION],...; by
    default --device, plus OpenVINO FP32 and native BF16 when --device is cpu at fp32 and openvino is here."""
    from edge.openvino_backend import native_bf16

    if args.backends:
        specs = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        specs = [args.device]
        if args.device == "cpu" and args.precision == "fp32" and openvino_installed():
            specs += ["openvino:fp32"] + (["openvino:bf16"] if native_bf16() else [])
    out = []
    for spec in specs:
        device, _, precision = spec.partition(":")
        precision = precision or ("fp32" if device == "openvino" else args.precision)
        name = {"cpu": "ONNX Runtime", "openvino": "OpenVINO"}.get(device, device)
        out.append((f"{name} {precision}", device, precision))
    return out
