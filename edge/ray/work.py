"""What runs on Ray's workers for `sixview scan --ray` (the driver: `edge/ray/scan.py`).

- `decode_rows`, a CPU task per chunk of paths: the pipeline's loader (`edge.pipeline.load_one`:
  `edge.inputs.read_file`, or `edge.uris.read_uri` for a URI, then `Renderer.load`: decode, route,
  render the views), so a bad file gets the same error as in a local scan. It needs only the
  models' metadata (a `Renderer` on the driver's `role_metas`), never a model session.
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
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..engine import Engine, Renderer
from ..errors import SETUP_ERRORS
from ..inputs import read_file
from ..metadata import ModelMeta
from ..model import role_files
from ..pipeline import Loaded, load_one, run_loaded
from ..records import record
from ..sinks import json_line
from ..uris import is_uri, read_uri

SETUP_MARK = "sixview setup error: "  # before a setup error's text, so the driver finds it in Ray's report


@dataclass(frozen=True)
class ModelFiles:
    """The model files of the roles a scan can reach (name -> bytes), shipped to the workers once;
    `digest` names them (the workers' cache folder, the manifest's check on --resume)."""

    files: dict[str, bytes]
    digest: str

    @classmethod
    def read(cls, models_dir: Path, roles: tuple[str, ...], device: str, precision: str) -> ModelFiles:
        """The files the actors may open: each role's `edge.model.role_files`, the runtime's own
        choice, asked for workers that may have a GPU where the driver has none (on a GPU device,
        or auto, the backend is decided on the workers)."""
        names = sorted({p.name for r in roles for p in role_files(Path(models_dir), r, device, precision, gpu=True)})
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
            atomic_write(dest, data)  # another worker never sees half a file
        return d


_CACHE: dict[bytes, Any] = {}  # per worker process: built by its first task, kept for the next ones


def _cached(key: Any, build: Callable[[], Any]) -> Any:
    k = hashlib.sha256(pickle.dumps(key)).digest()
    if k not in _CACHE:
        _CACHE[k] = build()
    return _CACHE[k]


def _read(path: str) -> bytes:
    return read_uri(path) if is_uri(path) else read_file(path)


def _load_one(path: str, renderer: Renderer) -> tuple[str, Any]:
    """Read and load one image (`edge.pipeline.load_one`, as a local scan): ("ok", Prepared with
    uint8 views) or ("error", message)."""
    loaded = load_one(path, _read, renderer)
    if loaded.prepared is None:
        return "error", loaded.error
    prepared = loaded.prepared
    u8 = prepared.pixels.astype(np.uint8)
    if np.array_equal(u8, prepared.pixels):  # always, for today's model_input: 4x less to ship
        prepared.pixels = u8
    return "ok", prepared


def decode_rows(batch: Any, metas: dict[str, ModelMeta], options: dict[str, Any]) -> Any:
    """A Ray Data batch (pyarrow: index, path) -> (index, path, item): each image read and loaded
    by a `Renderer` on the driver's metadata (`options`: routing, tiling, max_pixels)."""
    import pyarrow as pa

    renderer = _cached(("renderer", metas, options), lambda: Renderer(metas, **options))
    items = [pickle.dumps(_load_one(os.fsdecode(p), renderer), protocol=5) for p in batch["path"].to_pylist()]
    return pa.table({"index": batch["index"], "path": batch["path"], "item": pa.array(items, pa.large_binary())})


class Classifier:
    """Ray Data's actor-pool UDF: the Engine loads once per actor; each batch of loaded images is
    classified in one `Engine.classify` call (as a local scan's `--batch`), matched back to its
    inputs (`edge.pipeline.run_loaded`, as in a local scan) and becomes JSONL lines."""

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
        loaded = []
        for path, x in zip(paths, batch["item"].to_pylist(), strict=True):
            kind, value = pickle.loads(x)
            if kind == "ok":
                value.pixels = value.pixels.astype(np.float32, copy=False)
            loaded.append(Loaded(path, value, None) if kind == "ok" else Loaded(path, None, value))
        verdicts = run_loaded(loaded, self.engine.classify)
        lines = [json_line(record("path", x.key, v, error=x.error)) for x, v in zip(loaded, verdicts, strict=True)]
        return pa.table({"index": batch["index"], "line": pa.array(lines, pa.large_binary())})


def setup_cause(e: BaseException) -> str | None:
    """The text of a setup error (a model or provider that does not start) raised on a worker, found
    in the chain of errors Ray wraps it in (an actor's failed start arrives as text only)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, SETUP_ERRORS):
            return str(x)
        text = str(x)
        if SETUP_MARK in text:
            return text[text.rindex(SETUP_MARK) + len(SETUP_MARK):].splitlines()[0].strip()
        todo += [x.__cause__, x.__context__, getattr(x, "cause", None)]
    return None


def configure_data(stall_s: float) -> None:
    """The driver's Ray Data settings for these tasks and actors: bounded waits (`stall_s`) and
    retries, no progress bars of Ray Data's own (the scan has one)."""
    import ray.data as rd

    ctx = rd.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.actor_task_retry_on_errors = False  # an exception in the model is a bug: stop, do not loop
    ctx.max_errored_blocks = 0
    ctx.max_consecutive_actor_init_deaths = 0  # a model that does not start stops the scan at once
    ctx.execution_no_progress_timeout_s = stall_s  # also ends a wait for actors that cannot start (no GPU)
    # (not wait_for_min_actors_s: it holds back decoding until every actor is up, seconds of a small scan)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)  # the scan reports failures itself
    # a small scan has fewer input blocks than actors: Ray Data's warning says so, harmlessly
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
