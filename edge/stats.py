"""Timing statistics and machine description for benchmarks and the camera loop.

numpy only: percentiles use numpy's default (linear interpolation between
closest ranks), no sample is ever dropped as an outlier, and the spread is the
population standard deviation (numpy's default, ddof=0).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Iterable
from importlib import metadata

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(samples_ms: Iterable[float]) -> dict[str, float | int]:
    """n, mean, std, p50, p90, p95, p99, min and max of timing samples (ms)."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples to summarize")
    if not np.all(np.isfinite(a)):
        raise ValueError("samples must be finite numbers")
    out: dict[str, float | int] = {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["min"], out["max"] = float(a.min()), float(a.max())
    return out


def pipeline_efficiency(infer_ms: float, total_ms: float, decode_ms: float = 0.0) -> float:
    """Share of a frame's non-decoding time spent in the model: infer / (total - decode)."""
    rest = total_ms - decode_ms
    if rest <= 0:
        raise ValueError(f"total ({total_ms} ms) must exceed decode ({decode_ms} ms)")
    return infer_ms / rest


def scan_efficiency(images_per_s: float, infer_ms_per_image: float) -> float:
    """Scan throughput against the ideal of pure inference: images_per_s / (1000 / infer_ms)."""
    if infer_ms_per_image <= 0:
        raise ValueError("inference time per image must be positive")
    return images_per_s / (1000.0 / infer_ms_per_image)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str] | None:
    """The x86 feature flags of /proc/cpuinfo, or None where there is no such line (not Linux x86)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _vector_flags() -> list[str]:
    """The vector-unit flags that matter for the inference kernels (x86 only)."""
    have = cpu_flags() or set()
    return [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
            if f in have]


def _version(dist: str, module: str) -> str | None:
    """An installed package's version, without importing it when metadata suffices."""
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    for name in (dist, f"{dist}-gpu", f"{dist}-headless"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def usable_cores() -> int:
    """CPU cores this process may run on (affinity/cgroup aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info() -> dict[str, object]:
    """The machine a measurement was made on: CPU, its class (from its flags), cores, library versions, platform."""
    from edge.providers import classify_cpu  # here: providers imports this module (and ONNX Runtime)

    cpu, cls = cpu_model(), classify_cpu(cpu_flags()).name
    cores = usable_cores()
    return {
        "name": machine_name(cpu, cores, cls),
        "cpu": cpu,
        "cpu_class": cls,
        "cpu_flags": _vector_flags(),
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "onnxruntime": _version("onnxruntime", "onnxruntime"),
        "openvino": (_version("openvino", "openvino") or "").split("-")[0] or None,  # not its build suffix
        "numpy": np.__version__,
        "opencv": _version("opencv-python", "cv2"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_name(cpu: str, cores: int, cpu_class: str = "") -> str:
    """A file-name-safe slug of the CPU model, its class and core count, e.g. 'amd-epyc-avx2-2c'. Clouds
    sell different CPUs under one model name ('AMD EPYC'): the class keeps their results apart."""
    text = re.sub(r"\((r|tm|c)\)", " ", cpu.lower())
    text = re.sub(r"\b(processor|cpu|\d+-core)\b|@.*$", " ", text)
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "cpu"
    cls = re.sub(r"[^a-z0-9]+", "-", cpu_class.lower()).strip("-")
    return f"{slug[:48].rstrip('-')}{'-' + cls if cls else ''}-{cores}c"
