"""Merging the views' scores and deciding labels: pure functions, the one decision rule.

For a few classes, plain Python over lists (after one `tolist()`) is several
times cheaper than small numpy calls, so the per-frame path works on lists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# A per-stream transform of an image's merged scores before the decision (e.g. the camera's smoothing):
# (role, merged scores in class order) -> the scores to decide on.
ScoreHook = Callable[[str, list[float]], list[float]]


@dataclass(frozen=True)
class Decision:
    """One image's verdict: merged scores, winning views and labels."""

    scores: dict[str, float]
    views: dict[str, str]
    labels: list[str]


def choose(scores: Sequence[float], thresholds: Sequence[float], fallback_min: float) -> list[int]:
    """The decision rule: indices of classes with score >= threshold, best first (ties in class
    order); if none passes, the top class when its score is above `fallback_min`; else none.

    A NaN score (a broken model) is the top class, as numpy's argmax treats it.
    """
    chosen = [i for i, (s, t) in enumerate(zip(scores, thresholds, strict=True)) if s >= t]
    if chosen:
        chosen.sort(key=scores.__getitem__, reverse=True)  # stable: ties stay in class order
        return chosen
    if not scores:
        return []
    top = next((i for i, s in enumerate(scores) if s != s), None)
    top = scores.index(max(scores)) if top is None else top
    return [top] if scores[top] > fallback_min else []


@functools.lru_cache(maxsize=64)
def in_dtype(value: float, dtype: np.dtype) -> float:
    """`value` rounded to a floating dtype (as numpy compares a Python float with such scores)."""
    return float(np.asarray(value, dtype)) if np.issubdtype(dtype, np.floating) else float(value)


def resolve_thresholds(model_thresholds: list[float], override: float | None) -> np.ndarray:
    """The model's per-class thresholds, or one value for all classes (`--threshold`)."""
    if override is not None:
        if not 0.0 <= override <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {override}")
        return np.full(len(model_thresholds), override, dtype=np.float32)
    return np.asarray(model_thresholds, dtype=np.float32)


def decide_image(view_scores: np.ndarray, classes: tuple[str, ...], view_names: tuple[str, ...],
                 thresholds: np.ndarray, fallback_min: float, role: str = "",
                 hook: ScoreHook | None = None) -> Decision:
    """Merge one image's (views, classes) scores by max (keeping which view won), let `hook`
    transform the merged scores, and decide its labels with `choose`."""
    if view_scores.ndim != 2 or view_scores.shape[0] == 0:
        raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
    rows = view_scores.tolist()  # exact: float32 -> float changes no comparison and no round()
    winner = view_scores.argmax(axis=0).tolist()
    merged = [rows[w][c] for c, w in enumerate(winner)]
    # round(s, 6) == round(s * 1e6) / 1e6 (3x cheaper) where s * 1e6 is exact: float32/float16 scores in (0, 1]
    exact = view_scores.dtype == np.float32 or view_scores.dtype == np.float16
    if hook is not None:
        merged, exact = [float(s) for s in hook(role, merged)], False
    chosen = choose(merged, thresholds.tolist(), in_dtype(fallback_min, view_scores.dtype))
    return Decision(
        scores={c: round(s * 1e6) / 1e6 if exact and 0.0 < s <= 1.0 else round(s, 6)
                for c, s in zip(classes, merged, strict=True)},
        views={c: view_names[w] for c, w in zip(classes, winner, strict=True)},
        labels=[classes[i] for i in chosen],
    )
