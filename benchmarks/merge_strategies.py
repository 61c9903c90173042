"""The merges `benchmarks/merges.py` compares: fitting and applying each, thresholds, metrics,
paired bootstrap and cost (pure numpy; the learned merge is the runtime's `logit_linear`, fitted by
`training.eval.merge_fit`)."""

from __future__ import annotations

import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.merge import logit, merge_features, sigmoid
from edge.tiling import VIEW_NAMES
from training.eval.merge_fit import MIN_POSITIVES, eligible, fit_learned, fit_logistic, pairs

Params = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Logistic regression and the merges (pure numpy)


# The learned merge is the one the runtime ships (`edge.merge`: logit_linear): its features, logit,
# sigmoid and fit are imported from there and from `training.eval.merge_fit` (one definition).
features = merge_features  # (..., 3, K): [z_whole, max z_crops, mean z_crops] from (..., 6, K) view scores


def fit_none(p: np.ndarray, y: np.ndarray, mask: np.ndarray, min_positives: int = MIN_POSITIVES) -> Params:
    """Nothing to fit."""
    return {}


def apply_max(params: Params, p: np.ndarray) -> np.ndarray:
    """(a) the max over the views (the runtime's merge)."""
    return p.max(axis=-2)


def apply_whole(params: Params, p: np.ndarray) -> np.ndarray:
    """The whole view alone."""
    return p[..., 0, :]


def apply_top2_mean(params: Params, p: np.ndarray) -> np.ndarray:
    """(d) the mean of the two highest view scores."""
    top = np.partition(p, p.shape[-2] - 2, axis=-2)[..., -2:, :]
    return top.mean(axis=-2)


def apply_logit_mean(params: Params, p: np.ndarray) -> np.ndarray:
    """(e) sigmoid of the mean of the six views' logits."""
    return sigmoid(logit(p).mean(axis=-2))


def _fit_platt(p: np.ndarray, y: np.ndarray, mask: np.ndarray, per_class: bool,
               min_positives: int) -> Params:
    k = p.shape[-1]
    z = logit(p)
    kinds = {"whole": z[:, 0, :], "crop": z[:, 1:, :].max(axis=1)}  # crops: the best crop (see the docstring)
    out: Params = {}
    for kind, zk in kinds.items():
        xs, ys = pairs(zk, y, mask)
        (a,), b = fit_logistic(xs[:, None], ys)
        av, bv = np.full(k, a), np.full(k, b)
        if per_class:
            for c in np.flatnonzero(eligible(y, mask, min_positives)):
                xc, yc = pairs(zk, y, mask, c)
                (av[c],), bv[c] = fit_logistic(xc[:, None], yc)
        out[f"a_{kind}"], out[f"b_{kind}"] = av, bv
    return out


def fit_platt_shared(p, y, mask, min_positives: int = MIN_POSITIVES) -> Params:
    """(b) Platt scaling of the whole view and of the crops, shared by all classes."""
    return _fit_platt(p, y, mask, False, min_positives)


def fit_platt_class(p, y, mask, min_positives: int = MIN_POSITIVES) -> Params:
    """(b) Platt scaling of the whole view and of the crops per class (shared where data are short)."""
    return _fit_platt(p, y, mask, True, min_positives)


def apply_platt(params: Params, p: np.ndarray) -> np.ndarray:
    """(b) each view mapped by its kind's Platt scaling, then the max."""
    z = logit(p)
    whole = params["a_whole"] * z[..., 0, :] + params["b_whole"]
    crops = (params["a_crop"] * z[..., 1:, :] + params["b_crop"]).max(axis=-2)
    return sigmoid(np.maximum(whole, crops))


def fit_learned_shared(p, y, mask, min_positives: int = MIN_POSITIVES) -> Params:
    """(c) logistic regression on the three view features: shared weights, per-class bias."""
    return fit_learned(p, y, mask, False, min_positives)


def fit_learned_class(p, y, mask, min_positives: int = MIN_POSITIVES) -> Params:
    """(c) logistic regression on the three view features, per class (shared where data are short)."""
    return fit_learned(p, y, mask, True, min_positives)


def apply_learned(params: Params, p: np.ndarray) -> np.ndarray:
    """(c) sigmoid(w . [z_whole, max z_crops, mean z_crops] + b) per class (with weights shared by
    all classes: `edge.merge.merged_scores` of the logit_linear merge, in float64)."""
    f = features(p)
    w = params["w"]
    return sigmoid(w[0] * f[..., 0, :] + w[1] * f[..., 1, :] + w[2] * f[..., 2, :] + params["b"])


@dataclass(frozen=True)
class Merge:
    name: str
    about: str
    fit: Callable[..., Params]
    apply: Callable[[Params, np.ndarray], np.ndarray]
    fitted: str = "nothing"  # what is fitted, in words


