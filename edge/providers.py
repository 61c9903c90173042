"""Execution providers: what `--device` asks for, and what really started.

`--device`: `cpu`, `cuda` and `tensorrt` are ONNX Runtime providers (this
module); `openvino` is the OpenVINO backend (`edge/openvino_backend.py`);
`auto` is a GPU provider when one starts, else OpenVINO when it is installed
and starts, else ONNX Runtime's CPU provider (`edge/model.py: open_role`);
OpenVINO computes in the precision the model's accuracy gates allow on this
CPU's class (`CPU_CLASSES`, `auto_cpu_precision`: BF16 only where it is native).

ONNX Runtime falls back to the CPU silently when a GPU provider cannot start
(onnxruntime-gpu lists CUDA and TensorRT as available even on a machine
without a GPU), so the session's active providers are always checked.

TensorRT gets one optimisation profile for the model's dynamic batch
(`trt_profile_shapes`, from the model's metadata): from one input to
`$SIXVIEW_TRT_MAX_IMAGES` frames' inputs (default 8, `serve --max-batch` and
`scan --batch`'s default), so that a new batch size does not build a new engine
during a request.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .errors import FatalError
from .metadata import INPUT_NAME, ModelMeta
from .onnx_props import PropsError, read_props
from .stats import cpu_flags

DEVICES = ("auto", "cpu", "openvino", "cuda", "tensorrt")
ORT_DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
            "cpu": "CPUExecutionProvider"}
SHORT = {v: k for k, v in PROVIDER.items()}


class ProviderError(FatalError, RuntimeError):
    """A requested execution provider (or device, precision) that does not start here: a setup error."""

    code = "provider_unavailable"


CPU_CLASS_ENV = "SIXVIEW_CPU_CLASS"  # names a class of CPU_CLASSES instead of the detected one (tests, benchmarks)


@dataclass(frozen=True)
class CpuClass:
    """A class of CPU and what `--device auto --precision auto` runs on it, on OpenVINO: INT8 where the
    file's int8 gate passed, else BF16 where the CPU has native BF16 and the bf16 gate passed, else FP32
    (`python -m benchmarks.cpu_classes` measures each against ONNX Runtime, docs/devices.md)."""

    name: str
    flags: tuple[str, ...]  # /proc/cpuinfo flags that all must be present
    bf16: bool  # native BF16: OpenVINO may compute in BF16


# OpenVINO FP32 against ONNX Runtime FP32 (docs/devices.md): as fast or faster on AVX-512 (Zen 4, and oneDNN capped at
# AVX512_CORE_VNNI and AVX512_CORE: x1.01-1.47) and on a real AVX2-only AMD EPYC (Zen 3: Standard x1.12-1.16, HD
# x1.21-1.33, interleaved, 1 and 2 threads); one other real AVX2-only EPYC had ONNX Runtime ahead on HD (65.9 against
# 87.2 ms), where HD runs INT8 anyway; a real AVX-512 VNNI Intel Xeon: HD x1.29-1.41, Standard x1.08-1.11. AMX, ARM
# and AVX-512 CPUs without VNNI were not measured.
CPU_CLASSES = (  # best first: a CPU is the first class whose flags it has all
    CpuClass("amx", ("amx_bf16", "amx_int8"), True),  # Intel Xeon since Sapphire Rapids
    CpuClass("avx512_bf16", ("avx512_bf16",), True),  # AMD Zen 4/5, Intel Cooper Lake
    CpuClass("avx512_vnni", ("avx512f", "avx512_vnni"), False),  # Intel Cascade Lake, Ice Lake
    CpuClass("avx512", ("avx512f",), False),  # Intel Skylake-SP
    CpuClass("avx2", ("avx2", "fma"), False),  # AMD Zen 1-3, Intel Haswell to Alder Lake
    CpuClass("other", (), False),  # older x86, ARM, or flags that cannot be read: untested
)


def classify_cpu(flags: set[str] | None) -> CpuClass:
    """The class of a CPU with these /proc/cpuinfo flags (None: unreadable, e.g. not Linux x86)."""
    have = flags or set()
    return next(c for c in CPU_CLASSES if all(f in have for f in c.flags))  # `other` has no flags: the last


@functools.lru_cache(maxsize=1)
def cpu_class() -> CpuClass:
    """This machine's class: `$SIXVIEW_CPU_CLASS` when it names one, else from /proc/cpuinfo's flags."""
    wanted = os.environ.get(CPU_CLASS_ENV, "").strip()
    if wanted:
        named = {c.name: c for c in CPU_CLASSES}
        if wanted not in named:
            raise ProviderError(f"${CPU_CLASS_ENV}={wanted!r} is not a CPU class: choose one of {', '.join(named)}")
        return named[wanted]
    return classify_cpu(cpu_flags())


def auto_cpu_precision(gated: set[str] | frozenset[str], native_bf16: bool) -> str:
    """What OpenVINO computes in under `--precision auto`, for a file whose passed gates are `gated` (int8,
    bf16), on a CPU with or without native BF16: int8, bf16 or fp32 (`edge/model.py: auto_compute_precision`
    reads the gates; `benchmarks/cpu_classes.py` asks it for each class)."""
    if "int8" in gated:
        return "int8"
    return "bf16" if native_bf16 and "bf16" in gated else "fp32"


def default_trt_cache() -> Path:
    """Where TensorRT engines are cached, so the slow first build happens once per device."""
    root = os.environ.get("SIXVIEW_TRT_CACHE") or Path.home() / ".cache" / "sixview" / "trt"
    return Path(root)


TRT_MAX_IMAGES_ENV = "SIXVIEW_TRT_MAX_IMAGES"  # images per model call that TensorRT's profile covers
TRT_MAX_IMAGES = 8  # `serve --max-batch` and `scan --batch` (Ray's too) default to 8 images per call


def trt_max_images() -> int:
    """Images per model call that TensorRT's profile covers: `$SIXVIEW_TRT_MAX_IMAGES`, else 8."""
    raw = os.environ.get(TRT_MAX_IMAGES_ENV, "").strip()
    if not raw:
        return TRT_MAX_IMAGES
    if not raw.isdigit() or int(raw) < 1:
        raise ProviderError(f"${TRT_MAX_IMAGES_ENV}={raw!r} is not a positive number of images")
    return int(raw)


