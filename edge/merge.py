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
    """Merge one image's (views, classes) scores and decide its labels.

    The same result as `merge_max` then `decide`, mostly in plain Python over
    lists: for a few classes that is several times cheaper than small numpy calls.
    """
    if view_scores.ndim != 2 or view_scores.shape[0] == 0:
        raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
    rows = view_scores.tolist()  # exact: float32 -> float changes no comparison and no round()
    winner = view_scores.argmax(axis=0).tolist()
    merged = [rows[w][c] for c, w in enumerate(winner)]
    chosen = [i for i, (s, t) in enumerate(zip(merged, thresholds.tolist(), strict=True)) if s >= t]
    if chosen:
        chosen.sort(key=merged.__getitem__, reverse=True)  # best first; stable: ties stay in class order
    else:  # the top class (numpy's argmax: a NaN first, else the first maximum), compared in the scores' dtype
        top = next((i for i, s in enumerate(merged) if s != s), None)
        top = merged.index(max(merged)) if top is None else top
        chosen = [top] if view_scores[winner[top], top] > fallback_min else []
    # round(s, 6) == round(s * 1e6) / 1e6 (3x cheaper) where s * 1e6 is exact: float32/float16 scores in (0, 1]
    exact = view_scores.dtype == np.float32 or view_scores.dtype == np.float16
    return Decision(
        scores={c: round(s * 1e6) / 1e6 if exact and 0.0 < s <= 1.0 else round(s, 6)
                for c, s in zip(classes, merged, strict=True)},
        views={c: view_names[w] for c, w in zip(classes, winner, strict=True)},
        labels=[classes[i] for i in chosen],
    )
