"""Evaluation metrics as pure functions over arrays (scikit-learn does the maths).

Conventions: `y` is a (N, K) 0/1 target matrix, `s` a (N, K) score matrix,
`pred` a (N, K) 0/1 decision matrix, over the classes a set labels (masked
classes are dropped before these are called, never counted as negatives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

SIZE_BINS = (("small", 0.0, 0.25), ("medium", 0.25, 0.5), ("large", 0.5, float("inf")))


def per_class_ap(y: np.ndarray, s: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """Average precision per class (None for a class with no positive)."""
    return {c: (float(average_precision_score(y[:, k], s[:, k])) if y[:, k].any() else None)
            for k, c in enumerate(classes)}


def mean_ap(ap: dict[str, float | None]) -> float:
    """Mean of the defined per-class APs."""
    vals = [v for v in ap.values() if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def prf_at(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, plus 'micro' and 'macro' averages."""
    p, r, f, n = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out = {c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(n[k])}
           for k, c in enumerate(classes)}
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out[avg] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(y.sum())}
    return out


def exact_match(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of images whose predicted label set equals the true one."""
    return float(np.mean(np.all(y.astype(bool) == pred.astype(bool), axis=1)))


def top1_accuracy(y: np.ndarray, s: np.ndarray) -> float:
    """Top-1 accuracy over images with exactly one true class (NaN if there are none)."""
    single = y.sum(axis=1) == 1
    if not single.any():
        return float("nan")
    return float(np.mean(s[single].argmax(axis=1) == y[single].argmax(axis=1)))


def size_bin(rel_side: float) -> str:
    """'small' / 'medium' / 'large' for a box side relative to the image side."""
    return next(name for name, lo, hi in SIZE_BINS if lo <= rel_side < hi)


def recall_by_size(boxes: Sequence[tuple[int, int, float]], pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Recall per object size: `boxes` are (image row, class column, relative side);
    an object is found when its class is among its image's predicted labels."""
    out = {}
    for name, _, _ in SIZE_BINS:
        hits = [bool(pred[i, k]) for i, k, rel in boxes if size_bin(rel) == name]
        out[name] = {"recall": float(np.mean(hits)) if hits else float("nan"), "objects": len(hits)}
    return out


def best_f1_thresholds(y: np.ndarray, s: np.ndarray, default: Sequence[float]) -> list[float]:
    """Per class, the score threshold that maximises F1 (`default` where a class has no positive)."""
    out = []
    for k in range(y.shape[1]):
        if not y[:, k].any():
            out.append(float(default[k]))
            continue
        p, r, t = precision_recall_curve(y[:, k], s[:, k])
        f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
        out.append(float(np.clip(t[int(np.argmax(f1))], 0.01, 0.99)))
    return out
