"""Multi-label metrics as pure numpy functions (scikit-learn does the harder maths).

Conventions: `y` is a (N, K) multi-hot target matrix, `s` (or `p`) a (N, K)
score matrix in [0, 1], `pred` a (N, K) 0/1 decision matrix. Classes a set does
not label are never counted as negatives: the evaluation metrics expect them
dropped before they are called; the training summary (`score`) takes a
per-class `known` mask instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

EPS = 1e-7  # Keras' clipping for binary cross-entropy
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
    y = np.asarray(y)
    single = (y >= 0.5).sum(axis=1) == 1
    if not single.any():
        return float("nan")
    return float(np.mean(np.argmax(np.asarray(s)[single], axis=1) == np.argmax(y[single], axis=1)))


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


# Training summary: binary cross-entropy, accuracy and AUC with a `known` mask


def _cols(y: np.ndarray, p: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if known is not None:
        y, p = y[:, known], p[:, known]
    return y, p


def bce(y: np.ndarray, p: np.ndarray, known: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy over samples and (known) classes."""
    y, p = _cols(y, p, known)
    p = np.clip(p, EPS, 1 - EPS)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def binary_accuracy(y: np.ndarray, p: np.ndarray, known: np.ndarray | None = None,
                    threshold: float = 0.5) -> float:
    """Fraction of (sample, class) decisions at `threshold` that match the targets."""
    y, p = _cols(y, p, known)
    return float(np.mean((p >= threshold) == (y >= 0.5)))


def macro_auc(y: np.ndarray, p: np.ndarray, known: np.ndarray | None = None) -> float:
    """ROC AUC per class (classes with both positives and negatives), averaged."""
    y, p = _cols(y, p, known)
    aucs = [roc_auc_score(y[:, k] >= 0.5, p[:, k]) for k in range(y.shape[1])
            if 0 < (y[:, k] >= 0.5).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def score(y: np.ndarray, p: np.ndarray, known: np.ndarray | None = None) -> dict[str, float]:
    """All training metrics at once: top1, auc, loss, binary_accuracy, counts."""
    y = np.asarray(y)
    return {"top1": top1_accuracy(y, p), "auc": macro_auc(y, p, known), "loss": bce(y, p, known),
            "binary_accuracy": binary_accuracy(y, p, known), "n": int(len(y)),
            "n_single_label": int(((y >= 0.5).sum(axis=1) == 1).sum())}
