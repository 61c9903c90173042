"""Merging the views' scores and the decision's building blocks: pure functions.

The decision says one of three things about an image: the confident classes
(score >= threshold), or, when none is confident, a guess (the top class when
its score is above the fallback score, kept apart from the labels unless
`guess_in_labels`), or none of the classes (`presence`, the probability that
any class is present, below the model's `presence_threshold`; or no guess).

The merge (`merged_scores`) is the model's (`ModelMeta.merge`): `max` (the max over
the views' scores, the default) or `logit_linear`, a view-aware merge fitted on
labelled photos (`training/eval/merge_fit.py`):
sigmoid(w_whole * z_whole + w_crop_max * max(z_crops) + w_crop_mean * mean(z_crops) + bias_class),
z = logit of a view's score clipped to [EPS, 1 - EPS]. With one view (tiling off)
the crop features are the whole view's logit. Whatever the
merge, the winning view of a class is the view with the highest score for it.

These are the building blocks of `edge/rule.py: DecisionRule`, which puts them
together once for the runtime, `sixview eval` and the benchmarks.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metadata import MERGE_KEYS

# A per-stream transform of an image's merged scores before the decision (e.g. the camera's smoothing):
# (role, merged scores in class order) -> the scores to decide on.
ScoreHook = Callable[[str, list[float]], list[float]]

EPS = 1e-6  # view scores are clipped to [EPS, 1 - EPS] before the logit (logit_linear)
MERGE_KINDS = tuple(MERGE_KEYS)  # the merges a model's metadata may name ("max": the default)
FEATURES = ("whole", "crop_max", "crop_mean")  # logit_linear's inputs, in the order of its weights `w`


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


def is_max(merge: Mapping[str, Any] | None) -> bool:
    """True for the max merge (None, or kind "max")."""
    return merge is None or merge.get("kind", "max") == "max"


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of scores clipped to [EPS, 1 - EPS], in float64 (NaN stays NaN)."""
    p = np.minimum(np.maximum(np.asarray(p, np.float64), EPS), 1.0 - EPS)  # np.clip, cheaper on small arrays
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) in float64: exp(-|z|) never overflows, and for z < 0 the form
    e / (1 + e) keeps tiny probabilities accurate (NaN stays NaN, without a warning)."""
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    r = 1.0 / (1.0 + e)
    return np.where(z >= 0, r, e * r)


def _features(view_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = logit(view_scores)
    whole = z[..., 0, :]
    n = z.shape[-2] - 1
    if n == 0:  # one view (tiling off): no crops, the crop features are the whole view's logit
        return whole, whole, whole
    crops = z[..., 1:, :]
    return whole, crops.max(axis=-2), crops.sum(axis=-2) / n


def merge_features(view_scores: np.ndarray) -> np.ndarray:
    """(..., 3, K) logit_linear features (`FEATURES`) from (..., views, K) view scores: the whole
    view's logit (view 0), the max and the mean of the crops' logits (views 1..). With one view
    (tiling off) there are no crops: both crop features are the whole view's logit."""
    return np.stack(_features(view_scores), axis=-2)


def merged_scores(view_scores: np.ndarray, merge: Mapping[str, Any] | None = None,
                  classes: Sequence[str] | None = None) -> np.ndarray:
    """The merged scores (..., K) of (views, K) or (N, views, K) view scores, by the model's
    `merge` (its metadata; None: max), in the view scores' float dtype. `max`: per class the max
    over the views (NaN wins). `logit_linear`:
    sigmoid(w . `merge_features` + bias[class]), `classes` naming the columns (for the bias)."""
    view_scores = np.asarray(view_scores)
    if view_scores.ndim < 2 or view_scores.shape[-2] == 0:
        raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
    if is_max(merge):
        return view_scores.max(axis=-2)
    if merge.get("kind") != "logit_linear":
        raise ValueError(f"unknown merge kind {merge.get('kind')!r}; known: {', '.join(MERGE_KINDS)}")
    if classes is None or len(classes) != view_scores.shape[-1]:
        raise ValueError(f"logit_linear needs the {view_scores.shape[-1]} class names of the score columns")
    w0, w1, w2 = (float(v) for v in merge["w"])
    bias = np.array([float(merge["bias"][c]) for c in classes])
    whole, crop_max, crop_mean = _features(view_scores)
    out = sigmoid(w0 * whole + w1 * crop_max + w2 * crop_mean + bias)
    dtype = view_scores.dtype if np.issubdtype(view_scores.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


class ScoreSmoother:
    """A score hook (the camera's `--smooth`): each class's merged score averaged over the last k
    frames, so the decision is taken on the mean (k == 1: no smoothing)."""

    def __init__(self, k: int = 1):
        if k < 1:
            raise ValueError(f"--smooth must be >= 1, got {k}")
        self.k = k
        self._history: deque[np.ndarray] = deque(maxlen=k)
        self._role: str | None = None

    def reset(self) -> None:
        """Forget the history (routing or tiling changed)."""
        self._history.clear()

    def __call__(self, role: str, scores: list[float]) -> list[float]:
        """The mean of the last k frames' merged scores of the same model (history reset on a change)."""
        if role != self._role or (self._history and len(self._history[0]) != len(scores)):
            self.reset()
            self._role = role
        self._history.append(np.asarray(scores, np.float64))
        return np.mean(self._history, axis=0).tolist()
