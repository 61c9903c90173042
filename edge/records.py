"""Result records (schema: docs/ARCHITECTURE.md) and the sinks that write them.

Each JSONL line is written and flushed whole, so an interrupted run loses
nothing already written; `done_paths` reads them back for `--resume`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Any

from .engine import Verdict

FIELDS = ("path", "width", "height", "engine", "provider", "precision", "tiling", "labels",
          "scores", "views", "thresholds", "timings_ms", "error")


def record(key: str, value: Any, verdict: Verdict | None = None, *, width: int | None = None,
           height: int | None = None, timings_ms: dict[str, float] | None = None,
           error: str | None = None, **extra: Any) -> dict[str, Any]:
    """One result record; `key` is "path" or "frame". Without a verdict it is an error record
    (`width`/`height` then say what is known of the image)."""
    timings = dict(verdict.timings_ms if verdict else (timings_ms or {}))
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    rec: dict[str, Any]
    if verdict is not None:
        d = verdict.decision
        rec = {key: value, "width": verdict.width, "height": verdict.height, "engine": verdict.role,
               "provider": verdict.provider, "precision": verdict.precision, "tiling": verdict.tiling,
               "labels": d.labels, "scores": d.scores, "views": d.views, "thresholds": verdict.thresholds}
    else:
        rec = {key: value, "width": width, "height": height, "engine": None, "provider": None, "precision": None,
               "tiling": None, "labels": [], "scores": {}, "views": {}, "thresholds": {}}
    rec["timings_ms"] = {k: round(v, 3) for k, v in timings.items()}
    rec["error"] = error
    if extra:
        rec.update(extra)
    return rec


class JsonlSink:
    """Appends records to a JSONL file (or stdout for '-'), one flushed line each."""

    def __init__(self, path: Path | str | None, append: bool = False):
        self.path = None if path in (None, "-") else Path(path)
        self._fh: IO[str] | None = None
        self._append = append

    def __enter__(self) -> JsonlSink:
        if self.path is None:
            import sys
            self._fh = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._append:
                _drop_partial_line(self.path)
            self._fh = self.path.open("a" if self._append else "w", encoding="utf-8")
        return self

    def write(self, rec: dict[str, Any]) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None and self.path is not None:
            self._fh.close()


class CsvSink:
    """A flat CSV: path, labels ('|'-joined), error, then one score column per class."""

    def __init__(self, path: Path | str, classes: list[str] | None = None):
        self.path, self.classes = Path(path), classes
        self._fh: IO[str] | None = None
        self._writer: Any = None

    def __enter__(self) -> CsvSink:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", newline="", encoding="utf-8")
        return self

    def write(self, rec: dict[str, Any]) -> None:
        assert self._fh is not None
        if self._writer is None:
            self.classes = self.classes or list(rec["scores"])
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["path", "engine", "labels", "error", *self.classes])
        self._writer.writerow([rec.get("path", rec.get("frame")), rec["engine"] or "",
                               "|".join(rec["labels"]), rec["error"] or "",
                               *(rec["scores"].get(c, "") for c in self.classes)])
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def done_paths(path: Path | str) -> set[str]:
    """Paths that already have a successful record in a JSONL file (for --resume)."""
    p = Path(path)
    if not p.is_file():
        return set()
    done = set()
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if isinstance(rec, dict) and rec.get("error") is None and "path" in rec:
                done.add(rec["path"])
    return done


def _drop_partial_line(path: Path) -> None:
    """Cut a trailing line left unfinished by an interrupted run."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())
