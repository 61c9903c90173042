"""The OpenVINO backend: an ONNX file compiled for the CPU, behind the same call as an ONNX Runtime session.

`openvino` is imported only here, and only when this backend is opened
(`--device openvino`, or `--device auto` on a machine without a GPU); without
the package the open fails with one line saying what to install, and `auto`
falls back to ONNX Runtime.

Compute precision: `fp32`, or `bf16` where the CPU has native BF16
(`avx512_bf16` or `amx_bf16`; never emulated). OpenVINO would take BF16 by
itself on such CPUs, so the hint is always set, and the precision recorded is
the one the compiled model reports. Compiled models are cached (OpenVINO's
`CACHE_DIR`, `~/.cache/sixview/openvino` or `$SIXVIEW_OV_CACHE`), so the
compile cost is paid once per model, precision and machine.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .providers import ProviderError
from .stats import cpu_flags

HINT = {"fp32": "f32", "bf16": "bf16"}  # our precision -> INFERENCE_PRECISION_HINT
FROM_TYPE = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # ov.Type name -> our precision
INSTALL = "pip install 'sixview[cpu]' (or pip install openvino)"
IR_SUFFIX = ".int8-ov.xml"  # <role>.int8-ov.xml/.bin: NNCF's INT8 IR of <role>.onnx (convert/int8_ov.py)
IR_SHA_KEY = ["sixview", "onnx_sha256"]  # rt_info: the SHA-256 of the ONNX file the IR was made from


def ir_path(onnx_path: Path | str) -> Path:
    """The OpenVINO INT8 IR belonging to an FP32 ONNX file: `hd.onnx` -> `hd.int8-ov.xml`."""
    p = Path(onnx_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.stem
    return p.with_name(f"{stem}{IR_SUFFIX}")


def default_cache() -> Path:
    """Where compiled models are cached: $SIXVIEW_OV_CACHE or ~/.cache/sixview/openvino."""
    root = os.environ.get("SIXVIEW_OV_CACHE") or Path.home() / ".cache" / "sixview" / "openvino"
    return Path(root)


def import_openvino() -> Any:
    """The `openvino` module, or a ProviderError saying how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise ProviderError(f"the OpenVINO backend needs the openvino package ({e}); {INSTALL}") from None
    except Exception as e:  # noqa: BLE001 (a broken install: a missing shared library, ...)
        raise ProviderError(f"openvino is installed but does not import ({type(e).__name__}: {e})") from None
    return openvino


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes BF16 natively: its class's (`edge.providers.cpu_class`: avx512_bf16 or
    amx_bf16 in /proc/cpuinfo, or `$SIXVIEW_CPU_CLASS`), or, where the flags cannot be read, BF16 in
    OpenVINO's OPTIMIZATION_CAPABILITIES."""
    from .providers import CPU_CLASS_ENV, cpu_class

    if os.environ.get(CPU_CLASS_ENV) or cpu_flags() is not None:
        return cpu_class().bf16
    try:
        return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except (ProviderError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One OpenVINO Core per process (it holds the plugins)."""
    ov = import_openvino()
    try:
        return ov.Core()
    except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError and its own types)
        raise ProviderError(f"OpenVINO does not start here ({type(e).__name__}: {e})") from None


def check_bf16() -> None:
    """A ProviderError unless this CPU has native BF16 (BF16 is never emulated)."""
    if not native_bf16():
        raise ProviderError("--precision bf16 needs a CPU with native BF16 (avx512_bf16 or amx_bf16 in "
                            "/proc/cpuinfo); this CPU has none: use --precision fp32")


def _dims(partial_shape: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in partial_shape]


class OpenVinoSession:
    """A compiled OpenVINO model with ONNX Runtime's `run(None, {input: batch})` call, so that
    `edge.model.Model` runs either backend the same way. Each calling thread gets its own
    infer request (created on its first call, then reused)."""

    def __init__(self, compiled: Any, precision: str, compile_ms: float):
        self.compiled = compiled
        self.precision = precision  # what really runs: fp32 or bf16, read back from the compiled model
        self.compile_ms = compile_ms
        try:
            self.from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # noqa: BLE001 (an older OpenVINO without the property)
            self.from_cache = None
        self.input_name = compiled.input(0).get_any_name()
        self.input_shape = _dims(compiled.input(0).get_partial_shape())
        self.output_shape = _dims(compiled.output(0).get_partial_shape())
        self._local = threading.local()

    def request(self) -> Any:
        """This thread's infer request."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's first output for the one input in `feeds` (a float32 NHWC batch), as a
        fresh array (the request's own buffer is reused by the next call)."""
        (batch,) = feeds.values()
        req = self.request()
        req.infer({0: np.ascontiguousarray(batch, np.float32)}, share_inputs=True)
        return [np.array(req.get_output_tensor(0).data, copy=True)]


def compile_onnx(path: Any, precision: str, threads: int = 0, cache: Path | None = None,
                 source: Path | None = None) -> OpenVinoSession:
    """Compile an ONNX file (or an already read `ov.Model`, named `source` in errors) for the CPU
    at `precision` (fp32 or bf16), with `threads` inference threads (0: OpenVINO's default) and
    the compiled-model cache. Raises ProviderError when
    OpenVINO is missing, the precision cannot run here, or the compile fails."""
    if precision not in HINT:
        raise ProviderError(f"OpenVINO on the CPU computes in {' or '.join(HINT)}, not {precision}")
    if precision == "bf16":
        check_bf16()
    ov_core = core()
    cache_dir = cache or default_cache()
    # Unpinned threads: pinned ones stay on cores other processes are using; on the loaded 2-core machine
    # unpinned ran a six-view batch 3-15% faster in mean and p50 (two interleaved runs of 150 and 300 rounds).
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINT[precision], "PERFORMANCE_HINT": "LATENCY",
                              "ENABLE_CPU_PINNING": False}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    except OSError:  # an unwritable home: compile every time rather than fail
        pass
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    t0 = time.perf_counter()
    try:
        compiled = ov_core.compile_model(path if source is not None else str(path), "CPU", config)
    except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError and its own types)
        first = next((ln for ln in str(e).splitlines() if ln.strip()), "unknown error")
        raise ProviderError(f"OpenVINO could not compile {source or path}: {first[:300]}") from None
    compile_ms = (time.perf_counter() - t0) * 1e3
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    used = FROM_TYPE.get(hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint), str(hint))
    return OpenVinoSession(compiled, used, compile_ms)


