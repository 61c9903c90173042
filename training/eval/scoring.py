"""Scoring ONNX models on labelled sets through the `edge` runtime.

The images go through the runtime's pipeline (`edge.pipeline.stream`: the same loader,
batches and matching as a scan), which gives every view's scores in one tiled pass;
"tiling off" is the whole-image view alone (view 0 is rendered identically either way),
so both settings come from the same pass. Every score and decision is the runtime's:
the engine's `DecisionRule` (its merge, thresholds, fallback and presence threshold),
on the whole batch at once (`DecisionRule.decide_views`).

The sets themselves (`LabelledSet`, `load_set`, held-out images) are in
`training.eval.sets`; `evaluate_role` names the images that failed.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.engine import Engine
from edge.pipeline import load_one, stream
from edge.rule import DecisionRule, Decisions
from edge.tiling import view_count
from training.data.datasets import Record
from training.errors import DataError
from training.eval import metrics as M
from training.eval.sets import LabelledSet, heldout_ids, load_set, unreadable

__all__ = ["LabelledSet", "decisions", "evaluate_role", "evaluate_scores", "heldout_ids", "load_set", "unreadable",
           "view_scores"]


def view_scores(engine: Engine, role: str, data: LabelledSet, batch: int = 8,
                workers: int = 2, errors: list[tuple[str, str]] | None = None) -> np.ndarray:
    """(N, views, K) per-view scores of `role` on every image, through the runtime's pipeline (every
    image sent to `role`; NaN rows for undecodable ones, whose (id, error) go into `errors` when given)."""
    run = lambda items: [{"": s} for s in engine.view_scores(items)[0]]  # noqa: E731
    scores, _ = scores_of(engine, role, data.records, run, [""], batch, workers, errors)
    return scores[""]


def scores_of(engine: Engine, role: str, records: Sequence[Record], run: Callable[[list], list[dict[str, np.ndarray]]],
              names: Sequence[str], batch: int = 8, workers: int = 2,
              errors: list[tuple[str, str]] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per name, (N, views, K) scores of `records`, each image loaded once by the runtime's pipeline
    (`edge.pipeline.stream`, sent to `role`) and `run(items)` giving each item its {name: (views, K)} scores;
    and which rows loaded (NaN rows for the others, whose (id, error) go into `errors` when given)."""
    k = len(engine.model(role).meta.classes)
    out = {n: np.full((len(records), view_count(engine.tiling), k), np.nan, np.float32) for n in names}
    valid = np.zeros(len(records), bool)
    load = functools.partial(load_one, read=_read, renderer=engine.renderer, routing=role)
    results = stream(enumerate(records), load, run, batch, workers)
    with contextlib.closing(results), tqdm(total=len(records), desc=role, unit="img", disable=None,
                                           leave=False) as bar:
        for loaded, per_name in results:
            i, rec = loaded.key
            if per_name is not None:
                for n, vs in per_name.items():
                    out[n][i, : len(vs)] = vs
                valid[i] = True
            elif errors is not None:
                errors.append((rec.id, loaded.error))
            bar.update(1)
    return out, valid


def _read(key: tuple[int, Record]) -> bytes | np.ndarray:
    return key[1].read()


def decisions(vs: np.ndarray, rule: DecisionRule) -> dict[str, Decisions]:
    """The runtime's decisions (`rule`, the engine's) on (N, views, K) scores, tiling on (every view)
    and off (the whole view alone, rendered identically either way)."""
    return {"on": rule.decide_views(vs), "off": rule.decide_views(vs[:, :1])}


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


def evaluate_scores(vs: np.ndarray, data: LabelledSet, rule: DecisionRule) -> dict[str, Any]:
    """Metrics for tiling on and off (`decisions`) from (N, views, K) scores, at the runtime's
    decision (`rule`); with several sets, also per set (`per_set`)."""
    valid = ~np.isnan(vs[:, 0, 0])
    cols = data.known
    names = [c for c, kn in zip(rule.classes, cols, strict=True) if kn]
    y, mask = data.targets[valid][:, cols], data.mask[valid][:, cols]
    result: dict[str, Any] = {"images": int(valid.sum()), "failed": int((~valid).sum()),
                              "presence_threshold": float(rule.presence_threshold)}
    rows = np.flatnonzero(valid)
    remap = {int(r): j for j, r in enumerate(rows)}
    col_of = {int(k): j for j, k in enumerate(np.flatnonzero(cols))}
    boxes = [(remap[i], col_of[k], side) for i, k, side in data.boxes if i in remap and data.mask[i, k]]
    parts = data.part_rows() if len(data.parts) > 1 else []
    for tiling, d in decisions(vs[valid], rule).items():
        s, conf, guess, pres = d.scores[:, cols], d.confident[:, cols], d.guess_mask[:, cols], d.presence
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
    res = evaluate_scores(vs, data, engine.rule(role))
    res.update(seconds=time.perf_counter() - t0, model=str(engine.model(role).path), merge=meta.merge,
               thresholds=meta.thresholds, provider=engine.model(role).provider,
               failed_examples=[list(e) for e in errors[:5]])
    return res, vs
