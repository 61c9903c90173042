"""Result records: one dict per image or frame (schema: docs/ARCHITECTURE.md; sinks: edge/sinks.py)."""

from __future__ import annotations

from typing import Any

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
