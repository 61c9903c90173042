"""The sixview self-description (edge.metadata.ModelMeta) of converted files, with provenance.

The schema lives in `edge.metadata`; this module only fills it in (classes,
thresholds, precision, and where the model came from) and attaches it to an
ONNX model's `metadata_props`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from edge.inputs import file_sha256
from edge.metadata import DEFAULT_MERGE, DEFAULT_THRESHOLD, KEYS, MetadataError, ModelMeta


def config_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the training config as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def converter_versions() -> dict[str, str]:
    """Versions of the conversion stack (TensorFlow, Keras, tf2onnx, ONNX, ONNX Runtime, ...)."""
    import importlib.metadata as im

    out = {}
    for key, dist in (("tensorflow", "tensorflow"), ("keras", "keras"), ("tf2onnx", "tf2onnx"),
                      ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                      ("onnxconverter_common", "onnxconverter-common")):
        try:
            out[key] = im.version(dist)
        except im.PackageNotFoundError:
            if key == "onnxruntime":  # the GPU wheel installs under another name
                try:
                    out[key] = im.version("onnxruntime-gpu")
                except im.PackageNotFoundError:
                    pass
    return out


def build_provenance(checkpoint: str | Path | None = None, config: Mapping[str, Any] | None = None,
                     metrics: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance: training data, epochs, metrics, checkpoint sha256, config digest, date, versions."""
    config = dict(config or {})
    prov: dict[str, Any] = {
        "training_data": config.get("sets") or config.get("data"),
        "selection": config.get("selection"),  # what chose the kept epoch
        "arch": config.get("arch"),
        "epochs": config.get("epochs"),
        "metrics": dict(metrics or {}),
        "source_checkpoint": None,
        "config_sha256": config_digest(config) if config else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "converter": converter_versions(),
    }
    if checkpoint is not None:
        p = Path(checkpoint)
        prov["source_checkpoint"] = {"file": p.name, "sha256": file_sha256(p)}
    prov.update(extra)
    return prov


def resolve_thresholds(classes: Sequence[str], role: str,
                       thresholds: float | Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-class thresholds: the role default (0.50 standard, 0.30 hd), a single value, or a
    mapping (classes it omits keep the default; unknown classes are an error)."""
    if role not in DEFAULT_THRESHOLD:
        raise MetadataError(f"role must be one of {tuple(DEFAULT_THRESHOLD)}, got {role!r}")
    out = {c: DEFAULT_THRESHOLD[role] for c in classes}
    if thresholds is None:
        return out
    if isinstance(thresholds, int | float):
        return {c: float(thresholds) for c in classes}
    unknown = sorted(set(thresholds) - set(classes))
    if unknown:
        raise MetadataError(f"thresholds for unknown classes: {', '.join(unknown)}")
    out.update({c: float(t) for c, t in thresholds.items()})
    return out


def build_meta(classes: Sequence[str], role: str, input_size: Sequence[int], precision: str,
               thresholds: float | Mapping[str, float] | None = None,
               provenance: Mapping[str, Any] | None = None) -> ModelMeta:
    """A validated ModelMeta (round-tripped through `ModelMeta.from_props`)."""
    meta = ModelMeta(classes=tuple(classes), role=role,
                     input_size=(int(input_size[0]), int(input_size[1])),
                     thresholds=resolve_thresholds(classes, role, thresholds), precision=precision,
                     provenance=dict(provenance or {}))
    return ModelMeta.from_props(meta.to_props(), "converted model")


def attach(model: onnx.ModelProto, meta: ModelMeta) -> onnx.ModelProto:
    """Replace the model's sixview metadata_props with `meta` (in place); return the model."""
    keep = {p.key: p.value for p in model.metadata_props if p.key not in KEYS}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**keep, **meta.to_props()})
    return model


def read_meta(model: onnx.ModelProto, source: str = "model") -> ModelMeta:
    """The sixview metadata of an ONNX model (raises MetadataError when missing/invalid)."""
    return ModelMeta.from_props({p.key: p.value for p in model.metadata_props}, source)


def fresh_decision(meta: ModelMeta, provenance: dict[str, Any], **changes: Any) -> ModelMeta:
    """`meta` for a graph whose scores changed: thresholds, presence threshold and merge back to the defaults
    (they were chosen for the old scores: `sixview eval --calibrate --fit-merge` chooses them again), the old
    calibration dropped from `provenance`, and `changes` (other fields) applied."""
    prov = {k: v for k, v in provenance.items() if k != "calibration"}
    return dataclasses.replace(meta, thresholds=resolve_thresholds(meta.classes, meta.role), presence_threshold=0.0,
                               merge=dict(DEFAULT_MERGE), provenance=prov, **changes)