def trt_profile_shapes(model: Path | str | bytes, max_images: int | None = None) -> dict[str, str]:
    """TensorRT EP options for one optimisation profile over a sixview model's batch, from its metadata
    (`INPUT_NAME:NxHxWx3`): min one input, opt one frame's inputs (6 views, or 1 for a graph that computes
    its views), max `max_images` frames'. Empty (ONNX Runtime's own shapes) for bytes or a file without
    sixview metadata."""
    if isinstance(model, bytes):
        return {}
    try:
        meta = ModelMeta.from_props(read_props(model), str(model))
    except (OSError, PropsError, ValueError):
        return {}
    h, w = meta.input_size
    rows = {"min": 1, "opt": meta.frame_inputs, "max": meta.frame_inputs * (max_images or trt_max_images())}
    return {f"trt_profile_{k}_shapes": f"{INPUT_NAME}:{n}x{h}x{w}x3" for k, n in rows.items()}


def provider_chain(device: str, trt_cache: Path | None = None, model: Path | str | bytes | None = None) -> list:
    """The providers (with options) to try, best first, for a `--device` value; `model` (its path):
    TensorRT's optimisation profile from its metadata (`trt_profile_shapes`)."""
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
                                 "trt_timing_cache_path": str(cache),
                                 **(trt_profile_shapes(model) if model is not None else {})}))
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
    chain = provider_chain(device, trt_cache, path)
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
