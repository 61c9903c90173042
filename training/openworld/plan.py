"""Which photos the open-world head sees: the rows of each set it fits on and is checked on.

The head is fitted on a set's fit part (a share of it where a set is large and uniform),
checked on its held-out part, and never sees its report part. The ImageNet teacher runs on
one fit photo in `teach_every` (its 1,000-way output is what is distilled; the HD features
it is distilled onto are computed for every fitted photo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.cache import load_split
from training.data.datasets import open_source


@dataclass(frozen=True)
class SetPlan:
    """One set's split fractions and how much of its fit part the head uses."""

    path: str
    holdout: float = 0.2
    report: float = 0.1
    fit_share: float = 1.0


def rows_of(path: str, ids: list[str], cache: Path | None = None) -> np.ndarray:
    """Row indices (in the cached split's order) of image `ids` of a set."""
    src = open_source(path, cache)
    index = {i: n for n, i in enumerate(load_split(src, src.splits[0], cache, progress=False).ids)}
    return np.array(sorted(index[i] for i in ids), np.int64)


def parts(plans: list[SetPlan], splits: dict, teach_every: int, seed: int = 0,
          cache: Path | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """({set: (rows, teacher mask)} of the fitted and held-out photos, {set: held-out mask over rows})."""
    rng = np.random.default_rng(seed)
    out, held_mask = {}, {}
    for plan in plans:
        key = str(Path(plan.path).resolve())
        fit = rows_of(plan.path, splits["sets"][key]["fit"], cache)
        if plan.fit_share < 1.0:
            fit = np.sort(rng.choice(fit, round(len(fit) * plan.fit_share), replace=False))
        held = rows_of(plan.path, splits["sets"][key]["heldout"], cache)
        teach = np.zeros(len(fit) + len(held), bool)
        teach[:len(fit)][::teach_every] = True
        out[plan.path] = (np.concatenate([fit, held]), teach)
        held_mask[plan.path] = np.r_[np.zeros(len(fit), bool), np.ones(len(held), bool)]
    return out, held_mask
