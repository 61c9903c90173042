"""Opening a sixview ONNX model: metadata checked, on the backend and provider that really start.

The backend is a detail of the model: a `Model` holds a session with ONNX
Runtime's `run(None, {input: batch})` call, either an ONNX Runtime
`InferenceSession` or an `OpenVinoSession` (`edge/openvino_backend.py`), and
says which `provider` it runs on (cpu, cuda, tensorrt, openvino) and at which
`precision` it really computes. The metadata always comes from the ONNX file's
own `metadata_props`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ModelInvalid
from .metadata import PRECISIONS, MetadataError, ModelMeta
from .onnx_props import PropsError, read_props
from .providers import ProviderError, auto_cpu_precision, create_session, wants_gpu

PRECISION_SUFFIX = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}
COMPUTE_ONLY = ("bf16",)  # run-time precisions with no file of their own: the FP32 file computed in BF16
PRECISION_CHOICES = ("auto", *PRECISIONS, *COMPUTE_ONLY)
log = logging.getLogger(__name__)


class ModelError(ModelInvalid, RuntimeError):
    """A model that cannot be found or used (a setup error: exit code 2, `model_invalid`)."""


@dataclass
class Model:
    """An open model: its description, session, the provider it really runs on and the precision it
    really computes in (the file's, or OpenVINO's: fp32 or bf16)."""

    path: Path
    meta: ModelMeta
    session: Any  # ort.InferenceSession or edge.openvino_backend.OpenVinoSession: run(None, {name: batch})
    provider: str
    input_name: str
    precision: str = ""

    def __post_init__(self) -> None:
        if not self.precision:
            self.precision = self.meta.precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Scores (n, classes) for a float32 NHWC batch of 0..255 RGB views."""
        return self.session.run(None, {self.input_name: batch})[0]


def check_shapes(meta: ModelMeta, inp: list, out: list, source: str) -> ModelMeta:
    """The graph's input (NHWC, 3 channels, the metadata's size) and output (one score per class)
    agree with the metadata; symbolic or dynamic dimensions (str or None) are not checked."""
    if len(inp) != 4 or inp[3] != 3:
        raise MetadataError(f"{source}: input must be NHWC with 3 channels, graph has {inp}")
    graph_size = tuple(inp[1:3])
    if all(isinstance(d, int) for d in graph_size) and graph_size != meta.input_size:
        raise MetadataError(f"{source}: metadata says input_size {list(meta.input_size)}, "
                            f"the graph takes {list(graph_size)}")
    if isinstance(out[-1], int) and out[-1] != len(meta.classes):
        raise MetadataError(f"{source}: graph outputs {out[-1]} scores for {len(meta.classes)} classes")
    return meta


def read_meta(session: ort.InferenceSession, source: str) -> ModelMeta:
    """Validate a session's metadata and its graph's input/output shapes."""
    meta = ModelMeta.from_props(session.get_modelmeta().custom_metadata_map, source)
    return check_shapes(meta, list(session.get_inputs()[0].shape), list(session.get_outputs()[0].shape), source)


