"""Real-photo inputs for adaptation: crops at the six-view scales, box-aware labels.

The runtime shows the model the whole photo and 60% corner/centre views,
resized with OpenCV; training shows it the same kinds of crops, resized the
same way. When the set has boxes (`boxes.csv`, read by `training.data.boxes`), a
crop's labels follow what it really contains: a class is present when at least
`VISIBLE` of one of its boxes is inside the crop, unknown (masked) when only a
sliver is, absent otherwise.
Targets use -1 for "unknown", which `masked_bce` leaves out of the loss.

Classes the set does not label at all get no photo evidence either way; left
masked, their scores drift freely while the shared features move (an HD model
adapted on VOC called 113 of 669 voc07_val photos "frog"). With a `teacher`
(the Standard model), those columns are distilled instead: their targets are
the teacher's scores for the same crop (learning without forgetting).
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np

from edge.preprocess import render_views
from edge.tiling import view_boxes
from training.data.cache import CachedSplit

UNKNOWN = -1.0
VISIBLE = 0.5  # fraction of a box inside a crop for its class to count as present


def crop_targets(base: np.ndarray, boxes: list[tuple[int, np.ndarray]], crop: tuple[int, int, int, int],
                 whole: bool) -> np.ndarray:
    """Targets of a crop (x0, y0, x1, y1): the image's targets, revised by its boxes."""
    t = base.copy()
    if whole or not boxes:
        return t
    x0, y0, x1, y1 = crop
    best: dict[int, float] = {}
    for k, (bx0, by0, bx1, by1) in boxes:
        area = max(bx1 - bx0, 1e-6) * max(by1 - by0, 1e-6)
        inter = max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))
        best[k] = max(best.get(k, 0.0), inter / area)
    for k, vis in best.items():
        if t[k] == UNKNOWN:
            continue
        t[k] = 1.0 if vis >= VISIBLE else (UNKNOWN if vis > 0 else 0.0)
    return t


class PhotoCrops(keras.utils.PyDataset):
    """Training batches: a random whole photo or view-sized crop, random flip, resized to the input.

    `sources` is one split or a list of them (several photo sets); `rows` then holds
    (source, image) pairs, one per target row, and `boxes` one list per source.
    `unlabelled` marks the classes to distil from the teacher: (classes,) for every
    row or (rows, classes) when each set labels its own classes. With `weights`,
    every epoch draws len(rows) rows with replacement in proportion to them
    (balanced sampling); without, it is a permutation.
    """

    def __init__(self, sources, rows: np.ndarray, targets: np.ndarray, boxes, input_size: tuple[int, int],
                 batch_size: int, view_fraction: float = 0.6, seed: int = 0, teacher: keras.Model | None = None,
                 unlabelled: np.ndarray | None = None, weights: np.ndarray | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        if not isinstance(sources, list | tuple):
            sources, boxes = [sources], [boxes]
        rows = np.asarray(rows)
        self.sources, self.boxes, self.targets = list(sources), list(boxes), targets
        self.rows = rows if rows.ndim == 2 else np.stack([np.zeros_like(rows), rows], axis=1)
        self.teacher = teacher
        self.unlabelled = None if unlabelled is None else np.broadcast_to(unlabelled, targets.shape)
        self.size, self.batch_size, self.fraction = input_size, batch_size, view_fraction
        self.rng = np.random.default_rng(seed)
        self.p = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def on_epoch_end(self) -> None:
        n = len(self.rows)
        self.order = self.rng.permutation(n) if self.p is None else self.rng.choice(n, n, p=self.p)

    def __getitem__(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        pick = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        h, w = self.size
        x = np.empty((len(pick), h, w, 3), np.float32)
        y = np.empty((len(pick), self.targets.shape[1]), np.float32)
        for n, j in enumerate(pick):
            src, i = (int(v) for v in self.rows[j])
            img = self.sources[src].image(i)
            ih, iw = img.shape[:2]
            whole = self.rng.random() < 1 / 3
            scale = 1.0 if whole else self.rng.uniform(self.fraction - 0.1, self.fraction + 0.15)
            cw, ch = max(1, round(iw * scale)), max(1, round(ih * scale))
            cx, cy = int(self.rng.integers(0, iw - cw + 1)), int(self.rng.integers(0, ih - ch + 1))
            crop = img[cy:cy + ch, cx:cx + cw]
            interp = cv2.INTER_AREA if cw >= w and ch >= h else cv2.INTER_CUBIC
            out = cv2.resize(crop, (w, h), interpolation=interp)
            if self.rng.random() < 0.5:
                out = out[:, ::-1]
            x[n] = out
            y[n] = crop_targets(self.targets[j], self.boxes[src][i], (cx, cy, cx + cw, cy + ch), whole)
        if self.teacher is not None and self.unlabelled is not None:
            mask = self.unlabelled[pick]
            if mask.any():
                soft = np.asarray(self.teacher(x, training=False), np.float32)
                y[mask] = soft[mask]
        return x, y


def six_views(split: CachedSplit, rows: np.ndarray, input_size: tuple[int, int],
              view_fraction: float = 0.6) -> np.ndarray:
    """(N, 6, H, W, 3) uint8: every photo's six views rendered exactly as the runtime does."""
    out = np.empty((len(rows), 6, *input_size, 3), np.uint8)
    for n, i in enumerate(rows):
        img = np.asarray(split.image(int(i)))
        render_views(img, view_boxes(img.shape[1], img.shape[0], view_fraction), input_size, out[n])
    return out


def masked_bce(y_true, y_pred):
    """Binary cross-entropy over the known targets only (targets of -1 are unknown)."""
    from keras import ops

    mask = ops.cast(y_true >= 0, "float32")
    y = ops.clip(y_true, 0.0, 1.0)
    p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
    bce = -(y * ops.log(p) + (1 - y) * ops.log(1 - p))
    return ops.sum(bce * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)
