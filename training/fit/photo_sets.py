"""The photo sets of an adaptation: which photos are fitted, held out or set aside, their
model-ordered targets (UNKNOWN where a set does not label a class), balanced sampling, and
splits.json (an adaptation continued from another must keep its splits)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data.datasets import norm_class
from training.data.labels import align_labels
from training.data.photos import UNKNOWN
from training.errors import DataError, RunError


@dataclass
class PhotoSet:
    """One photo set: its decoded split, model-ordered targets (UNKNOWN where it does not label
    a class), boxes, and which of its photos are fitted, which held out (to choose the epoch) and
    which set aside for reporting only."""

    path: str
    split: Any
    targets: np.ndarray
    known: np.ndarray
    boxes: list
    fit: np.ndarray
    heldout: np.ndarray
    report: np.ndarray = field(default_factory=lambda: np.array([], int))


def split_indices(n: int, holdout: float, report: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, heldout, report) row indices of a set of `n`, each sorted: one permutation, the first
    `holdout` of it held out, the next `report` set aside, the rest fitted (with report 0, the
    split every earlier run made)."""
    order = rng.permutation(n)
    n_held = round(n * holdout)
    n_report = min(round(n * report), n - n_held)
    return (np.sort(order[n_held + n_report:]), np.sort(order[:n_held]),
            np.sort(order[n_held:n_held + n_report]))


def photo_targets(source_classes: list[str], labels: np.ndarray, model_classes: list[str],
                  ignore: list[str], unlabelled: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Model-ordered targets for a photo set, with UNKNOWN where the set does not label a class.

    A set class the model lacks is an error unless `ignore` names it; `unlabelled`
    (if given) replaces the set's declared vocabulary as the list of masked classes.
    """
    model = [norm_class(c) for c in model_classes]
    extra = [c for c in source_classes if norm_class(c) not in model and norm_class(c) not in ignore]
    if extra:
        raise DataError(f"the set labels classes the model lacks: {', '.join(extra)} "
                        "(pass --ignore-class NAME to drop them)")
    keep = [i for i, c in enumerate(source_classes) if norm_class(c) in model]
    targets, known = align_labels(labels[:, keep], model_classes, [source_classes[i] for i in keep])
    if unlabelled is not None:
        known = np.array([c not in unlabelled for c in model])
    targets[:, ~known] = UNKNOWN
    return targets, known


def balance_weights(sets: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sampling weights: every set the same share; within a set, a photo's weight is
    1/sqrt(count) of its rarest class (or of the photos with none), so rare classes are
    drawn more without the common ones vanishing."""
    w = np.zeros(len(sets))
    groups = np.unique(sets)
    for g in groups:
        rows = sets == g
        pos = targets[rows] == 1.0
        none = ~pos.any(axis=1)
        inv = 1.0 / np.sqrt(np.maximum(pos.sum(axis=0), 1))
        rw = np.where(none, 1.0 / np.sqrt(max(int(none.sum()), 1)), (pos * inv).max(axis=1))
        w[rows] = rw / rw.sum() / len(groups)
    return w


def splits_json(sets: list[PhotoSet]) -> dict[str, Any]:
    """splits.json: per set, the ids fitted, held out and set aside for reporting."""
    return {"sets": {ps.path: {"fit": [ps.split.ids[i] for i in ps.fit],
                               "heldout": [ps.split.ids[i] for i in ps.heldout],
                               "report": [ps.split.ids[i] for i in ps.report]} for ps in sets}}


def check_same_splits(run: Path, splits: dict[str, Any], classes: list[str]) -> None:
    """An adaptation continued from `run` must fit, hold out and set aside the same photos (else photos that
    chose its epoch, or are reported on, would now be fitted) and have the same classes."""
    if not (run / "splits.json").is_file():
        raise RunError(f"--init-from {run}: not an adaptation run (no splits.json)")
    if json.loads((run / "splits.json").read_text()) != splits:
        raise DataError(f"--init-from {run}: that run split its photos differently (other sets, --holdout, "
                        "--report or --seed); continuing it would fit photos it held out")
    theirs = json.loads((run / "config.json").read_text()).get("classes")
    if theirs != classes:
        raise DataError(f"--init-from {run}: its classes {theirs} are not the base run's {classes}")
