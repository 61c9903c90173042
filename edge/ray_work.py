"""What runs on Ray's workers for `sixview scan --ray` (the driver: `edge/ray_scan.py`).

- `decode_rows`, a CPU task per chunk of paths: read each file (`edge.inputs.read_file`, or
  `edge.uris.read_uri` for a URI), then `Engine.load` (decode, route, render the views) through
  `edge.errors.per_image`, so a bad file gets the same error as in a local scan. It needs only the
  models' metadata (`MetaEngine`), never a model session.
- `Classifier`, a callable class run by Ray Data's actor pool: the Engine (the model sessions) is
  built once per actor, from model files shipped through the object store (`ModelFiles`), so the
  workers need no copy of the driver's models folder. Each batch gives one JSONL line per image,
  built by `edge.records.record` exactly as the local scan builds it.

Rows carry `index` (the image's place in the listing), `path` (its bytes: `os.fsencode`, so any file
name survives Arrow) and `item` (a pickled load outcome: ("ok", Prepared) or ("error", message)).
The views travel as uint8 (a quarter of the float32 input; `model_input` makes float32 from uint8,
so converting back is exact).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine, Prepared
from .errors import SETUP_ERRORS, per_image
from .inputs import read_file
from .metadata import MetadataError, ModelMeta
from .model import Model, model_file
from .records import record
from .sinks import json_line
from .uris import is_uri, read_uri

SETUP_MARK = "sixview setup error: "  # before a setup error's text, so the driver finds it in Ray's report


@dataclass(frozen=True)
class ModelFiles:
    """The model files of the roles a scan can reach (name -> bytes), shipped to the workers once;
    `digest` names them (the workers' cache folder, the manifest's check on --resume)."""

    files: dict[str, bytes]
    digest: str

    @classmethod
    def read(cls, models_dir: Path, roles: tuple[str, ...], device: str, precision: str) -> ModelFiles:
        """The files the actors may open: on `cpu` or `openvino` the one file per role that
        `model_file` picks (and OpenVINO's gates); elsewhere (a GPU, auto: decided on the workers)
        every `<role>*.onnx` and `<role>.gates.json`."""
        if device in ("cpu", "openvino"):
            names = sorted({model_file(models_dir, r, device, precision).name for r in roles}
                           | {f"{r}.gates.json" for r in roles if device == "openvino"
                              and (Path(models_dir) / f"{r}.gates.json").is_file()})
        else:
            names = sorted(p.name for p in Path(models_dir).iterdir() if p.is_file() and any(
                p.name == f"{r}.gates.json" or (p.name.startswith(f"{r}.") and p.name.endswith(".onnx"))
                for r in roles))
        files = {n: (Path(models_dir) / n).read_bytes() for n in names}
        h = hashlib.sha256()
        for n in names:
            h.update(n.encode() + b"\0" + hashlib.sha256(files[n]).digest())
        return cls(files, h.hexdigest())

    def materialize(self) -> Path:
        """A local folder holding the files: the user's own, written once per machine and shared by
        its workers; a file already there is used only if its bytes are the ones shipped."""
        d = Path(tempfile.gettempdir()) / f"sixview-ray-{os.getuid()}" / "models" / self.digest[:16]
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in self.files.items():
            dest = d / name
            if dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
                continue
            tmp = d / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, dest)  # atomic: another worker never sees half a file
        return d


class MetaEngine(Engine):
    """An Engine that decodes and renders views from the models' metadata alone (no session): the
    decoding tasks' half of `Engine.load`. Classifying with it is an error."""

    def __init__(self, metas: dict[str, ModelMeta], **options: Any):
        super().__init__(Path("."), **options)
        self._metas = metas

    def model(self, role: str) -> Model:
        if role not in self._metas:
            raise MetadataError(f"no {role} model in this scan's models")
        return Model(Path(f"{role}.onnx"), self._metas[role], None, "", "")


_ENGINES: dict[bytes, Engine] = {}  # per worker process: built by its first task, kept for the next ones


def _cached(key: Any, build) -> Any:
    k = hashlib.sha256(pickle.dumps(key)).digest()
    if k not in _ENGINES:
        _ENGINES[k] = build()
    return _ENGINES[k]


def _load_one(path: str, engine: Engine) -> tuple[str, Any]:
    """Read and load one image: ("ok", Prepared with uint8 views) or ("error", message); as
    `edge.scan._load`, reading counts as decoding time and a failed image has no timings."""
    import time

    t0 = time.perf_counter()
    data, error = per_image(read_uri if is_uri(path) else read_file, path)
    timings = {"decode": (time.perf_counter() - t0) * 1e3}
    if data is not None:
        prepared, error = per_image(engine.load, data, timings_ms=timings)
        if prepared is not None:
            u8 = prepared.pixels.astype(np.uint8)
            if np.array_equal(u8, prepared.pixels):  # always, for today's model_input: 4x less to ship
                prepared.pixels = u8
            return "ok", prepared
    return "error", error


def decode_rows(batch: Any, metas: dict[str, ModelMeta], options: dict[str, Any]) -> Any:
    """A Ray Data batch (pyarrow: index, path) -> (index, path, item): each image read and loaded."""
    import pyarrow as pa

    engine = _cached(("meta", metas, options), lambda: MetaEngine(metas, **options))
    items = [pickle.dumps(_load_one(os.fsdecode(p), engine), protocol=5) for p in batch["path"].to_pylist()]
    return pa.table({"index": batch["index"], "path": batch["path"], "item": pa.array(items, pa.large_binary())})


class Classifier:
    """Ray Data's actor-pool UDF: the Engine loads once per actor; each batch of loaded images is
    classified in one `Engine.classify` call (as a local scan's `--batch`) and becomes JSONL lines."""

    def __init__(self, models: Any, options: dict[str, Any]):
        import ray

        files = ray.get(models) if isinstance(models, ray.ObjectRef) else models
        self.engine = Engine(files.materialize(), **options)
        try:
            self.engine.check()  # a model or provider that does not start fails here, once
        except SETUP_ERRORS as e:  # Ray passes only the text of an actor's failed start to the driver
            raise RuntimeError(f"{SETUP_MARK}{e}") from None

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        paths = [os.fsdecode(p) for p in batch["path"].to_pylist()]
        outcomes = [pickle.loads(x) for x in batch["item"].to_pylist()]
        ready: list[Prepared] = []
        for kind, value in outcomes:
            if kind == "ok":
                value.pixels = value.pixels.astype(np.float32, copy=False)
                ready.append(value)
        verdicts = iter(self.engine.classify(ready)) if ready else iter(())
        lines = []
        for path, (kind, value) in zip(paths, outcomes, strict=True):
            rec = record("path", path, next(verdicts), timings_ms={}) if kind == "ok" else \
                record("path", path, None, timings_ms={}, error=value)
            lines.append(json_line(rec))
        return pa.table({"index": batch["index"], "line": pa.array(lines, pa.large_binary())})
