"""Scoring ONNX models on a labelled set through the `edge` runtime.

One tiled pass per engine gives every view's scores; "tiling off" is the
whole-image view alone (view 0 is rendered identically either way), so both
settings come from the same pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.decode import Decoded
from edge.engine import Engine, Prepared
from edge.errors import per_image
from edge.merge import choose, in_dtype
from edge.tiling import view_count
from training.data.boxes import relative_sides
from training.data.datasets import DataSource, Record, open_source
from training.data.labels import align_labels
from training.eval import metrics as M


@dataclass
class LabelledSet:
    """Images of one split with model-ordered targets and the known-class mask."""

    name: str
    records: list[Record]
    targets: np.ndarray  # (N, K) in model class order
    known: np.ndarray  # (K,) bool
    boxes: list[tuple[int, int, float]]  # (row, class column, relative side)


def load_set(source: DataSource, split: str, model_classes: Sequence[str], limit: int | None = None,
             unlabelled: Sequence[str] = (), only: set[str] | None = None) -> LabelledSet:
    """Read a split's records and align its labels to the model's classes by name."""
    recs = list(source.records(split))
    if only is not None:
        recs = [r for r in recs if r.id in only]
    if limit:
        recs = recs[:: max(1, len(recs) // limit)][:limit]
    set_classes = [c for c in source.classes if c not in set(unlabelled)]
    multi = np.array([[c in r.labels for c in set_classes] for r in recs], np.float32)
    targets, known = align_labels(multi.reshape(len(recs), len(set_classes)), model_classes, set_classes)
    boxes = relative_sides(Path(source.path), [r.id for r in recs], model_classes)
    return LabelledSet(f"{source.path}:{split}", recs, targets, known, boxes)


def heldout_ids(run_dir: str | Path) -> tuple[str, str, set[str]]:
    """(data, split, ids) of the images a training run held out for validation
    (recomputed with the run's own seed and split fraction)."""
    from training.data.cache import load_split
    from training.data.labels import select, split_train_val

    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    cache = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else None
    source = open_source(cfg["data"], cache)
    split = load_split(source, cfg["train_split"], cache, progress=False)
    pool = select(split.labels, split.classes, cfg["classes"], cfg["negatives"], cfg.get("limit"), cfg["seed"])
    _, val = split_train_val(pool, cfg["val_split"], cfg["seed"])
    return cfg["data"], cfg["train_split"], {split.ids[int(i)] for i in val.indices}


def _prepare(engine: Engine, role: str, rec: Record) -> Prepared:
    """One record through the engine's per-frame path, sent to `role` whatever the image's context."""
    data = rec.read()
    if isinstance(data, np.ndarray):  # pickled CIFAR: RGB pixels
        bgr = np.ascontiguousarray(data[..., ::-1])
        return engine.prepare(Decoded(bgr, bgr.shape[1], bgr.shape[0]), routing=role)
    return engine.load(data, routing=role)


def view_scores(engine: Engine, role: str, data: LabelledSet, batch: int = 8,
                workers: int = 2) -> np.ndarray:
    """(N, views, K) per-view scores of `role` on every image (NaN rows for undecodable ones)."""
    k = len(engine.model(role).meta.classes)
    out = np.full((len(data.records), view_count(engine.tiling), k), np.nan, np.float32)

    def prep(rec: Record) -> Prepared | None:
        return per_image(_prepare, engine, role, rec)[0]

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


def evaluate_scores(vs: np.ndarray, data: LabelledSet, classes: Sequence[str], thresholds: Sequence[float],
                    fallback_min: float) -> dict[str, Any]:
    """Metrics for tiling on (max over views) and off (whole view) from (N, views, K) scores."""
    valid = ~np.isnan(vs[:, 0, 0])
    known = data.known
    names = [c for c, kn in zip(classes, known, strict=True) if kn]
    y = data.targets[valid][:, known]
    th = np.asarray(thresholds, np.float32).tolist()
    result: dict[str, Any] = {"images": int(valid.sum()), "failed": int((~valid).sum())}
    rows = np.flatnonzero(valid)
    remap = {int(r): j for j, r in enumerate(rows)}
    boxes = [(remap[i], int(np.flatnonzero(known).tolist().index(k)), s) for i, k, s in data.boxes
             if i in remap and known[k]]
    for tiling, s_all in (("on", np.nanmax(vs[valid], axis=1)), ("off", vs[valid][:, 0])):
        pred_all = np.zeros_like(s_all, dtype=np.int8)
        fallback = in_dtype(fallback_min, s_all.dtype)
        for n, sc in enumerate(s_all.tolist()):
            pred_all[n, choose(sc, th, fallback)] = 1
        s, pred = s_all[:, known], pred_all[:, known]
        ap = M.per_class_ap(y, s, names)
        result[f"tiling_{tiling}"] = {
            "mAP": M.mean_ap(ap), "ap": ap, "prf": M.prf_at(y, pred, names),
            "exact_match": M.exact_match(y, pred), "top1": M.top1_accuracy(y, s),
            "recall_by_size": M.recall_by_size(boxes, pred) if boxes else None,
        }
    return result


def evaluate_role(engine: Engine, role: str, data: LabelledSet, batch: int = 8) -> tuple[dict, np.ndarray]:
    """Score one engine on a set; returns its metrics and the raw (N, views, K) view scores."""
    meta = engine.model(role).meta
    t0 = time.perf_counter()
    vs = view_scores(engine, role, data, batch)
    res = evaluate_scores(vs, data, meta.classes, meta.threshold_vector(), meta.fallback_min_score)
    res.update(seconds=time.perf_counter() - t0, model=str(engine.model(role).path),
               thresholds=meta.thresholds, provider=engine.model(role).provider)
    return res, vs