def check_ir(onnx_path: Path, ir: Path | None = None) -> Any:
    """The IR of `onnx_path` read (an `ov.Model`), after checking that it was made from this very
    ONNX file (its rt_info's SHA-256); ProviderError when it is missing, unreadable or mismatched."""
    from .inputs import file_sha256

    ir = ir or ir_path(onnx_path)
    if not ir.is_file() or not ir.with_suffix(".bin").is_file():
        raise ProviderError(f"no OpenVINO INT8 model {ir.name} beside {onnx_path.name}: make it with "
                            "python -m convert.int8_ov")
    try:
        model = core().read_model(str(ir))
    except ProviderError:
        raise
    except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError and its own types)
        raise ProviderError(f"OpenVINO could not read {ir}: {str(e).splitlines()[0][:300]}") from None
    try:
        recorded = str(model.get_rt_info(IR_SHA_KEY).astype(str))
    except Exception:  # noqa: BLE001 (no such rt_info entry)
        recorded = ""
    if recorded != file_sha256(onnx_path):
        raise ProviderError(f"{ir.name} was not made from this {onnx_path.name} (its recorded ONNX SHA-256 "
                            f"{recorded[:12] or 'is missing'} differs): remake it with python -m convert.int8_ov")
    return model


def compile_int8_ir(onnx_path: Path, threads: int = 0, cache: Path | None = None) -> OpenVinoSession:
    """Compile the INT8 IR of `onnx_path` (checked by `check_ir`) for the CPU: its quantized parts in
    INT8, the rest in BF16 where the CPU has native BF16 (a six-view batch of the INT8 IR ran about
    15% faster than with FP32 float parts on the 2-core AVX512-BF16 machine), else FP32. The int8
    gate is measured on what runs here. The session's `precision` is `int8`, `float_parts` the rest's."""
    model = check_ir(Path(onnx_path))
    float_parts = "bf16" if native_bf16() else "fp32"
    session = compile_onnx(model, float_parts, threads, cache, source=ir_path(onnx_path))
    session.float_parts = session.precision
    session.precision = "int8"
    return session


def version() -> str | None:
    """The installed openvino version, without importing it."""
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None
