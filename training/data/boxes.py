"""Object boxes of a labelled photo set: the optional `boxes.csv` beside its `labels.csv`.

Columns `path,label,x0,y0,x1,y1`: the image (relative to the set's folder, as in
`labels.csv`), the object's class and its box in pixels. Adaptation revises a
crop's labels with the boxes; evaluation measures recall by object size.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.datasets import norm_class

BOXES_CSV = "boxes.csv"


def read_boxes(set_dir: Path, ids: Sequence[str], classes: Sequence[str]) -> list[list[tuple[int, np.ndarray]]]:
    """Per image (in `ids` order): (model class column, box x0,y0,x1,y1) from `boxes.csv`, if any.

    Boxes of images not in `ids` or of classes not in `classes` are left out.
    """
    out: list[list[tuple[int, np.ndarray]]] = [[] for _ in ids]
    path = Path(set_dir) / BOXES_CSV
    if not path.is_file():
        return out
    row = {p: i for i, p in enumerate(ids)}
    col = {norm_class(c): k for k, c in enumerate(classes)}
    with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" starts with a byte order mark
        for b in csv.DictReader(fh):
            i, k = row.get(b["path"]), col.get(norm_class(b["label"]))
            if i is not None and k is not None:
                out[i].append((k, np.array([float(b[c]) for c in ("x0", "y0", "x1", "y1")])))
    return out


def relative_sides(set_dir: Path, ids: Sequence[str], classes: Sequence[str]) -> list[tuple[int, int, float]]:
    """(image row, class column, relative side) of every box: the side of a square with the
    box's share of the image area, sqrt(box area / image area)."""
    from PIL import Image

    out = []
    for i, boxes in enumerate(read_boxes(set_dir, ids, classes)):
        if not boxes:
            continue
        with open(Path(set_dir) / ids[i], "rb") as img:
            w, h = Image.open(img).size
        for k, (x0, y0, x1, y1) in boxes:
            out.append((i, k, float(np.sqrt((x1 - x0) * (y1 - y0) / (w * h)))))
    return out
