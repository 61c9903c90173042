"""Whether a faster recipe may replace the shipped one, judged on photos that chose nothing.

A recipe that names the shipped one in `faster_than` (`recipe_book.RECIPES`) is compared with it by
`training.openworld.table` (every set's report part and voc07_val, before = the shipped recipe's
models, after = the faster one's). The rule, fixed before any comparison is read: on every source,
six-view mAP at most `MAX_MAP_DROP` below, and no trust figure worse (the share of label-free photos
given a label no higher, precision and recall no lower). `make models` ships the faster recipe only
when nothing misses; otherwise it says what missed and by how much.
"""

from __future__ import annotations

from typing import Any

from training.eval.report import pct

MAX_MAP_DROP = 0.005  # 0.5 point of mAP
TRUST = (("label_free_labelled", "label-free photos labelled", -1), ("precision", "precision", 1),
         ("recall", "recall", 1))  # (key, name, +1: higher is better / -1: lower is better)


def misses(table: dict[str, Any]) -> list[str]:
    """What the `after` side of a `training.openworld.table` comparison misses, one line per figure
    (empty: it may ship). A figure either side lacks (no label-free photos in a set) is not judged."""
    out = []
    for source, pair in table["sources"].items():
        before, after = pair["before"], pair["after"]
        if before.get("mAP") is not None and after.get("mAP") is not None:
            drop = before["mAP"] - after["mAP"]
            if drop > MAX_MAP_DROP + 1e-12:
                out.append(f"{source}: mAP {pct(before['mAP'])} -> {pct(after['mAP'])} "
                           f"({100 * (drop - MAX_MAP_DROP):.1f} point past the {100 * MAX_MAP_DROP:g} allowed)")
        for key, name, sign in TRUST:
            b, a = before.get(key), after.get(key)
            if b is not None and a is not None and sign * (a - b) < -1e-12:
                out.append(f"{source}: {name} {pct(b)} -> {pct(a)}")
    return out
