"""Multi-label metrics as pure numpy functions (scores in [0, 1], multi-hot targets).

`known` (per class, bool) leaves classes a set does not label out of a metric.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7  # Keras' clipping for binary cross-entropy


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
    from sklearn.metrics import roc_auc_score

    y, p = _cols(y, p, known)
    aucs = [roc_auc_score(y[:, k] >= 0.5, p[:, k]) for k in range(y.shape[1])
            if 0 < (y[:, k] >= 0.5).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def top1(y: np.ndarray, p: np.ndarray) -> float:
    """Top-1 accuracy over samples with exactly one positive label (NaN if none)."""
    y = np.asarray(y)
    single = (y >= 0.5).sum(axis=1) == 1
    if not single.any():
        return float("nan")
    return float(np.mean(np.argmax(p[single], axis=1) == np.argmax(y[single], axis=1)))


def score(y: np.ndarray, p: np.ndarray, known: np.ndarray | None = None) -> dict[str, float]:
    """All metrics at once: top1, auc, loss, binary_accuracy, counts."""
    y = np.asarray(y)
    return {"top1": top1(y, p), "auc": macro_auc(y, p, known), "loss": bce(y, p, known),
            "binary_accuracy": binary_accuracy(y, p, known), "n": int(len(y)),
            "n_single_label": int(((y >= 0.5).sum(axis=1) == 1).sum())}
