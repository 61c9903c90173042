"""The decision rule: one frozen value, resolved once, that turns view scores into labels.

`DecisionRule.of(meta, ...)` resolves a model's rule once from its metadata plus the
caller's overrides (one threshold for every class, per-class thresholds, the fallback
score, the presence threshold, `guess_in_labels`, the merge). The runtime (`Engine.classify`),
`sixview eval`, its calibration and the precision gate all decide through it:

- `decide(view_scores, view_names, role, hook)`: one image's (views, classes) scores -> `Decision`
  (the per-frame path: plain lists, several times cheaper than small numpy calls for a few classes);
- `decide_views(view_scores, hook, role)`: (images, views, classes) scores -> `Decisions`, the
  same decisions as arrays (vectorised; the presence, whose bits must match, per row);
- `decide_merged(scores)`: the same on merged (images, classes) scores (evaluation, calibration).

The rule itself (`edge.merge`: `merged_scores`, `presence`, `choose`): the merged scores (the
model's merge; the winning view of a class is the view with the highest score), an optional score
hook (a stream's smoothing), then: presence below `presence_threshold` -> none of the classes;
else the confident classes (score >= threshold, best first, ties in class order) and, only when
there is none, the guess (the top class, NaN first, when it scores above the fallback score; kept
apart from the labels unless `guess_in_labels`). A per-request threshold is `with_threshold(t)`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .merge import Decision, ScoreHook, choose, in_dtype, is_max, merged_scores, presence
from .metadata import ModelMeta


@dataclass(frozen=True)
class Decisions:
    """A batch's decisions as arrays: merged scores (N, K) (after the hook), `confident` (N, K),
    `guess` (N,) the guessed class or -1, `presence` (N,), `winners` (N, K) the winning view index
    (or None from merged scores), and whether the scores round exactly (`Decision.scores`)."""

    scores: np.ndarray
    confident: np.ndarray
    guess: np.ndarray
    presence: np.ndarray
    winners: np.ndarray | None = None
    exact: bool = False

    @property
    def guess_mask(self) -> np.ndarray:
        """(N, K) bool: True at each row's guess (at most one per row, only when none is confident)."""
        mask = np.zeros(self.confident.shape, bool)
        rows = np.flatnonzero(self.guess >= 0)
        mask[rows, self.guess[rows]] = True
        return mask


