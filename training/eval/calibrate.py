"""Writing calibrated per-class thresholds into sixview ONNX files' metadata."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import onnx

from edge.metadata import ModelMeta
from edge.model import PRECISION_SUFFIX


def role_files(models_dir: Path, role: str) -> list[Path]:
    """Every precision variant of a role that exists in `models_dir`."""
    return [models_dir / f"{role}{suffix}" for suffix in PRECISION_SUFFIX.values()
            if (models_dir / f"{role}{suffix}").is_file()]


def write_thresholds(src: Path, dest: Path, thresholds: dict[str, float], calibrated_on: str) -> None:
    """Copy `src` to `dest` with new thresholds (for the classes given) and a calibration note."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMeta.from_props(props, str(src))
    new = {**meta.thresholds, **{c: round(float(t), 4) for c, t in thresholds.items() if c in meta.thresholds}}
    props["thresholds"] = json.dumps(new)
    prov = dict(meta.provenance)
    prov["calibration"] = {"set": calibrated_on, "method": "per-class max F1", "classes": sorted(thresholds),
                           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    props["provenance"] = json.dumps(prov)
    ModelMeta.from_props(props, str(dest))  # still valid
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dest)
