"""Merging the views' scores and deciding labels: pure functions over arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decision:
    """One image's verdict: merged scores, winning views and labels."""

    scores: dict[str, float]
    views: dict[str, str]
    labels: list[str]


def merge_max(view_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the maximum over views (axis 0) and the index of the view that won."""
    if view_scores.ndim != 2 or view_scores.shape[0] == 0:
        raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
    winner = view_scores.argmax(axis=0)
    return view_scores[winner, np.arange(view_scores.shape[1])], winner


def decide(scores: np.ndarray, thresholds: np.ndarray, fallback_min: float = 0.20) -> np.ndarray:
    """Indices of present classes: score >= threshold; if none, the top class
    when its score is above `fallback_min`; else none."""
    present = np.flatnonzero(scores >= thresholds)
    if present.size:
        return present[np.argsort(-scores[present], kind="stable")]
    top = int(scores.argmax())
    return np.array([top]) if scores[top] > fallback_min else np.array([], dtype=int)


def resolve_thresholds(model_thresholds: list[float], override: float | None) -> np.ndarray:
    """The model's per-class thresholds, or one value for all classes (`--threshold`)."""
    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {override}")
        return np.full(len(model_thresholds), override, dtype=np.float32)
    return np.asarray(model_thresholds, dtype=np.float32)


def decide_image(view_scores: np.ndarray, classes: tuple[str, ...], view_names: tuple[str, ...],
                 thresholds: np.ndarray, fallback_min: float) -> Decision:
    """Merge one image's (views, classes) scores and decide its labels."""
    merged, winner = merge_max(view_scores)
    chosen = decide(merged, thresholds, fallback_min)
    return Decision(
        scores={c: round(float(s), 6) for c, s in zip(classes, merged, strict=True)},
        views={c: view_names[w] for c, w in zip(classes, winner, strict=True)},
        labels=[classes[i] for i in chosen],
    )
