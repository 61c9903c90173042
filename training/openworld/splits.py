"""The photo splits of the open-world head: the HD adaptation's own, extended to new sets.

`sixview adapt` split each of its sets with one seeded generator, in the order given
(fit / held out / report; `training.fit.adapt.split_indices`). The head is fitted on
the HD model's frozen features, so a photo its adaptation fitted must never be held out
or reported on here: the adaptation's sets are split exactly as it split them (same
seed, same order, same fractions), and sets it never saw are split after them, from the
same generator, with their own fractions. `splits.json` lists the result in the format
`sixview eval --heldout-of/--report-of` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data.cache import load_split
from training.data.datasets import open_source
from training.eval.sets import ids_sha256
from training.fit.adapt import split_indices


def make_splits(sets: list[tuple[str, float, float]], seed: int = 0, cache: Path | None = None) -> dict:
    """{"sets": {resolved path: {"fit", "heldout", "report": [ids]}}} for (path, holdout, report) in order,
    drawn as `sixview adapt` draws them."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, holdout, report in sets:
        src = open_source(path, cache)
        ids = load_split(src, src.splits[0], cache).ids
        fit, held, aside = split_indices(len(ids), holdout, report, rng)
        out[str(Path(path).resolve())] = {"fit": [ids[i] for i in fit], "heldout": [ids[i] for i in held],
                                          "report": [ids[i] for i in aside]}
    return {"sets": out}


def heldout_digests(provenance: dict) -> list[str]:
    """The ids digests of the held-out photos a calibrated HD model was calibrated on (its provenance's
    `calibration.sets`, written by `sixview eval --calibrate`)."""
    return [s["ids_sha256"] for s in provenance.get("calibration", {}).get("sets", []) if s.get("heldout")]


def check_reproduced(splits: dict, digests: list[str]) -> None:
    """Raise if the splits' held-out parts are not the ones the model was calibrated on (`digests`)."""
    ours = {ids_sha256(s["heldout"]) for s in splits["sets"].values()}
    missing = [d for d in digests if d not in ours]
    if missing:
        raise ValueError(f"the HD model's held-out photos ({len(missing)} set(s)) are not reproduced by these "
                         "splits: its adaptation used other sets, order, seed or fractions")


def write_splits(splits: dict, out: Path) -> Path:
    """`out/splits.json`, as an adaptation run folder holds it."""
    from edge.atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "splits.json") as fh:
        fh.write(json.dumps(splits))
    return out / "splits.json"