@dataclass(frozen=True)
class DecisionRule:
    """A model's decision, resolved once: its classes, per-class thresholds (float32, as compared
    with the scores), fallback score, presence threshold, `guess_in_labels` and merge."""

    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    fallback_min: float
    presence_threshold: float = 0.0
    guess_in_labels: bool = False
    merge: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.classes):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.classes)} classes")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in np.asarray(self.thresholds, np.float32)))

    @classmethod
    def of(cls, meta: ModelMeta, *, threshold: float | None = None, thresholds: Mapping[str, float] | None = None,
           fallback_min: float | None = None, presence_threshold: float | None = None,
           guess_in_labels: bool = False, merge: Mapping[str, Any] | None = None) -> DecisionRule:
        """The rule of a model (`meta`), with overrides: `threshold` (one value for every class, else
        `thresholds` by class name over the model's), fallback, presence threshold, merge."""
        th = {**meta.thresholds, **(thresholds or {})}
        rule = cls(tuple(meta.classes), tuple(th[c] for c in meta.classes),
                   meta.fallback_min_score if fallback_min is None else float(fallback_min),
                   meta.presence_threshold if presence_threshold is None else float(presence_threshold),
                   guess_in_labels, dict(meta.merge if merge is None else merge))
        return rule if threshold is None else rule.with_threshold(threshold)

    def with_threshold(self, threshold: float | None) -> DecisionRule:
        """The same rule with one threshold for every class (None: this rule)."""
        if threshold is None:
            return self
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        return dataclasses.replace(self, thresholds=(threshold,) * len(self.classes))

    @functools.cached_property
    def named_thresholds(self) -> dict[str, float]:
        """The thresholds by class, 6 decimals (a record's `thresholds`)."""
        return {c: round(t, 6) for c, t in zip(self.classes, self.thresholds, strict=True)}

    @functools.cached_property
    def _max(self) -> bool:
        return is_max(self.merge)

    def decide(self, view_scores: np.ndarray, view_names: tuple[str, ...], role: str = "",
               hook: ScoreHook | None = None) -> Decision:
        """One image's decision from its (views, classes) scores (the per-frame path)."""
        if view_scores.ndim != 2 or view_scores.shape[0] == 0:
            raise ValueError(f"expected (views, classes) scores, got shape {view_scores.shape}")
        winner = view_scores.argmax(axis=0).tolist()
        if self._max:  # the fast path: lists, no numpy merge
            rows = view_scores.tolist()  # exact: float32 -> float changes no comparison and no round()
            merged = [rows[w][c] for c, w in enumerate(winner)]
        else:
            merged = merged_scores(view_scores, self.merge, self.classes).tolist()  # in the view scores' dtype
        exact = view_scores.dtype == np.float32 or view_scores.dtype == np.float16
        if hook is not None:
            merged, exact = [float(s) for s in hook(role, merged)], False
        present = presence(merged)
        if present < self.presence_threshold:
            chosen, top = [], None
        else:
            chosen, top = choose(merged, self.thresholds, in_dtype(self.fallback_min, view_scores.dtype))
        return self._decision(merged, winner, view_names, chosen, top, present, exact)

    def _decision(self, merged: list[float], winner: list[int], view_names: tuple[str, ...], chosen: list[int],
                  top: int | None, present: float, exact: bool) -> Decision:
        """The `Decision` of one image (scores rounded to 6 decimals)."""
        classes = self.classes
        # round(s, 6) == round(s * 1e6) / 1e6 (3x cheaper) where s * 1e6 is exact: float32/float16 scores in (0, 1]
        scores = {c: round(s * 1e6) / 1e6 if exact and 0.0 < s <= 1.0 else round(s, 6)
                  for c, s in zip(classes, merged, strict=True)}
        labels = [classes[i] for i in chosen]
        guess = None
        if top is not None:
            guess = (classes[top], scores[classes[top]])
            if self.guess_in_labels:
                labels.append(classes[top])
        views = {c: view_names[w] for c, w in zip(classes, winner, strict=True)} if view_names else {}
        return Decision(scores, views, labels, guess, present)

    def decide_views(self, view_scores: np.ndarray, hook: ScoreHook | None = None, role: str = "") -> Decisions:
        """The decisions of (N, views, classes) scores, as arrays: `decide` for each image, vectorised."""
        view_scores = np.asarray(view_scores)
        if view_scores.ndim != 3 or view_scores.shape[1] == 0:
            raise ValueError(f"expected (images, views, classes) scores, got shape {view_scores.shape}")
        merged = merged_scores(view_scores, self.merge, self.classes)
        exact = view_scores.dtype == np.float32 or view_scores.dtype == np.float16
        if hook is not None:
            merged = np.array([[float(s) for s in hook(role, row)] for row in merged.tolist()], np.float64)
            merged, exact = merged.reshape(len(view_scores), len(self.classes)), False
        out = self.decide_merged(merged, view_scores.dtype)
        return dataclasses.replace(out, winners=view_scores.argmax(axis=1), exact=exact)

    def decide_merged(self, scores: np.ndarray, dtype: np.dtype | None = None) -> Decisions:
        """The decisions of merged (N, classes) scores; the fallback score is compared in `dtype`
        (default: the scores'), as the per-frame path compares it in the view scores' dtype."""
        s = np.asarray(scores)
        n, k = s.shape
        pres = np.array([presence(row) for row in s.tolist()], np.float64).reshape(n)  # the same bits as `decide`
        confident = s >= np.asarray(self.thresholds, np.float64)
        guess = np.full(n, -1, np.int64)
        if k:
            top = s.argmax(axis=1)  # the first NaN, else the first maximum: as `choose`
            fallback = in_dtype(self.fallback_min, np.dtype(dtype if dtype is not None else s.dtype))
            top_score = s[np.arange(n), top]
            guess = np.where(~confident.any(axis=1) & (top_score > fallback), top, -1)
        gated = pres < self.presence_threshold
        confident[gated] = False
        guess[gated] = -1
        return Decisions(s, confident, guess, pres, exact=s.dtype == np.float32 or s.dtype == np.float16)

    def decision(self, batch: Decisions, i: int, view_names: tuple[str, ...] = ()) -> Decision:
        """Row `i` of a batch as the `Decision` that `decide` gives (labels best first)."""
        row = batch.scores[i].tolist()
        chosen = sorted(np.flatnonzero(batch.confident[i]).tolist(), key=row.__getitem__, reverse=True)
        top = int(batch.guess[i]) if batch.guess[i] >= 0 else None
        winner = batch.winners[i].tolist() if batch.winners is not None else []
        return self._decision(row, winner, view_names if winner else (), chosen, top, float(batch.presence[i]),
                              batch.exact)