MERGES = (
    Merge("max", "(a) max over the six views (today)", fit_none, apply_max),
    Merge("whole", "reference: whole view alone (tiling off)", fit_none, apply_whole),
    Merge("platt_shared", "(b) Platt per view kind (whole, crops), shared, then max", fit_platt_shared,
          apply_platt, "4"),
    Merge("platt_class", "(b) Platt per view kind, per class, then max", fit_platt_class, apply_platt, "4 per class"),
    Merge("learned_shared", "(c) logistic on [z_whole, max z_crop, mean z_crop], shared weights + class bias",
          fit_learned_shared, apply_learned, "3 + 1 per class"),
    Merge("learned_class", "(c) logistic on [z_whole, max z_crop, mean z_crop], per class", fit_learned_class,
          apply_learned, "4 per class"),
    Merge("top2_mean", "(d) mean of the two highest views", fit_none, apply_top2_mean),
    Merge("logit_mean", "(e) sigmoid of the mean of the six views' logits (added after seeing the learned"
          " weights on the FIT set: is a fixed mean as good?)", fit_none, apply_logit_mean),
)


# ---------------------------------------------------------------------------------------------
# Thresholds and metrics


def _best_f1(y: np.ndarray, s: np.ndarray) -> float:
    """The score threshold that maximises F1 of `s >= t` (as metrics.best_f1_thresholds, unclipped:
    a raw max score's best threshold can lie above 0.99)."""
    from sklearn.metrics import precision_recall_curve

    p, r, t = precision_recall_curve(y >= 0.5, s)
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    return float(t[int(np.argmax(f1))])


def choose_thresholds(y: np.ndarray, s: np.ndarray, mask: np.ndarray,
                      min_positives: int = MIN_POSITIVES) -> tuple[np.ndarray, np.ndarray]:
    """Per class the max-F1 threshold on (y, s) over its known rows, for the classes with at least
    `min_positives` known positives; the others get one threshold, the max-F1 threshold of all
    those classes' known entries pooled. Returns (thresholds (K,), per-class bool (K,))."""
    own = ((y >= 0.5) & mask).sum(axis=0) >= max(1, min_positives)
    t = np.full(y.shape[1], 0.5)
    if own.any():
        m = mask[:, own]
        t[:] = _best_f1(y[:, own][m], s[:, own][m])
    for k in np.flatnonzero(own):
        t[k] = _best_f1(y[mask[:, k], k], s[mask[:, k], k])
    return t, own


def merge_metrics(y: np.ndarray, s: np.ndarray, mask: np.ndarray, thresholds: np.ndarray,
                  names: Sequence[str]) -> dict[str, Any]:
    """mAP and per-class AP (known rows), micro P/R/F1 of `s >= thresholds` and the share of
    label-free rows given a label, on the columns of `names` (y, s, mask already cut to them)."""
    from training.eval import metrics as M

    pred = s >= thresholds
    ap = M.per_class_ap(y, s, names, mask)
    pr = M.micro_pr(y, pred, mask)
    return {"mAP": M.mean_ap(ap), "ap": ap, "precision": pr["precision"], "recall": pr["recall"],
            "f1": pr["f1"], "label_free_labelled": M.share_with_label(y, pred, mask),
            "labels_per_photo": float((pred & mask).sum(axis=1).mean()) if len(pred) else float("nan")}


def bootstrap_deltas(y: np.ndarray, scores: dict[str, np.ndarray], mask: np.ndarray,
                     thresholds: dict[str, np.ndarray], names: Sequence[str], base: str = "max",
                     n: int = 200, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Paired bootstrap over the rows: per merge, the 2.5/50/97.5 percentiles of its mAP, F1 and
    label-free share minus `base`'s on the same resampled rows."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    keys = ("mAP", "f1", "label_free_labelled")
    draws: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in scores if m != base}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        yy, mm = y[idx], mask[idx]
        ref = merge_metrics(yy, scores[base][idx], mm, thresholds[base], names)
        for m in draws:
            r = merge_metrics(yy, scores[m][idx], mm, thresholds[m], names)
            for k in keys:
                draws[m][k].append(r[k] - ref[k])
    return {m: {k: [float(v) for v in np.nanpercentile(d[k], [2.5, 50, 97.5])] for k in keys}
            for m, d in draws.items()}


def merge_cost_us(merge: Merge, params: Params, k: int, number: int = 2000, repeat: int = 5) -> float:
    """Microseconds per image of `merge.apply` on one (6, k) float32 array (the best of `repeat`)."""
    p = np.random.default_rng(0).uniform(0.001, 0.999, (len(VIEW_NAMES), k)).astype(np.float32)
    times = timeit.repeat(lambda: merge.apply(params, p), number=number, repeat=repeat)
    return min(times) / number * 1e6


# ---------------------------------------------------------------------------------------------
# Sets and scores
