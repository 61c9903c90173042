"""A quick check of a head on held-out evidence, from arrays (no model run): for choosing between
heads before the runtime's own evaluation (`sixview eval`), which gives the reported figures.

Per photo, the max over its views of each class's score; per class, the threshold of best F1 on
all the held-out photos together (optimistic, and equally so for every head compared); then per
set the share of the photos that show none of its classes given a label, precision and recall.
"""

from __future__ import annotations

import numpy as np

from edge.merge import sigmoid
from training.data.photos import UNKNOWN
from training.eval import metrics as M


def thresholds(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K,) per class the threshold of best F1 over the photos whose target for it is known
    (`training.eval.metrics.best_f1_thresholds`, as calibration chooses them)."""
    known = targets != UNKNOWN
    return np.array(M.best_f1_thresholds(targets == 1, scores, [1.0] * scores.shape[1], known))


def figures(scores: np.ndarray, targets: np.ndarray, thr: np.ndarray | None = None) -> dict[str, float]:
    """{labelled_free, precision, recall, n_free} of (P, K) photo scores and (P, K) targets (UNKNOWN masked) at
    thresholds `thr` (default: `thresholds` of these photos). Label-free: no known class present."""
    known = targets != UNKNOWN
    thr = thresholds(scores, targets) if thr is None else thr
    pred = scores >= thr
    pr = M.micro_pr(targets, pred, known)
    return {"labelled_free": M.share_with_label(targets, pred, known), "precision": pr["precision"],
            "recall": pr["recall"], "n_free": int(M.label_free(targets, known).sum())}


def photo_scores(view_logits: np.ndarray) -> np.ndarray:
    """(P, K) max over the views of (P, 6, K) logits, as probabilities."""
    return sigmoid(view_logits.max(axis=1))
