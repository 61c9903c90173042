"""Class alignment and sample selection: model class order vs a set's order.

A set's labels are multi-hot over its own classes; a model has its own ordered
class list. `align_classes` maps one onto the other by name; model classes the
set never labels are *unknown* there (masked, not negatives: e.g. VOC has no
truck, so a truck in a VOC photo is unlabelled, not absent).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.data.datasets import norm_class
from training.errors import DataError


def parse_classes(text: str | Sequence[str] | None) -> list[str] | None:
    """`"dog,automobile"` (or a list) -> normalised names in that order; None/empty -> None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [norm_class(x) for x in items if x.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"--classes lists a class twice: {','.join(names)}")
    return names or None


def check_classes(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Return `requested` if every name is in `available`, else raise DataError."""
    missing = [c for c in requested if c not in available]
    if missing:
        raise DataError(f"classes not in the data set: {', '.join(missing)} "
                        f"(it has: {', '.join(available)})")
    return list(requested)


def unknown_labels(rows: Iterable[tuple[str, Sequence[str]]], vocabulary: Collection[str]) -> dict[str, list[str]]:
    """Label names outside `vocabulary` -> ids of the rows that carry them (first-seen order)."""
    out: dict[str, list[str]] = {}
    for rid, labels in rows:
        for c in dict.fromkeys(labels):
            if c not in vocabulary:
                out.setdefault(c, []).append(rid)
    return out


def align_classes(model_classes: Sequence[str],
                  set_classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per model class: its column in the set (-1 if absent) and whether it is known."""
    pos = {norm_class(c): i for i, c in enumerate(set_classes)}
    index = np.array([pos.get(norm_class(c), -1) for c in model_classes], dtype=np.int64)
    return index, index >= 0


def align_labels(labels: np.ndarray, model_classes: Sequence[str],
                 set_classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Set-ordered multi-hot (N, C_set) -> model-ordered float32 (N, K) targets and known mask.

    Unknown classes get 0 in the targets; use the mask to leave them out of metrics.
    """
    index, known = align_classes(model_classes, set_classes)
    labels = np.asarray(labels)
    targets = np.zeros((labels.shape[0], len(model_classes)), np.float32)
    targets[:, known] = labels[:, index[known]]
    return targets, known


@dataclass
class Selection:
    """Rows of a cached split picked for use, with model-ordered targets."""

    indices: np.ndarray
    targets: np.ndarray
    known: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, rows: np.ndarray) -> Selection:
        """The sub-selection at positions `rows`."""
        return Selection(self.indices[rows], self.targets[rows], self.known)


def stratified_order(targets: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded permutation that interleaves label combinations round-robin.

    Any prefix is then roughly class-balanced, so `order[:n]` is a fair subset.
    """
    rng = np.random.default_rng(seed)
    keys = [t.tobytes() for t in (np.asarray(targets) > 0.5)]
    groups: dict[bytes, list[int]] = {}
    for i in rng.permutation(len(keys)):
        groups.setdefault(keys[i], []).append(int(i))
    lists = sorted(groups.values(), key=len, reverse=True)
    # position j of a group of size m goes to slot (j + offset) / m: even spread
    slots = [((j + rng.random()) / len(g), i) for g in lists for j, i in enumerate(g)]
    return np.array([i for _, i in sorted(slots)], dtype=np.int64)


def select(labels: np.ndarray, set_classes: Sequence[str], model_classes: Sequence[str],
           negatives: bool = True, limit: int | None = None, seed: int = 0) -> Selection:
    """Pick rows for `model_classes`: images with none of them are kept as all-zero
    targets when `negatives`, else dropped; `limit` keeps a stratified subset."""
    targets, known = align_labels(labels, model_classes, set_classes)
    rows = np.arange(len(targets))
    if not negatives:
        rows = rows[targets.sum(axis=1) > 0]
    sel = Selection(rows, targets[rows], known)
    if limit is not None and limit < len(sel):
        sel = sel.take(np.sort(stratified_order(sel.targets, seed)[:limit]))
    return sel


def split_train_val(sel: Selection, val_fraction: float,
                    seed: int = 0) -> tuple[Selection, Selection]:
    """Split a selection into (train, val), stratified by label combination."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_fraction}")
    order = stratified_order(sel.targets, seed + 1)
    n_val = int(round(len(sel) * val_fraction))
    if val_fraction > 0 and len(sel) > 1:
        n_val = min(max(n_val, 1), len(sel) - 1)
    return sel.take(np.sort(order[n_val:])), sel.take(np.sort(order[:n_val]))
