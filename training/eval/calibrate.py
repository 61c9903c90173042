"""Writing calibrated thresholds (per class, and the presence threshold) and, with `--fit-merge`,
the fitted view merge (`merge`) into sixview ONNX files' metadata, with which sets and images chose
them in `provenance.calibration`. The choice itself is `training.eval.decision.calibrate` (and
`training.eval.merge_fit`)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import onnx

from edge.atomic import atomic_path
from edge.metadata import ModelMeta
from edge.model import PRECISION_SUFFIX


def role_files(models_dir: Path, role: str) -> list[Path]:
    """Every precision variant of a role that exists in `models_dir`."""
    return [models_dir / f"{role}{suffix}" for suffix in PRECISION_SUFFIX.values()
            if (models_dir / f"{role}{suffix}").is_file()]


def write_thresholds(src: Path, dest: Path, thresholds: dict[str, float], calibrated_on: str,
                     presence_threshold: float | None = None, sets: list[dict[str, Any]] | None = None,
                     method: str = "per-class max F1", merge: dict[str, Any] | None = None) -> None:
    """Copy `src` to `dest` with new thresholds (for the classes given), the presence threshold
    when given (`presence_threshold`, a JSON number), the view merge when given (`merge`, the
    metadata object; otherwise the file keeps its own) and a calibration note: `set` (a description),
    `sets` (per set: path, split, the ids that chose the thresholds), `method`, `merge` (its kind), `date`."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMeta.from_props(props, str(src))
    new = {**meta.thresholds, **{c: round(float(t), 4) for c, t in thresholds.items() if c in meta.thresholds}}
    props["thresholds"] = json.dumps(new)
    prov = dict(meta.provenance)
    note: dict[str, Any] = {"set": calibrated_on, "method": method, "classes": sorted(thresholds)}
    if presence_threshold is not None:
        props["presence_threshold"] = json.dumps(float(presence_threshold))
        note["presence_threshold"] = float(presence_threshold)
    if merge is not None:
        props["merge"] = json.dumps(merge)
    note["merge"] = merge["kind"] if merge is not None else meta.merge["kind"]
    if sets is not None:
        note["sets"] = sets
    prov["calibration"] = {**note, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    props["provenance"] = json.dumps(prov)
    ModelMeta.from_props(props, str(dest))  # still valid
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