def open_model(path: Path | str, device: str = "auto", threads: int = 0, precision: str = "auto") -> Model:
    """Open one ONNX file; refuse it if its metadata is missing or invalid. `device` openvino: the
    OpenVINO backend at `precision` (int8 on an FP32 file: its INT8 IR; auto: the fastest of
    int8 > bf16 > fp32 whose gate passed); any other
    device: ONNX Runtime with that provider chain (the file's own precision)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if device == "openvino":
        return _open_openvino(path, threads, precision)
    if precision in COMPUTE_ONLY:
        raise ProviderError(f"--precision {precision} runs on OpenVINO only (--device openvino or auto)")
    try:
        session, provider = create_session(path, device, threads)
    except ort.capi.onnxruntime_pybind11_state.Fail as e:
        raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    except ort.capi.onnxruntime_pybind11_state.InvalidProtobuf:
        raise ModelError(f"{path}: not an ONNX file") from None
    meta = read_meta(session, str(path))
    return Model(path, meta, session, provider, session.get_inputs()[0].name)


def auto_compute_precision(path: Path, meta: ModelMeta) -> str:
    """OpenVINO's precision under `--precision auto`: the fastest whose accuracy gate passed for
    this file (`edge/gates.py`, read, never recomputed), in order int8 (the file's INT8 IR,
    `<role>.int8-ov.xml`, when it exists), bf16 (only where the CPU has native BF16), fp32."""
    from .gates import gate_status
    from .openvino_backend import ir_path, native_bf16

    if meta.precision != "fp32":
        return "fp32"
    gated: set[str] = set()
    for precision, applies in (("int8", ir_path(path).is_file()), ("bf16", native_bf16())):
        if applies and not gated:  # the first that passed is the fastest: the rest need not be read
            passed, why = gate_status(path, precision)
            log.info("%s: %s", path.name, why)
            if passed:
                gated.add(precision)
    return auto_cpu_precision(gated, native_bf16())


def _open_openvino(path: Path, threads: int, precision: str) -> Model:
    from .openvino_backend import compile_int8_ir, compile_onnx

    try:
        meta = ModelMeta.from_props(read_props(path), str(path))
    except PropsError as e:
        raise ModelError(f"{path}: not an ONNX file ({e})") from None
    if meta.precision == "fp16" or precision == "fp16":
        raise ProviderError(f"{path.name}: FP16 files are for GPUs; OpenVINO on the CPU runs the FP32 (or INT8) "
                            "file, computing in fp32 or bf16")
    if precision == "auto":
        compute = auto_compute_precision(path, meta)
    elif precision == "int8" and meta.precision == "fp32":
        compute = "int8"  # the FP32 file's INT8 IR (<role>.int8-ov.xml), made by convert/int8_ov.py
    else:
        compute = "bf16" if precision == "bf16" else "fp32"  # int8: the INT8 file's float parts in fp32
    session = compile_int8_ir(path, threads) if compute == "int8" else compile_onnx(path, compute, threads)
    check_shapes(meta, session.input_shape, session.output_shape, str(path))
    ran = meta.precision if meta.precision == "int8" else session.precision
    return Model(path, meta, session, "openvino", session.input_name, ran)


def check_request(device: str, precision: str) -> None:
    """Refuse a device/precision pair that cannot run, before any file is opened."""
    if precision in COMPUTE_ONLY and device not in ("auto", "openvino"):
        raise ProviderError(f"--precision {precision} runs on OpenVINO only (--device openvino or auto), "
                            f"not on {device}")
    if precision == "fp16" and device == "openvino":
        raise ProviderError("--precision fp16 is for GPUs: OpenVINO on the CPU computes in fp32 or bf16 "
                            "(or runs an INT8 file)")


def backends(device: str, precision: str, gpu: bool) -> tuple[str, ...]:
    """The backends `open_role` tries for a request, in order, each a device that `model_file` and
    `open_model` take (`gpu`: whether a GPU provider may start): `auto` tries a GPU, then OpenVINO
    (not for fp16), then ONNX Runtime's CPU provider; bf16 is OpenVINO's only; any other device is itself."""
    if device != "auto":
        return (device,)
    if precision in COMPUTE_ONLY:
        return ("openvino",)
    if precision == "fp16":
        return ("auto",) if gpu else ("cpu",)
    return ("auto", "openvino", "cpu") if gpu else ("openvino", "cpu")


def open_role(models_dir: Path, role: str, device: str = "auto", precision: str = "auto",
              threads: int = 0) -> Model:
    """A role's model on the best backend that starts (`backends`, each on the file `model_file` picks):

    - `cuda`/`tensorrt`: ONNX Runtime on that GPU (the FP16 file unless `precision` names one);
      one that does not start is an error;
    - `cpu`: ONNX Runtime's CPU provider; `openvino`: OpenVINO (an error if it does not start);
    - `auto`: a GPU when one starts, else OpenVINO when it is installed and starts, else ONNX
      Runtime's CPU provider (no error: the record's `provider` says which ran).
    """
    check_request(device, precision)
    *tries, final = backends(device, precision, wants_gpu(device))
    for backend in tries:  # auto: a GPU that did not start (its session is on the CPU), OpenVINO that did not
        path = model_file(models_dir, role, backend, precision)
        try:
            m = open_model(path, backend, threads, precision)
        except ProviderError as e:
            if backend != "openvino":
                raise
            log.info("OpenVINO did not start (%s): ONNX Runtime's CPU provider instead", e)
            continue
        if m.provider != "cpu":
            return m
    return open_model(model_file(models_dir, role, final, precision), final, threads, precision)


def role_files(models_dir: Path, role: str, device: str = "auto", precision: str = "auto",
               gpu: bool | None = None) -> list[Path]:
    """Every file `open_role` may read for this request: per backend it may try, the file
    `model_file` picks, and for OpenVINO that file's gates and INT8 IR when present. `gpu`: whether
    a GPU may start (None: this machine's answer; a Ray driver asks for workers that may have one).
    A backend without a file is left out (opening it fails there as here); none raises ModelError."""
    from .gates import gate_path
    from .openvino_backend import ir_path

    check_request(device, precision)
    gpu = wants_gpu(device) if gpu is None else gpu
    files: list[Path] = []
    missing: ModelError | None = None
    for backend in backends(device, precision, gpu):
        try:
            path = model_file(models_dir, role, backend, precision, gpu and backend not in ("cpu", "openvino"))
        except ModelError as e:
            missing = missing or e
            continue
        files.append(path)
        if backend == "openvino":
            ir = ir_path(path)
            files += [p for p in (gate_path(path), ir, ir.with_suffix(".bin")) if p.is_file()]
    if not files and missing is not None:
        raise missing
    return list(dict.fromkeys(files))


def model_file(models_dir: Path, role: str, device: str, precision: str = "auto", gpu: bool | None = None) -> Path:
    """The file for a role: FP16 for a GPU device, INT8 (if shipped) or FP32 on CPU,
    unless `precision` names one (bf16 computes with the FP32 file; int8 on OpenVINO runs the
    FP32 file's INT8 IR, `<role>.int8-ov.xml`, when there is one, the metadata read from the FP32 file).
    `gpu`: whether the device ends on a GPU (None: `wants_gpu`, this machine's answer)."""
    if device == "openvino" and precision == "int8":
        from .openvino_backend import ir_path

        fp32 = models_dir / f"{role}{PRECISION_SUFFIX['fp32']}"
        if fp32.is_file() and ir_path(fp32).is_file():
            return fp32
    if precision == "auto":
        order = ["fp16", "fp32"] if (wants_gpu(device) if gpu is None else gpu) else ["int8", "fp32"]
    else:
        order = ["fp32" if precision in COMPUTE_ONLY else precision]
    for p in order:
        candidate = models_dir / f"{role}{PRECISION_SUFFIX[p]}"
        if candidate.is_file():
            return candidate
    names = ", ".join(f"{role}{PRECISION_SUFFIX[p]}" for p in order)
    raise ModelError(f"no {role} model in {models_dir} (looked for {names}); "
                     "train and convert one (see docs/training.md: make models)")
