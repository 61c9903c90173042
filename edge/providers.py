"""Execution providers: what `--device` asks for, and what really started.

`--device`: `cpu`, `cuda` and `tensorrt` are ONNX Runtime providers (this
module); `openvino` is the OpenVINO backend (`edge/openvino_backend.py`);
`auto` is a GPU provider when one starts, else OpenVINO when it is installed
and starts, else ONNX Runtime's CPU provider (`edge/model.py: open_role`).

ONNX Runtime falls back to the CPU silently when a GPU provider cannot start
(onnxruntime-gpu lists CUDA and TensorRT as available even on a machine
without a GPU), so the session's active providers are always checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from .errors import FatalError

DEVICES = ("auto", "cpu", "openvino", "cuda", "tensorrt")
ORT_DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
            "cpu": "CPUExecutionProvider"}
SHORT = {v: k for k, v in PROVIDER.items()}


class ProviderError(FatalError, RuntimeError):
    """A requested execution provider (or device, precision) that does not start here: a setup error."""

    code = "provider_unavailable"


def default_trt_cache() -> Path:
    """Where TensorRT engines are cached, so the slow first build happens once per device."""
    root = os.environ.get("SIXVIEW_TRT_CACHE") or Path.home() / ".cache" / "sixview" / "trt"
    return Path(root)


def provider_chain(device: str, trt_cache: Path | None = None) -> list:
    """The providers (with options) to try, best first, for a `--device` value."""
    if device not in ORT_DEVICES:
        if device in DEVICES:
            raise ProviderError(f"{device} is not an ONNX Runtime provider (open it with edge.model.open_model)")
        raise ProviderError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    available = set(ort.get_available_providers())
    wanted = {"auto": ["tensorrt", "cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"],
              "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}[device]
    chain: list = []
    for name in wanted:
        prov = PROVIDER[name]
        if prov not in available:
            if name == device:
                raise ProviderError(
                    f"{prov} is not in this onnxruntime build (available: {', '.join(sorted(available))});"
                    f" install sixview[gpu] (onnxruntime-gpu) on a machine with {name.upper()}")
            continue
        if name == "tensorrt":
            cache = trt_cache or default_trt_cache()
            cache.mkdir(parents=True, exist_ok=True)
            chain.append((prov, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                 "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                                 "trt_timing_cache_path": str(cache)}))
        else:
            chain.append(prov)
    return chain


def wants_gpu(device: str) -> bool:
    """Whether this device request may end on a GPU (then the FP16 file is preferred)."""
    available = set(ort.get_available_providers())
    if device in ("cpu", "openvino"):
        return False
    return bool({PROVIDER["cuda"], PROVIDER["tensorrt"]} & available)


def create_session(path: Path | str | bytes, device: str = "auto", threads: int = 0,
                   trt_cache: Path | None = None) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession on the best provider that starts; returns it and the short
    name of the provider really used. An explicit GPU request that does not start fails."""
    chain = provider_chain(device, trt_cache)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # Spinning ORT workers fight our decode/preprocess threads for the cores: on a loaded
    # 2-core machine they doubled inference time (benchmarks/pipeline.py).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ORT's CPU arena keeps the largest batch's activations for good (HD, 8 images: ~800 MB resident
    # after the call, against ~130 MB without it, at the same speed on the 2-core test machine).
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4 if device == "auto" else 3  # auto: a failed GPU start is expected
    model = path if isinstance(path, bytes) else str(path)
    session = ort.InferenceSession(model, sess_options=opts, providers=chain)
    active = session.get_providers()[0]
    used = SHORT.get(active, active)
    if device not in ("auto", "cpu") and used != device:
        raise ProviderError(f"--device {device} requested but {PROVIDER[device]} did not start "
                            f"(ONNX Runtime fell back to {active}); check the CUDA/cuDNN/TensorRT install")
    return session, used
