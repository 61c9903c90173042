"""Fitting the open-world head on the HD model's frozen per-view evidence.

Two small, convex fits (L-BFGS on float64, deterministic):

1. `fit_other`: a logistic regression from a view's pooled backbone features to the ImageNet
   teacher's probability mass on synsets that are none of the classes (`synsets.other_mass`),
   fitted to those soft targets (distillation): its logit `l` says "this view shows something
   the backbone knows as another thing" (a fox, a whale, a starfish).
2. `fit_gate`: per class, the view's new logit `a * z + b * l + u . f + d` (z: the HD model's
   logit, f: the view's features; a >= 0, b <= 0, u L2-penalised), a logistic regression on the
   views whose target for the class is known, every set weighted equally, photos of other
   animals as hard negatives.

Both are linear in the features, so the exported graph computes them exactly, folded into the HD
head's last Dense layer and one product of the features (`graft`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from edge.merge import sigmoid
from training.data.photos import UNKNOWN


@dataclass(frozen=True)
class OpenHead:
    """The fitted head: `other_w` (F,), `other_b`; per class `a`, `b`, `d` (K,) and `u` (F, K)."""

    other_w: np.ndarray
    other_b: float
    a: np.ndarray
    b: np.ndarray
    d: np.ndarray
    u: np.ndarray

    def other_logit(self, features: np.ndarray) -> np.ndarray:
        """(...,) the distilled other-mass logit of (..., F) features."""
        return features.astype(np.float64) @ self.other_w + self.other_b

    def logits(self, z: np.ndarray, features: np.ndarray) -> np.ndarray:
        """(..., K) gated logits of the HD model's (..., K) logits and (..., F) features."""
        return self.a * z + self.b * self.other_logit(features)[..., None] + features @ self.u + self.d


def _logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray,
              bounds: list[tuple[float | None, float | None]] | None = None, x0: np.ndarray | None = None):
    """Weighted logistic regression (soft targets y in [0, 1]) with a per-coefficient L2 penalty `pen`."""

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = x @ theta
        ls = np.logaddexp(0, s)
        value = np.sum(w * (ls - y * s)) + 0.5 * np.sum(pen * theta ** 2)
        p = sigmoid(s)
        return value, x.T @ (w * (p - y)) + pen * theta

    start = np.zeros(x.shape[1]) if x0 is None else x0
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
    return res.x


def fit_other(features: np.ndarray, mass: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """(w, b): the logistic regression of (n, F) features onto the teacher's other mass (n,)."""
    x = features.astype(np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = np.c_[(x - mu) / sd, np.ones(len(x))]
    pen = np.r_[np.full(x.shape[1], l2 / len(x)), 0.0]
    theta = _logistic(xs, np.clip(mass, 0, 1), np.full(len(x), 1.0 / len(x)), pen)
    w = theta[:-1] / sd
    return w, float(theta[-1] - mu @ w)


def set_weights(set_index: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per row: 1 / (the number of known rows of its set), so every set counts equally."""
    w = np.zeros(len(set_index))
    for s in np.unique(set_index):
        rows = (set_index == s) & known
        w[rows] = 1.0 / max(rows.sum(), 1)
    return w


def fit_gate(z: np.ndarray, other: np.ndarray, features: np.ndarray, targets: np.ndarray, set_index: np.ndarray,
             l2: float = 3e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class (a, b, d) and the (F, K) feature weights u from (n, K) logits, (n,) other logits, (n, F)
    features, (n, K) targets (UNKNOWN masked) and each row's set (sets weighted equally); a class no set
    labels keeps a = 1 and the rest 0. `l2` penalises u on standardised features."""
    n, k = z.shape
    f = features.astype(np.float64)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    fs = (f - mu) / sd
    a, b, d, u = np.ones(k), np.zeros(k), np.zeros(k), np.zeros((f.shape[1], k))
    for c in range(k):
        known = targets[:, c] != UNKNOWN
        if not known.any() or targets[known, c].min() == targets[known, c].max():
            continue
        x = np.c_[z[known, c], other[known], fs[known], np.ones(known.sum())]
        w = set_weights(set_index[known], np.ones(known.sum(), bool))
        bounds = [(0, None), (None, 0)] + [(None, None)] * (f.shape[1] + 1)
        start = np.r_[1.0, 0.0, np.zeros(f.shape[1]), 0.0]
        pen = np.r_[0.0, 0.0, np.full(f.shape[1], l2), 0.0]
        theta = _logistic(x, targets[known, c], w / w.sum(), pen, bounds, start)
        a[c], b[c], u[:, c] = theta[0], theta[1], theta[2:-1] / sd
        d[c] = theta[-1] - mu @ u[:, c]
    return a, b, d, u
