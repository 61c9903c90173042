"""Result records: one dict per image or frame (schema: docs/ARCHITECTURE.md; sinks: edge/sinks.py)."""

from __future__ import annotations

from typing import Any

from .engine import Verdict

FIELDS = ("path", "width", "height", "engine", "provider", "precision", "tiling", "labels", "guess",
          "presence", "scores", "views", "thresholds", "timings_ms", "error")


def record(key: str, value: Any, verdict: Verdict | None = None, *, width: int | None = None,
           height: int | None = None, timings_ms: dict[str, float] | None = None,
           error: str | None = None, **extra: Any) -> dict[str, Any]:
    """One result record; `key` is "path" or "frame". Without a verdict it is an error record
    (`width`/`height` then say what is known of the image; `guess` and `presence` are null).

    `labels` are the confident classes (with `guess_in_labels`, the guess when there is none);
    `guess` is {"label", "score"} of the top class when no class is confident and it scores above
    the fallback score (null otherwise); `presence` is P(at least one class), 6 decimals.
    `timings_ms` given with a verdict are added to (and replace the same stages of) the verdict's."""
    timings = {**(verdict.timings_ms if verdict else {}), **(timings_ms or {})}
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    rec: dict[str, Any]
    if verdict is not None:
        d = verdict.decision
        guess = None if d.guess is None else {"label": d.guess[0], "score": d.guess[1]}
        rec = {key: value, "width": verdict.width, "height": verdict.height, "engine": verdict.role,
               "provider": verdict.provider, "precision": verdict.precision, "tiling": verdict.tiling,
               "labels": d.labels, "guess": guess, "presence": round(d.presence, 6), "scores": d.scores,
               "views": d.views, "thresholds": verdict.thresholds}
    else:
        rec = {key: value, "width": width, "height": height, "engine": None, "provider": None, "precision": None,
               "tiling": None, "labels": [], "guess": None, "presence": None, "scores": {}, "views": {},
               "thresholds": {}}
    rec["timings_ms"] = {k: round(v, 3) for k, v in timings.items()}
    rec["error"] = error
    if extra:
        rec.update(extra)
    return rec
