"""Fitting the view-aware merge (`edge.merge`'s `logit_linear`) on labelled view scores.

The merge: P(class) = sigmoid(w_whole * z_whole + w_crop_max * max z_crops + w_crop_mean * mean z_crops
+ bias_class), z = logit of a view's score (`edge.merge.merge_features`, the runtime's own features).
`fit_logit_linear` fits it by logistic regression on the known (photo, class) entries (a set
that does not label a class contributes no entry of it): first the three weights and one bias
pooled over all classes, then, with those weights fixed, each class's own bias on its entries,
for the classes with at least `MIN_POSITIVES` known positives and as many negatives; the others
keep the pooled bias. This is the "learned_shared" merge of `benchmarks/merges.py`, which
imports it from here.

`fit_logistic` is the regression itself (Newton's method on the log-loss with a small ridge on
the weights, the bias unpenalised: sklearn's `LogisticRegression(C=1 / (l2 * n))` with an
unpenalised intercept, plus a fixed per-row offset, which sklearn has not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.merge import merge_features, sigmoid

L2 = 1e-4  # ridge on the weights (not the bias), times the number of rows
MIN_POSITIVES = 20  # known positives (and negatives) a class needs for its own bias

Params = dict[str, np.ndarray]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, offset: np.ndarray | None = None,
                 iters: int = 100) -> tuple[np.ndarray, float]:
    """Weights (d,) and bias of P(y=1) = sigmoid(x @ w + b + offset), by Newton's method on the
    log-loss plus `l2 * n / 2 * |w|^2` (the bias is not penalised). `x` (n, d) may have d = 0
    (a bias alone). Separable data stay finite through the ridge; a step that would raise the loss
    is halved until it does not (saturated scores make the Hessian nearly singular, where a full
    Newton step overshoots)."""
    x = np.asarray(x, np.float64).reshape(len(y), -1)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    off = np.zeros(n) if offset is None else np.asarray(offset, np.float64)
    ridge = np.full(d + 1, l2 * n)
    ridge[-1] = 1e-9 * n  # the bias: unpenalised (a trace keeps all-positive/negative data finite)

    def loss(v: np.ndarray) -> float:
        z = xb @ v + off
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(ridge * v * v))

    prior = np.clip(y.mean(), 1e-3, 1 - 1e-3)
    w = np.zeros(d + 1)
    w[-1] = np.log(prior / (1 - prior)) - off.mean()
    current = loss(w)
    for _ in range(iters):
        p = sigmoid(xb @ w + off)
        grad = xb.T @ (p - y) + ridge * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking: the Newton direction descends, so a short enough step lowers the loss
            trial = loss(w - t * step)
            if trial <= current or t < 1e-12:
                break
            t /= 2
        w -= t * step
        current = trial
        if np.max(np.abs(t * step)) < 1e-9:
            break
    return w[:-1], float(w[-1])


def pairs(values: np.ndarray, y: np.ndarray, mask: np.ndarray, k: int | None = None):
    """The known (photo, class) entries: values (n, ...) and labels (n,), of class k or of all.
    `values` is (N, K) or (N, d, K) (d features per entry)."""
    if k is None:
        return values.transpose(0, 2, 1)[mask] if values.ndim == 3 else values[mask], y[mask]
    rows = mask[:, k]
    return (values[rows][:, :, k] if values.ndim == 3 else values[rows, k]), y[rows, k]


def eligible(y: np.ndarray, mask: np.ndarray, min_positives: int = MIN_POSITIVES) -> np.ndarray:
    """(K,) bool: the classes with at least `min_positives` known positives and as many negatives."""
    pos = ((y >= 0.5) & mask).sum(axis=0)
    neg = ((y < 0.5) & mask).sum(axis=0)
    return (pos >= min_positives) & (neg >= min_positives)


def fit_learned(p: np.ndarray, y: np.ndarray, mask: np.ndarray, per_class: bool = False,
                min_positives: int = MIN_POSITIVES) -> Params:
    """{"w": (3, K), "b": (K,)} of the merge on (N, views, K) view scores `p`, labels `y` and the
    known mask (N, K): weights shared by all classes and a per-class bias (`per_class`: all four
    per class), the eligible classes fitted on their own entries, the others the pooled fit."""
    k = p.shape[-1]
    y = np.asarray(y, np.float64)
    mask = np.asarray(mask, bool)
    f = merge_features(p)  # (n, 3, K)
    xs, ys = pairs(f, y, mask)
    if not len(ys):
        raise ValueError("no known (photo, class) entry to fit the merge on")
    w, b = fit_logistic(xs, ys)
    wv, bv = np.repeat(w[:, None], k, axis=1), np.full(k, b)
    for c in np.flatnonzero(eligible(y, mask, min_positives)):
        xc, yc = pairs(f, y, mask, c)
        if per_class:
            wv[:, c], bv[c] = fit_logistic(xc, yc)
        else:  # the shared weights, this class's own bias
            _, bv[c] = fit_logistic(np.zeros((len(yc), 0)), yc, offset=xc @ w)
    return {"w": wv, "b": bv}


def fit_logit_linear(view_scores: np.ndarray, y: np.ndarray, mask: np.ndarray, classes: Sequence[str],
                     fitted_on: str = "", min_positives: int = MIN_POSITIVES) -> dict[str, Any]:
    """The `merge` metadata of a logit_linear merge fitted on (N, views, K) view scores (rows
    with a NaN score are left out), labels `y` and known mask (N, K), columns named `classes`."""
    view_scores = np.asarray(view_scores)
    ok = ~np.isnan(view_scores).any(axis=(1, 2))
    params = fit_learned(view_scores[ok].astype(np.float64), np.asarray(y)[ok], np.asarray(mask, bool)[ok],
                         False, min_positives)
    merge: dict[str, Any] = {"kind": "logit_linear", "w": [float(v) for v in params["w"][:, 0]],
                             "bias": {c: float(b) for c, b in zip(classes, params["b"], strict=True)}}
    if fitted_on:
        merge["fitted_on"] = fitted_on
    return merge


def own_bias(y: np.ndarray, mask: np.ndarray, classes: Sequence[str], min_positives: int = MIN_POSITIVES,
             view_scores: np.ndarray | None = None) -> list[str]:
    """The classes whose bias is their own (the others: the pooled one), for a report."""
    y, mask = np.asarray(y), np.asarray(mask, bool)
    if view_scores is not None:
        ok = ~np.isnan(np.asarray(view_scores)).any(axis=(1, 2))
        y, mask = y[ok], mask[ok]
    return [c for c, e in zip(classes, eligible(y, mask, min_positives), strict=True) if e]
