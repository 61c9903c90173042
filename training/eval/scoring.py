"""Scoring ONNX models on a labelled set through the `edge` runtime.

One tiled pass per engine gives every view's scores; "tiling off" is the
whole-image view alone (view 0 is rendered identically either way), so both
settings come from the same pass.

Nothing is dropped silently: `load_set` names the listed files that are missing
or unreadable and the label names that are not classes of the set, and
`evaluate_role` the images that failed; the command decides what is an error.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
from training.data.labels import align_labels, unknown_labels
from training.errors import DataError
from training.eval import metrics as M


@dataclass
class LabelledSet:
    """Images of one split with model-ordered targets and the known-class mask.

    `records` are the images to score: listed ones that are missing or unreadable are
    left out and named in `missing` (id, reason) out of `listed`; `unknown` maps each
    label name that is not a class of the set (of the model, when the set declares no
    class list) to the ids carrying it: such labels are not targets.
    """

    name: str
    records: list[Record]
    targets: np.ndarray  # (N, K) in model class order
    known: np.ndarray  # (K,) bool
    boxes: list[tuple[int, int, float]]  # (row, class column, relative side)
    listed: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    unknown: dict[str, list[str]] = field(default_factory=dict)


def unreadable(path: Path) -> str | None:
    """Why a listed file cannot be read (without opening it: no named pipe can block), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot read: permission denied"
    return None


def load_set(source: DataSource, split: str, model_classes: Sequence[str], limit: int | None = None,
             unlabelled: Sequence[str] = (), only: set[str] | None = None) -> LabelledSet:
    """Read a split's records and align its labels to the model's classes by name.

    Raises DataError when nothing is left to score (no rows, none held out, all missing)."""
    recs = list(source.records(split))
    where = f"{source.path} (split {split})"
    if not recs:
        raise DataError(f"no images to score: {where} lists none")
    if only is not None:
        recs = [r for r in recs if r.id in only]
        if not recs:
            raise DataError(f"no images to score: none of the {len(only)} held-out images is in {where}")
    listed = len(recs)
    missing = [(r.id, why) for r in recs if r.path is not None and (why := unreadable(r.path))]
    if missing:
        bad = {rid for rid, _ in missing}
        recs = [r for r in recs if r.id not in bad]
        if not recs:
            raise DataError(f"no images to score: all {listed} images listed in {where} are missing or "
                            f"unreadable (e.g. {', '.join(f'{i}: {w}' for i, w in missing[:3])})")
    vocabulary = source.classes if source.declared else model_classes
    unknown = unknown_labels(((r.id, r.labels) for r in recs), set(vocabulary) | set(unlabelled))
    if limit:
        recs = recs[:: max(1, len(recs) // limit)][:limit]
    set_classes = [c for c in source.classes if c not in set(unlabelled)]
    multi = np.array([[c in r.labels for c in set_classes] for r in recs], np.float32)
    targets, known = align_labels(multi.reshape(len(recs), len(set_classes)), model_classes, set_classes)
    if not known.any():
        raise DataError(f"no classes to score: {where} labels {', '.join(set_classes) or 'none'}, "
                        f"the model has {', '.join(model_classes)}")
    boxes = _box_sides(Path(source.path), [r.id for r in recs], model_classes)
    return LabelledSet(f"{source.path}:{split}", recs, targets, known, boxes, listed, missing, unknown)


def _box_sides(root: Path, ids: list[str], classes: Sequence[str]) -> list[tuple[int, int, float]]:
    """`relative_sides`, skipping the boxes of an image whose size cannot be read (it fails when scored)."""
    try:
        return relative_sides(root, ids, classes)
    except Exception:  # noqa: BLE001 (one image's problem: find it, keep the others' boxes)
        out = []
        for i, rid in enumerate(ids):
            try:
                out += [(i, k, side) for _, k, side in relative_sides(root, [rid], classes)]
            except Exception:  # noqa: BLE001, S112
                continue
        return out


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
    res = evaluate_scores(vs, data, meta.classes, meta.threshold_vector(), meta.fallback_min_score)
    res.update(seconds=time.perf_counter() - t0, model=str(engine.model(role).path),
               thresholds=meta.thresholds, provider=engine.model(role).provider,
               failed_examples=[list(e) for e in errors[:5]])
    return res, vs
