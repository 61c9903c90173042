"""Merging the views' scores and deciding labels: pure functions, the one decision rule.

The decision says one of three things about an image: the confident classes
(score >= threshold), or, when none is confident, a guess (the top class when
its score is above the fallback score, kept apart from the labels unless
`guess_in_labels`), or none of the classes (`presence`, the probability that
any class is present, below the model's `presence_threshold`; or no guess).

For a few classes, plain Python over lists (after one `tolist()`) is several
times cheaper than small numpy calls, so the per-frame path works on lists.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# A per-stream transform of an image's merged scores before the decision (e.g. the camera's smoothing):
# (role, merged scores in class order) -> the scores to decide on.
ScoreHook = Callable[[str, list[float]], list[float]]


@dataclass(frozen=True)
class Decision:
    """One image's verdict: merged scores, winning views, labels, the guess and the presence.

    `labels` are the confident classes, best first (with `guess_in_labels`, the guess when there
    is none); `guess` is (class, score) of the top class when no class is confident and it scores
    above the fallback score, else None; `presence` is the probability that at least one class is
    present (`presence`); below the presence threshold there are no labels and no guess.
    """

    scores: dict[str, float]
    views: dict[str, str]
    labels: list[str]
    guess: tuple[str, float] | None
    presence: float


def choose(scores: Sequence[float], thresholds: Sequence[float], fallback_min: float) -> tuple[list[int], int | None]:
    """The decision rule: (confident, guess). `confident`: indices of the classes with
    score >= threshold, best first (ties in class order). `guess`: only when none is
    confident, the top class if its score is above `fallback_min`; else None.

    A NaN score (a broken model) is the top class, as numpy's argmax treats it (so no guess).
    """
    chosen = [i for i, (s, t) in enumerate(zip(scores, thresholds, strict=True)) if s >= t]
    if chosen:
        chosen.sort(key=scores.__getitem__, reverse=True)  # stable: ties stay in class order
        return chosen, None
    if not scores:
        return chosen, None
    top = next((i for i, s in enumerate(scores) if s != s), None)
    top = scores.index(max(scores)) if top is None else top
    return chosen, top if scores[top] > fallback_min else None


def presence(scores: Iterable[float], _log1p: Callable[[float], float] = math.log1p) -> float:
    """The probability that at least one class is present, 1 - prod(1 - p) over `scores`
    (each clipped to [0, 1]; NaN if any score is NaN), computed as -expm1(sum(log1p(-p))):
    exact for small scores, and monotonic in the joint energy sum(-log(1 - p))."""
    log_none = 0.0  # log of the probability that no class is present
    for p in scores:
        if p > 0.0:
            log_none += _log1p(-p) if p < 1.0 else -math.inf
        elif p != p:
            return math.nan
    return -math.expm1(log_none)


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
                 hook: ScoreHook | None = None, presence_threshold: float = 0.0,
                 guess_in_labels: bool = False) -> Decision:
    """Merge one image's (views, classes) scores by max (keeping which view won), let `hook`
    transform the merged scores, and decide: `presence` below `presence_threshold` means none of
    the classes; else `choose` gives the labels and the guess (with `guess_in_labels`, the
    reference system's rule, the guess is also the label)."""
    if view_scores.ndim != 2 or view_scores.shape[0] == 0:
        raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
    rows = view_scores.tolist()  # exact: float32 -> float changes no comparison and no round()
    winner = view_scores.argmax(axis=0).tolist()
    merged = [rows[w][c] for c, w in enumerate(winner)]
    # round(s, 6) == round(s * 1e6) / 1e6 (3x cheaper) where s * 1e6 is exact: float32/float16 scores in (0, 1]
    exact = view_scores.dtype == np.float32 or view_scores.dtype == np.float16
    if hook is not None:
        merged, exact = [float(s) for s in hook(role, merged)], False
    present = presence(merged)
    if present < presence_threshold:
        chosen, top = [], None
    else:
        chosen, top = choose(merged, thresholds.tolist(), in_dtype(fallback_min, view_scores.dtype))
    scores = {c: round(s * 1e6) / 1e6 if exact and 0.0 < s <= 1.0 else round(s, 6)
              for c, s in zip(classes, merged, strict=True)}
    labels = [classes[i] for i in chosen]
    guess = None
    if top is not None:
        guess = (classes[top], scores[classes[top]])
        if guess_in_labels:
            labels.append(classes[top])
    return Decision(scores, {c: view_names[w] for c, w in zip(classes, winner, strict=True)},
                    labels, guess, present)
