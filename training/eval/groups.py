"""The group breakdown of `sixview eval`: per group of photos (a species, say), how many were
scored, the share the model gave a label, and which labels it gave most ("what does it call a fox").

A set names its groups in `groups.csv` (`path,group`) or `species.csv` (`path,species`) beside its
`labels.csv`; `path` is the image's path as the set lists it. Photos a set gives no group are left
out of the table; sets without such a file add nothing. Labels are the model's own decision on the
six views (the record's `labels`: the confident classes), over all of the model's classes.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.rule import Decisions
from training.errors import DataError
from training.eval.sets import LabelledSet

GROUP_FILES = (("groups.csv", "group"), ("species.csv", "species"))  # the first a set has is read
TOP_LABELS = 2


def _key(path: str) -> str:
    return path.strip().replace("\\", "/").removeprefix("./")


def read_groups(set_dir: str | Path) -> dict[str, str] | None:
    """Image path -> group from the set's `groups.csv` or `species.csv`; None when it has neither.

    Raises DataError for a file without a `path` column or the group column, or that cannot be read."""
    for name, column in GROUP_FILES:
        path = Path(set_dir) / name
        if not path.is_file():
            continue
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if not {"path", column} <= set(reader.fieldnames or ()):
                    raise DataError(f"{path}: expected the columns path,{column}, got "
                                    f"{','.join(reader.fieldnames or ()) or 'none'}")
                return {_key(row["path"]): (row[column] or "").strip() for row in reader
                        if row.get("path") and (row.get(column) or "").strip()}
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: cannot read ({e})") from None
    return None


def row_groups(ds: LabelledSet) -> list[str | None] | None:
    """Each row's group (None: the set names none for it); None when no set of `ds` has groups."""
    out: list[str | None] = []
    found = False
    for part in ds.parts:
        groups = read_groups(part.path)
        found = found or groups is not None
        out += [(groups or {}).get(_key(i)) for i in part.ids]
    return out if found else None


def group_table(groups: list[str | None], confident: np.ndarray, guess: np.ndarray,
                classes: list[str] | tuple[str, ...], positive: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per group: photos, the share labelled (and labelled or guessed), the top labels with the share
    of the group's photos given each and, with `positive` ((N,) bool: the photo holds one of its set's
    classes), the share of the group's photos that hold none (`label_free`); sorted by the share
    labelled, highest first."""
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            rows.setdefault(g, []).append(i)
    table = []
    for g, idx in rows.items():
        conf, n = confident[idx], len(idx)
        counts = Counter({c: int(k) for c, k in zip(classes, conf.sum(axis=0), strict=True) if k})
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_LABELS]
        table.append({"group": g, "photos": n, "labelled": float(conf.any(axis=1).mean()),
                      "labelled_or_guessed": float((conf | guess[idx]).any(axis=1).mean()),
                      "top_labels": [{"label": c, "photos": k, "share": k / n} for c, k in top]})
        if positive is not None:
            table[-1]["label_free"] = float(1.0 - positive[idx].mean())
    table.sort(key=lambda r: (-r["labelled"], -r["photos"], r["group"]))
    return table


def group_breakdown(ds: LabelledSet, valid: np.ndarray, decided: Decisions,
                    classes: Sequence[str]) -> list[dict[str, Any]] | None:
    """The group table of one model on `ds` from its decisions on the `valid` rows (the runtime's rule,
    tiling on; the images that failed left out); None when the set names no groups."""
    groups = row_groups(ds)
    if groups is None:
        return None
    kept = [g for g, ok in zip(groups, valid, strict=True) if ok]
    positive = ((ds.targets == 1) & ds.mask).any(axis=1)[valid]
    return group_table(kept, decided.confident, decided.guess_mask, classes, positive)
