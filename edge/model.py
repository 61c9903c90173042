"""Opening a sixview ONNX model: metadata checked, session on the right provider."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .metadata import MetadataError, ModelMeta
from .providers import create_session, wants_gpu

PRECISION_SUFFIX = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}


class ModelError(RuntimeError):
    """A model that cannot be found or used."""


@dataclass
class Model:
    """An open model: its description, session and the provider it really runs on."""

    path: Path
    meta: ModelMeta
    session: ort.InferenceSession
    provider: str
    input_name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Scores (n, classes) for a float32 NHWC batch of 0..255 RGB views."""
        return self.session.run(None, {self.input_name: batch})[0]


def read_meta(session: ort.InferenceSession, source: str) -> ModelMeta:
    """Validate a session's metadata and its graph's input/output shapes."""
    meta = ModelMeta.from_props(session.get_modelmeta().custom_metadata_map, source)
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if len(inp.shape) != 4 or inp.shape[3] != 3:
        raise MetadataError(f"{source}: input must be NHWC with 3 channels, graph has {inp.shape}")
    graph_size = tuple(inp.shape[1:3])
    if all(isinstance(d, int) for d in graph_size) and graph_size != meta.input_size:
        raise MetadataError(f"{source}: metadata says input_size {list(meta.input_size)}, "
                            f"the graph takes {list(graph_size)}")
    if isinstance(out.shape[-1], int) and out.shape[-1] != len(meta.classes):
        raise MetadataError(f"{source}: graph outputs {out.shape[-1]} scores for {len(meta.classes)} classes")
    return meta


def open_model(path: Path | str, device: str = "auto", threads: int = 0) -> Model:
    """Open one ONNX file; refuse it if its metadata is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        session, provider = create_session(path, device, threads)
    except ort.capi.onnxruntime_pybind11_state.Fail as e:
        raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    except ort.capi.onnxruntime_pybind11_state.InvalidProtobuf:
        raise ModelError(f"{path}: not an ONNX file") from None
    meta = read_meta(session, str(path))
    return Model(path, meta, session, provider, session.get_inputs()[0].name)


def model_file(models_dir: Path, role: str, device: str, precision: str = "auto") -> Path:
    """The file for a role: FP16 for a GPU device, INT8 (if shipped) or FP32 on CPU,
    unless `precision` names one."""
    if precision == "auto":
        order = ["fp16", "fp32"] if wants_gpu(device) else ["int8", "fp32"]
    else:
        order = [precision]
    for p in order:
        candidate = models_dir / f"{role}{PRECISION_SUFFIX[p]}"
        if candidate.is_file():
            return candidate
    names = ", ".join(f"{role}{PRECISION_SUFFIX[p]}" for p in order)
    raise ModelError(f"no {role} model in {models_dir} (looked for {names}); "
                     "train and convert one (see README: make models)")
