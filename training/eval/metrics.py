"""Multi-label metrics as pure numpy functions (scikit-learn does the harder maths).

Conventions: `y` is a (N, K) multi-hot target matrix, `s` (or `p`) a (N, K)
score matrix in [0, 1], `pred` a (N, K) 0/1 decision matrix. Classes a set does
not label are never counted as negatives: the evaluation metrics take a `known`
mask, (N, K) per row (rows from several sets) or (K,), and count only known
entries (None: all known); the training summary (`score`) takes a per-class
`known` mask that selects columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

EPS = 1e-7  # Keras' clipping for binary cross-entropy
SIZE_BINS = (("small", 0.0, 0.25), ("medium", 0.25, 0.5), ("large", 0.5, float("inf")))


def _mask(y: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    """The (N, K) known mask: `known` (N, K) or (K,) broadcast, or all True."""
    if known is None:
        return np.ones(np.shape(y), bool)
    return np.broadcast_to(np.asarray(known, bool), np.shape(y))


def per_class_ap(y: np.ndarray, s: np.ndarray, classes: Sequence[str],
                 known: np.ndarray | None = None) -> dict[str, float | None]:
    """Average precision per class over the rows where it is known (None for a class with no positive)."""
    m = _mask(y, known)
    out: dict[str, float | None] = {}
    for k, c in enumerate(classes):
        yk, sk = y[m[:, k], k], s[m[:, k], k]
        out[c] = float(average_precision_score(yk, sk)) if yk.any() else None
    return out


def mean_ap(ap: dict[str, float | None]) -> float:
    """Mean of the defined per-class APs."""
    vals = [v for v in ap.values() if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from counts (0 where undefined, as scikit-learn's zero_division=0)."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=p + r > 0)
    return p, r, f


def _counts(y: np.ndarray, pred: np.ndarray, known: np.ndarray | None, axis: int | None = 0):
    m = _mask(y, known)
    y, pred = np.asarray(y) >= 0.5, np.asarray(pred).astype(bool)
    return ((y & pred & m).sum(axis), (~y & pred & m).sum(axis), (y & ~pred & m).sum(axis), (y & m).sum(axis))


def prf_at(y: np.ndarray, pred: np.ndarray, classes: Sequence[str],
           known: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, plus 'micro' and 'macro' averages (over the
    known entries when `known` is given; macro averages every class, as scikit-learn does)."""
    tp, fp, fn, n = _counts(y, pred, known)
    p, r, f = _prf(tp, fp, fn)
    out = {c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(n[k])}
           for k, c in enumerate(classes)}
    mp, mr, mf = _prf(tp.sum(), fp.sum(), fn.sum())
    out["micro"] = {"precision": float(mp), "recall": float(mr), "f1": float(mf), "support": int(n.sum())}
    out["macro"] = {"precision": float(np.mean(p)) if len(p) else 0.0, "recall": float(np.mean(r)) if len(r) else 0.0,
                    "f1": float(np.mean(f)) if len(f) else 0.0, "support": int(n.sum())}
    return out


def micro_pr(y: np.ndarray, pred: np.ndarray, known: np.ndarray | None = None) -> dict[str, float]:
    """Micro precision, recall and F1 over the known entries (0 where undefined)."""
    tp, fp, fn, _ = _counts(y, pred, known, axis=None)
    p, r, f = _prf(tp, fp, fn)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def exact_match(y: np.ndarray, pred: np.ndarray, known: np.ndarray | None = None) -> float:
    """Fraction of images whose predicted label set equals the true one (on the known classes)."""
    m = _mask(y, known)
    return float(np.mean(np.all(((np.asarray(y) >= 0.5) == np.asarray(pred).astype(bool)) | ~m, axis=1)))


def top1_accuracy(y: np.ndarray, s: np.ndarray, known: np.ndarray | None = None) -> float:
    """Top-1 accuracy over images with exactly one true (known) class, the top taken over the
    known classes (NaN if there are none)."""
    y = np.asarray(y)
    m = _mask(y, known)
    single = ((y >= 0.5) & m).sum(axis=1) == 1
    if not single.any():
        return float("nan")
    s = np.where(m, np.asarray(s, np.float64), -np.inf)
    return float(np.mean(np.argmax(s[single], axis=1) == np.argmax((y >= 0.5)[single] & m[single], axis=1)))


def label_free(y: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the rows whose known classes are all absent."""
    return ~((np.asarray(y) >= 0.5) & _mask(y, known)).any(axis=1)


def share_with_label(y: np.ndarray, pred: np.ndarray, known: np.ndarray | None = None) -> float:
    """Of the label-free rows, the fraction with a predicted known class (NaN if there are none)."""
    free = label_free(y, known)
    if not free.any():
        return float("nan")
    said = (np.asarray(pred).astype(bool) & _mask(y, known)).any(axis=1)
    return float(np.mean(said[free]))


def presence_auroc(y: np.ndarray, presence: np.ndarray, known: np.ndarray | None = None) -> float:
    """ROC AUC of `presence` (N,) separating labelled rows (positive) from label-free rows; NaN when
    either group is empty (rows with a NaN presence are left out)."""
    p = np.asarray(presence, np.float64)
    ok = ~np.isnan(p)
    labelled = ~label_free(y, known)[ok]
    if labelled.all() or not labelled.any():
        return float("nan")
    return float(roc_auc_score(labelled, p[ok]))


def trust(y: np.ndarray, known: np.ndarray | None, confident: np.ndarray, guess: np.ndarray,
          presence: np.ndarray) -> dict[str, Any]:
    """Metrics of trust at a decision: micro precision/recall of the confident labels and of
    confident-or-guess (the reference rule), the share of label-free rows given a confident label
    (and a label or guess), and the AUROC of `presence` for label-free vs labelled rows.
    Only known entries count: a label or guess of a class unknown to a row is masked."""
    either = np.asarray(confident).astype(bool) | np.asarray(guess).astype(bool)
    free = label_free(y, known)
    return {"confident": micro_pr(y, confident, known), "confident_or_guess": micro_pr(y, either, known),
            "labelled": int((~free).sum()), "label_free": int(free.sum()),
            "label_free_confident": share_with_label(y, confident, known),
            "label_free_confident_or_guess": share_with_label(y, either, known),
            "presence_auroc": presence_auroc(y, presence, known)}


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


def best_f1_thresholds(y: np.ndarray, s: np.ndarray, default: Sequence[float],
                       known: np.ndarray | None = None) -> list[float]:
    """Per class, the score threshold that maximises F1 over the rows where the class is known
    (`default` where a class has no positive)."""
    m = _mask(y, known)
    out = []
    for k in range(y.shape[1]):
        yk, sk = y[m[:, k], k], s[m[:, k], k]
        if not yk.any():
            out.append(float(default[k]))
            continue
        p, r, t = precision_recall_curve(yk, sk)
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
