"""The runtime's decision on rows of merged scores, and the calibration of thresholds on them.

`decide_rows` is the runtime's rule (`edge.rule.DecisionRule`) on rows of merged
scores, for callers that hold thresholds rather than a model (calibration, operating points).

Calibration (`calibrate`), on the rows of the evaluated set(s), tiling on, merged by the
merge the calibrated model will use (the model's own, or with `--fit-merge` the logit_linear
merge fitted on the same rows first, `merge_fit`):
1. per class, the threshold maximising F1 over the rows where the class is known
   (`metrics.best_f1_thresholds`; a class with no positive keeps its threshold),
   rounded down to 4 decimals;
2. then, with those thresholds, the presence threshold (`presence_threshold`):
   candidates are 0 and the midpoints between consecutive distinct presence values
   of the rows; an image whose presence is below it gets no label and no guess. The
   rule: the candidate with the best micro F1 of confident-or-guess decisions among
   those whose micro recall (confident-or-guess) is at most `RECALL_TOLERANCE` below
   the recall without a presence threshold; ties go to the smallest threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.rule import DecisionRule
from training.eval import metrics as M

RECALL_TOLERANCE = 0.01
PRESENCE_RULE = (f"presence threshold: best micro F1 (confident or guess) among the thresholds that cost at most "
                 f"{RECALL_TOLERANCE:g} micro recall (confident or guess), the smallest on a tie; candidates are 0 "
                 "and the midpoints between the rows' presence values")
CLASS_RULE = "per-class max F1 over the rows where the class is known"


def decide_rows(s: np.ndarray, thresholds: Sequence[float], fallback_min: float,
                presence_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runtime's rule (`edge.rule.DecisionRule.decide_merged`) made of these settings, on each row
    of merged scores `s` (N, K): confident (N, K) bool, guess (N, K) bool (at most one per row, only
    when none is confident) and presence (N,). A row whose presence is below `presence_threshold`
    has neither."""
    rule = DecisionRule(tuple(map(str, range(s.shape[1]))), tuple(thresholds), fallback_min, presence_threshold)
    d = rule.decide_merged(s)
    return d.confident, d.guess_mask, d.presence


def presence_threshold(y: np.ndarray, known: np.ndarray, said: np.ndarray, pres: np.ndarray,
                       tolerance: float = RECALL_TOLERANCE) -> float:
    """The presence threshold by the rule above: `y`, `known` (N, K) targets and known mask,
    `said` (N, K) the confident-or-guess decisions without a presence threshold, `pres` (N,).
    0.0 when no row is labelled (or no presence is finite)."""
    ok = ~np.isnan(pres)
    y, m, said, pres = (np.asarray(y)[ok] >= 0.5), np.asarray(known, bool)[ok], np.asarray(said, bool)[ok], pres[ok]
    positives = int((y & m).sum())
    if not positives:
        return 0.0
    order = np.argsort(pres, kind="stable")
    p = pres[order]
    tp = np.concatenate([[0], np.cumsum((y & said & m).sum(axis=1)[order])])  # removed by gating the first j rows
    fp = np.concatenate([[0], np.cumsum((~y & said & m).sum(axis=1)[order])])
    cuts = np.concatenate([[0], np.flatnonzero(p[1:] > p[:-1]) + 1])  # gate rows [0, j): j where presence rises
    t_p, t_f = tp[-1] - tp[cuts], fp[-1] - fp[cuts]
    recall = t_p / positives
    f1 = 2 * t_p / np.maximum(2 * t_p + t_f + (positives - t_p), 1)
    allowed = recall >= recall[0] - tolerance - 1e-12
    best = int(np.flatnonzero(allowed & (f1 >= f1[allowed].max() - 1e-12))[0])
    j = int(cuts[best])
    if j == 0:
        return 0.0
    lo, hi = float(p[j - 1]), float(p[j])
    t = (lo + hi) / 2
    r = round(t, 6)
    return r if lo < r <= hi else t


def calibrate(y: np.ndarray, known: np.ndarray, s: np.ndarray, classes: Sequence[str],
              thresholds: dict[str, float], fallback_min: float, presence_before: float = 0.0,
              s_before: np.ndarray | None = None) -> dict[str, Any]:
    """Per-class thresholds, then the presence threshold, chosen on the rows (`y`, `known`, merged
    scores `s`, all (N, K) in model class order); with the decision metrics (`metrics.trust`)
    before (the model as it was: its thresholds and `presence_before` on `s_before`, its own
    merge's scores when the merge changes; default `s`), with the new class thresholds alone
    (no presence threshold), and with both."""
    cols = np.asarray(known, bool).any(axis=0)
    names = [c for c, kn in zip(classes, cols, strict=True) if kn]
    default = [thresholds[c] for c in names]
    best = M.best_f1_thresholds(y[:, cols], s[:, cols], default, known[:, cols])
    # 4 decimals, as the model files hold them, rounded down: rounding up could drop the positive at the threshold
    th = {c: math.floor(round(float(t) * 1e4, 6)) / 1e4 for c, t in zip(names, best, strict=True)}
    new = [th.get(c, thresholds[c]) for c in classes]
    yk, mk = y[:, cols], known[:, cols]

    def measured(vector: Sequence[float], pt: float, rows: np.ndarray = s) -> dict[str, Any]:
        conf, guess, pres = decide_rows(rows, vector, fallback_min, pt)
        return M.trust(yk, mk, conf[:, cols], guess[:, cols], pres)

    conf, guess, pres = decide_rows(s, new, fallback_min)
    pt = presence_threshold(yk, mk, (conf | guess)[:, cols], pres)
    return {"thresholds": th, "presence_threshold": pt, "rule": f"{CLASS_RULE}; {PRESENCE_RULE}",
            "images": int(len(s)),
            "before": measured([thresholds[c] for c in classes], presence_before, s if s_before is None else s_before),
            "class_thresholds": measured(new, 0.0), "after": measured(new, pt)}
