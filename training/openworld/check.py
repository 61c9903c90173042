"""A quick check of a head on held-out evidence, from arrays (no model run): for choosing between
heads before the runtime's own evaluation (`sixview eval`), which gives the reported figures.

Per photo, the max over its views of each class's score; per class, the threshold of best F1 on
all the held-out photos together (optimistic, and equally so for every head compared); then per
set the share of the photos that show none of its classes given a label, precision and recall.
"""

from __future__ import annotations

import numpy as np

from training.data.photos import UNKNOWN


def _best_f1_threshold(s: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(-s)
    tp = np.cumsum(y[order])
    f1 = 2 * tp / (np.arange(1, len(s) + 1) + y.sum())
    return float(s[order][int(np.argmax(f1))]) if y.any() else 1.0


def thresholds(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K,) per class the threshold of best F1 over the photos whose target for it is known."""
    known = targets != UNKNOWN
    return np.array([_best_f1_threshold(scores[known[:, c], c], targets[known[:, c], c] == 1)
                     for c in range(scores.shape[1])])


def figures(scores: np.ndarray, targets: np.ndarray, thr: np.ndarray | None = None) -> dict[str, float]:
    """{labelled_free, precision, recall, n_free} of (P, K) photo scores and (P, K) targets (UNKNOWN masked) at
    thresholds `thr` (default: `thresholds` of these photos). Label-free: no known class present."""
    known = targets != UNKNOWN
    thr = thresholds(scores, targets) if thr is None else thr
    pred = (scores >= thr) & known
    pos = (targets == 1) & known
    free = ~pos.any(axis=1)
    tp = (pred & pos).sum()
    return {"labelled_free": float(pred[free].any(axis=1).mean()) if free.any() else float("nan"),
            "precision": float(tp / max(pred.sum(), 1)), "recall": float(tp / max(pos.sum(), 1)),
            "n_free": int(free.sum())}


def photo_scores(view_logits: np.ndarray) -> np.ndarray:
    """(P, K) max over the views of (P, 6, K) logits, as probabilities."""
    return 1 / (1 + np.exp(-view_logits.max(axis=1)))
