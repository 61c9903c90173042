"""Scoring ONNX models on labelled sets through the `edge` runtime.

One tiled pass per engine gives every view's scores; "tiling off" is the
whole-image view alone (view 0 is rendered identically either way), so both
settings come from the same pass. The views are merged by the model's own merge
(`edge.merge.merged_scores` of `meta.merge`, as the runtime does: tiling on, the six
views; off, view 0 alone). Every decision metric is at the model's own decision
(`decision.decide_rows`: its thresholds, fallback and presence threshold).

The sets themselves (`LabelledSet`, `load_set`, held-out images) are in
`training.eval.sets`; `evaluate_role` names the images that failed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.decode import Decoded
from edge.engine import Engine, Prepared
from edge.errors import per_image
from edge.merge import merged_scores
from edge.tiling import view_count
from training.data.datasets import Record
from training.errors import DataError
from training.eval import metrics as M
from training.eval.decision import decide_rows
from training.eval.sets import LabelledSet, heldout_ids, load_set, unreadable

__all__ = ["LabelledSet", "evaluate_role", "evaluate_scores", "heldout_ids", "load_set", "unreadable", "view_scores"]


def _prepare(engine: Engine, role: str, rec: Record) -> Prepared:
    """One record through the engine's per-frame path, sent to `role` whatever the image's context."""
    data = rec.read()
    if isinstance(data, np.ndarray):  # pickled CIFAR: RGB pixels
        bgr = np.ascontiguousarray(data[..., ::-1])
        return engine.prepare(Decoded(bgr, bgr.shape[1], bgr.shape[0]), routing=role)
    return engine.load(data, routing=role)


def view_scores(engine: Engine, role: str, data: LabelledSet, batch: int = 8,
                workers: int = 2, errors: list[tuple[str, str]] | None = None) -> np.ndarray:
    """(N, views, K) per-view scores of `role` on every image (NaN rows for undecodable ones,
    whose (id, error) go into `errors` when given)."""
    k = len(engine.model(role).meta.classes)
    out = np.full((len(data.records), view_count(engine.tiling), k), np.nan, np.float32)

    def prep(rec: Record) -> Prepared | None:
        prepared, err = per_image(_prepare, engine, role, rec)
        if err is not None and errors is not None:
            errors.append((rec.id, err))  # list.append is atomic: safe from the pool's threads
        return prepared

    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(out), desc=role, unit="img",
                                                     disable=None, leave=False) as bar:
        for start in range(0, len(out), batch):
            chunk = list(pool.map(prep, data.records[start:start + batch]))
            ok = [j for j, p in enumerate(chunk) if p is not None]
            if ok:
                scores, _ = engine.view_scores([chunk[j] for j in ok])
                for j, s in zip(ok, scores, strict=True):
                    out[start + j, : len(s)] = s
            bar.update(len(chunk))
    return out


def summarize(y: np.ndarray, s: np.ndarray, known: np.ndarray, names: Sequence[str], confident: np.ndarray,
              guess: np.ndarray, pres: np.ndarray, boxes: list | None = None) -> dict[str, Any]:
    """Every metric of one tiling setting on (N, K') columns: AP, P/R/F1, exact match and recall by
    size at the confident labels (the record's `labels`), top-1, and the metrics of trust."""
    ap = M.per_class_ap(y, s, names, known)
    out = {"mAP": M.mean_ap(ap), "ap": ap, "prf": M.prf_at(y, confident, names, known),
           "exact_match": M.exact_match(y, confident, known), "top1": M.top1_accuracy(y, s, known),
           "decision": M.trust(y, known, confident, guess, pres)}
    if boxes is not None:
        out["recall_by_size"] = M.recall_by_size(boxes, confident) if boxes else None
    return out


def evaluate_scores(vs: np.ndarray, data: LabelledSet, classes: Sequence[str], thresholds: Sequence[float],
                    fallback_min: float, presence_threshold: float = 0.0,
                    merge: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics for tiling on (the views merged by `merge`, None: max) and off (the whole view
    alone, through the same merge) from (N, views, K) scores, at the model's decision; with
    several sets, also per set (`per_set`)."""
    valid = ~np.isnan(vs[:, 0, 0])
    cols = data.known
    names = [c for c, kn in zip(classes, cols, strict=True) if kn]
    y, mask = data.targets[valid][:, cols], data.mask[valid][:, cols]
    result: dict[str, Any] = {"images": int(valid.sum()), "failed": int((~valid).sum()),
                              "presence_threshold": float(presence_threshold)}
    rows = np.flatnonzero(valid)
    remap = {int(r): j for j, r in enumerate(rows)}
    col_of = {int(k): j for j, k in enumerate(np.flatnonzero(cols))}
    full_mask = data.mask
    boxes = [(remap[i], col_of[k], side) for i, k, side in data.boxes if i in remap and full_mask[i, k]]
    parts = data.part_rows() if len(data.parts) > 1 else []
    for tiling, s_all in (("on", merged_scores(vs[valid], merge, classes)),
                          ("off", merged_scores(vs[valid][:, :1], merge, classes))):
        conf, guess, pres = decide_rows(s_all, thresholds, fallback_min, presence_threshold)
        s, conf, guess = s_all[:, cols], conf[:, cols], guess[:, cols]
        res = summarize(y, s, mask, names, conf, guess, pres, boxes)
        if parts:
            res["per_set"] = {}
            for part, sl in zip(data.parts, parts, strict=True):
                r = valid[sl]
                sel = slice(int(valid[:sl.start].sum()), int(valid[:sl.start].sum() + r.sum()))
                one = summarize(y[sel], s[sel], mask[sel], names, conf[sel], guess[sel], pres[sel])
                res["per_set"][part.name] = {"images": int(r.sum()), "mAP": one["mAP"], "ap": one["ap"],
                                             "exact_match": one["exact_match"], "decision": one["decision"],
                                             "masked": [c for c, kn in zip(names, mask[sel].any(axis=0), strict=True)
                                                        if not kn] if r.any() else list(names)}
        result[f"tiling_{tiling}"] = res
    return result


def evaluate_role(engine: Engine, role: str, data: LabelledSet, batch: int = 8) -> tuple[dict, np.ndarray]:
    """Score one engine on a set; returns its metrics (with `failed_examples`: up to five
    (id, error) of the images that failed) and the raw (N, views, K) view scores.

    Raises DataError when no image could be scored."""
    meta = engine.model(role).meta
    t0 = time.perf_counter()
    errors: list[tuple[str, str]] = []
    vs = view_scores(engine, role, data, batch, errors=errors)
    order = {r.id: i for i, r in enumerate(data.records)}
    errors.sort(key=lambda e: order.get(e[0], 0))
    if np.isnan(vs[:, 0, 0]).all():
        raise DataError(f"no images to score: all {len(vs)} images failed "
                        f"(e.g. {', '.join(f'{i}: {e}' for i, e in errors[:3])})")
    res = evaluate_scores(vs, data, meta.classes, meta.threshold_vector(), meta.fallback_min_score,
                          meta.presence_threshold, meta.merge)
    res.update(seconds=time.perf_counter() - t0, model=str(engine.model(role).path), merge=meta.merge,
               thresholds=meta.thresholds, provider=engine.model(role).provider,
               failed_examples=[list(e) for e in errors[:5]])
    return res, vs
