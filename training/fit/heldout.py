"""Scoring an adaptation on its held-out photos, the six views merged by the max: the
per-epoch six-view mAP that chooses the epoch (`SixViewMAP`), the before/after figures
(`photo_report`), what adapting cost on CIFAR-10 (`cifar_forgetting`) and the run's `report.md`
(`adapt_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge.metadata import DEFAULT_THRESHOLD
from training.data.cache import load_split
from training.data.datasets import open_source
from training.data.labels import select
from training.data.photos import UNKNOWN
from training.data.tfdata import predict_arrays
from training.eval import metrics as M

HD_THRESHOLD = DEFAULT_THRESHOLD["hd"]  # the before/after F1 is measured at the HD model's default


def masked_ap(y: np.ndarray, s: np.ndarray, known: np.ndarray, names: list[str]) -> dict[str, float | None]:
    """AP per class over the rows where the class is known (None where it has no positive)."""
    return {c: M.per_class_ap(y[known[:, k], k:k + 1], s[known[:, k], k:k + 1], [c])[c]
            for k, c in enumerate(names)}


class SixViewMAP(keras.callbacks.Callback):
    """Adds `val_map` (six views, max-merged) and `val_map_whole` to each epoch's logs.

    `targets` may hold UNKNOWN: a class is scored over the rows of the sets that label it."""

    def __init__(self, views: np.ndarray, targets: np.ndarray, batch: int = 64):
        super().__init__()
        self.views, self.batch = views, batch
        self.row_known = targets != UNKNOWN
        self.known = self.row_known.any(axis=0)  # classes some held-out set labels
        self.y, self.mask = np.clip(targets[:, self.known], 0, 1), self.row_known[:, self.known]

    def scores(self, model: keras.Model) -> np.ndarray:
        """(N, 6, K) per-view scores; the views go to float32 a batch at a time (all of them at once would
        take gigabytes at HD sizes: 1,279 photos at 224 px are 4.6 GB as float32)."""
        n, step = len(self.views), self.batch * 6
        flat = self.views.reshape(n * 6, *self.views.shape[2:])
        s = [np.asarray(model.predict_on_batch(flat[i:i + step].astype(np.float32)), np.float32)
             for i in range(0, len(flat), step)]
        return np.concatenate(s).reshape(n, 6, -1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        s = self.scores(self.model)[:, :, self.known]
        names = [str(k) for k in range(self.y.shape[1])]
        logs = logs if logs is not None else {}
        logs["val_map"] = M.mean_ap(masked_ap(self.y, s.max(axis=1), self.mask, names))
        logs["val_map_whole"] = M.mean_ap(masked_ap(self.y, s[:, 0], self.mask, names))


def photo_report(model: keras.Model, cb: SixViewMAP, classes: list[str], thresholds: float) -> dict[str, Any]:
    """mAP (six views / whole), per-class AP and F1 at `thresholds` on the held-out photos
    (each class over the rows of the sets that label it)."""
    s = cb.scores(model)[:, :, cb.known]
    names = [c for c, k in zip(classes, cb.known, strict=True) if k]
    out = {}
    for tiling, sc in (("on", s.max(axis=1)), ("off", s[:, 0])):
        ap = masked_ap(cb.y, sc, cb.mask, names)
        pred, y, m = sc >= thresholds, cb.y == 1, cb.mask
        f1 = {}
        for k, c in enumerate(names):
            tp, fp, fn = (int(v) for v in ((pred & y & m)[:, k].sum(), (pred & ~y & m)[:, k].sum(),
                                             (~pred & y & m)[:, k].sum()))
            f1[c] = 2 * tp / max(2 * tp + fp + fn, 1)
        tp, fp, fn = (pred & y & m).sum(), (pred & ~y & m).sum(), (~pred & y & m).sum()
        out[f"tiling_{tiling}"] = {"mAP": M.mean_ap(ap), "ap": ap, "micro_f1": float(2 * tp / max(2 * tp + fp + fn, 1)),
                                   "f1": f1}
    return out


def adapt_report(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """Markdown: before/after on the held-out photos and on CIFAR-10 test."""
    b, a = metrics["before"], metrics["after"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# Adaptation: {config['base_run']} -> HD", "",
             f"sets: {', '.join(config['sets'])}; {config['n_train']} photos fitted, {config['n_val']} held out "
             "for selection"
             + (f", {config['n_report']} set aside for reporting (`sixview eval --report-of`)"
                if config.get("n_report") else "") + " (splits.json); "
             f"masked classes: {', '.join(c for c in config['classes'] if c not in config['known_classes']) or 'none'}",
             "", "| measure | before (Standard) | after (HD) |", "| --- | --- | --- |"]
    for t in ("on", "off"):
        lines.append(f"| val mAP, tiling {t} | {pct(b['photos'][f'tiling_{t}']['mAP'])} "
                     f"| {pct(a['photos'][f'tiling_{t}']['mAP'])} |")
    lines.append(f"| val micro F1 @{HD_THRESHOLD:.2f}, tiling on | {pct(b['photos']['tiling_on']['micro_f1'])} "
                 f"| {pct(a['photos']['tiling_on']['micro_f1'])} |")
    if "cifar10_test" in a:
        for k in ("top1", "auc"):
            lines.append(f"| CIFAR-10 test {k} | {pct(b['cifar10_test'][k])} | {pct(a['cifar10_test'][k])} |")
    lines += ["", "| class | AP before | AP after |", "| --- | --- | --- |"]
    for c, v in a["photos"]["tiling_on"]["ap"].items():
        lines.append(f"| {c} | {pct(b['photos']['tiling_on']['ap'][c])} | {pct(v)} |")
    return "\n".join(lines) + "\n"


def cifar_forgetting(metrics: dict[str, Any], cifar: str | None, cache: Path | None, classes: list[str],
                models: dict[str, keras.Model], size: tuple[int, int]) -> None:
    """CIFAR-10 test scores before and after (what adapting cost), into `metrics`, when the set is there."""
    if not (cifar and Path(cifar).exists()):
        return
    csrc = open_source(cifar, cache)
    if "test" in csrc.splits:
        csplit = load_split(csrc, "test", cache)
        sel = select(csplit.labels, csplit.classes, classes, negatives=True)
        for when, m in models.items():
            metrics[when]["cifar10_test"] = M.score(sel.targets, predict_arrays(m, csplit, sel, size), sel.known)
