"""The labelled sets `sixview eval` scores: one split of a set aligned to a model's classes,
several sets joined with a per-row known mask, and the images a run held out (or, an adaptation
run, set aside for reporting only).

Nothing is dropped silently: `load_set` names the listed files that are missing
or unreadable (and held-out ids the set no longer lists) and the label names that
are not classes of the set; the command decides what is an error. Nothing is scored twice either:
`combine_sets` refuses an image file reached twice (two rows or two sets naming one file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.boxes import relative_sides
from training.data.datasets import DataSource, Record
from training.data.labels import align_labels, unknown_labels
from training.errors import DataError


@dataclass
class SetPart:
    """One set's rows in a `LabelledSet`: its folder (absolute), split, record ids (as the set gives
    them) and whether they are a run's held-out images."""

    path: str
    split: str
    ids: list[str]
    heldout: bool = False

    @property
    def name(self) -> str:
        return f"{self.path}:{self.split}"


def ids_sha256(ids: Sequence[str]) -> str:
    """The digest `sixview eval` records for a set of image ids (sorted, one per line)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@dataclass
class LabelledSet:
    """Images of one split (or of several sets) with model-ordered targets and the known-class mask.

    `records` are the images to score: listed ones that are missing or unreadable are
    left out and named in `missing` (id, reason) out of `listed`; `unknown` maps each
    label name that is not a class of the set (of the model, when the set declares no
    class list) to the ids carrying it: such labels are not targets. `known` (K,) says
    which classes some row knows; `row_known` (N, K), when several sets are joined, which
    classes each row's own set knows (`mask` gives it either way). `parts` are the sets
    in row order.
    """

    name: str
    records: list[Record]
    targets: np.ndarray  # (N, K) in model class order
    known: np.ndarray  # (K,) bool
    boxes: list[tuple[int, int, float]]  # (row, class column, relative side)
    listed: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    row_known: np.ndarray | None = None
    parts: list[SetPart] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """(N, K) bool: the classes known to each row."""
        if self.row_known is not None:
            return self.row_known
        return np.broadcast_to(self.known, self.targets.shape)

    def part_rows(self) -> list[slice]:
        """Each part's rows."""
        out, start = [], 0
        for p in self.parts:
            out.append(slice(start, start + len(p.ids)))
            start += len(p.ids)
        return out


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
    """Read a split's records (only the ids in `only`, when given: held-out images) and align
    its labels to the model's classes by name. Held-out ids the split does not list count as
    missing ("not listed by the set").

    Raises DataError when nothing is left to score (no rows, none held out, all missing)."""
    recs = list(source.records(split))
    where = f"{source.path} (split {split})"
    if not recs:
        raise DataError(f"no images to score: {where} lists none")
    absent: list[tuple[str, str]] = []
    if only is not None:
        present = {r.id for r in recs}
        absent = [(i, "not listed by the set") for i in sorted(only - present)]
        recs = [r for r in recs if r.id in only]
        if not recs:
            raise DataError(f"no images to score: none of the {len(only)} held-out images is in {where}")
    listed = len(recs) + len(absent)
    missing = absent + [(r.id, why) for r in recs if r.path is not None and (why := unreadable(r.path))]
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
    part = SetPart(str(Path(source.path).resolve()), split, [r.id for r in recs], only is not None)
    return LabelledSet(f"{source.path}:{split}", recs, targets, known, boxes, listed, missing, unknown,
                       parts=[part])


def combine_sets(sets: Sequence[LabelledSet]) -> LabelledSet:
    """Several sets as one: rows in order, a per-row known mask (each row keeps its own set's
    classes), and, with more than one set, ids prefixed by their set's folder (`<folder>/<id>`)
    in records, `missing` and `unknown` so that messages name one file."""
    def tag(ds: LabelledSet, rid: str) -> str:
        return f"{ds.parts[0].path.rstrip('/')}/{rid}"

    _once([(tag(ds, r.id), r.path) for ds in sets for r in ds.records])
    if len(sets) == 1:
        return sets[0]

    records, boxes, missing, unknown, start = [], [], [], {}, 0
    for ds in sets:
        records += [dataclasses.replace(r, id=tag(ds, r.id)) for r in ds.records]
        boxes += [(start + i, k, side) for i, k, side in ds.boxes]
        missing += [(tag(ds, rid), why) for rid, why in ds.missing]
        for c, ids in ds.unknown.items():
            unknown.setdefault(c, []).extend(tag(ds, rid) for rid in ids)
        start += len(ds.records)
    row_known = np.concatenate([ds.mask for ds in sets])
    return LabelledSet("; ".join(ds.name for ds in sets), records, np.concatenate([ds.targets for ds in sets]),
                       row_known.any(axis=0), boxes, sum(ds.listed for ds in sets), missing, unknown,
                       row_known, [p for ds in sets for p in ds.parts])


def _once(files: list[tuple[str, Path | None]]) -> None:
    """Refuse an image file reached twice (two rows, or two sets, naming one file: the same device and
    inode through any link), which would be scored twice."""
    seen: dict[tuple[int, int], tuple[int, str]] = {}
    for i, (name, path) in enumerate(files):
        try:
            st = path.stat() if path is not None else None
        except OSError:  # missing: already left out and named
            continue
        j, first = seen.setdefault((st.st_dev, st.st_ino), (i, name)) if st is not None else (i, name)
        if j != i:
            again = "listed twice" if first == name else f"{first} again (one file)"
            raise DataError(f"{name} is {again}: each image is scored once; list it once, and give each set once")


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
    from training.data.datasets import open_source
    from training.data.labels import select, split_train_val

    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    cache = Path(cfg["cache_dir"]).expanduser() if cfg.get("cache_dir") else None
    source = open_source(cfg["data"], cache)
    split = load_split(source, cfg["train_split"], cache, progress=False)
    pool = select(split.labels, split.classes, cfg["classes"], cfg["negatives"], cfg.get("limit"), cfg["seed"])
    _, val = split_train_val(pool, cfg["val_split"], cfg["seed"])
    return cfg["data"], cfg["train_split"], {split.ids[int(i)] for i in val.indices}


def heldout_sets(run_dir: str | Path, part: str = "heldout") -> list[tuple[str, str | None, set[str]]] | None:
    """(set folder, split or None, ids) per set of RUN/splits.json (an adaptation run): its held-out
    photos (`part="heldout"`: they chose the epoch and may calibrate), or those it set aside for
    reporting only (`part="report"`: they chose nothing). Sets with no such photo are left out;
    None when the run has no splits.json (for "heldout": a training run, see `heldout_ids`).

    Raises DataError for a splits.json that is not `{"sets": {path: {"heldout": [ids]}}}` (a
    "report" list is optional: older runs have none), and when no set has photos of that part."""
    if part not in ("heldout", "report"):
        raise ValueError(f"part must be 'heldout' or 'report', got {part!r}")
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        if part == "report":
            raise DataError(f"{run_dir} has no splits.json: only an adaptation run sets photos aside for "
                            "reporting (sixview adapt --report)")
        return None
    try:
        sets = json.loads(path.read_text(encoding="utf-8"))["sets"]
        out = []
        for folder, entry in sets.items():
            ids = entry[part] if part == "heldout" else entry.get(part, [])  # older runs list no report part
            if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                raise TypeError(f"{part} must be a list of ids")
            split = entry.get("split")
            if ids:
                out.append((str(folder), str(split) if split else None, set(ids)))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a run's splits ({type(e).__name__}: {e}); expected "
                        '{"sets": {"<set folder>": {"fit": [ids], "heldout": [ids], "report": [ids]}}}') from None
    if not out and part == "report":
        raise DataError(f"no images to score: {run_dir} set no photos aside for reporting "
                        f"({path} lists none; sixview adapt --report FRACTION sets them aside)")
    if not out:
        raise DataError(f"no images to score: {path} holds out no image")
    return out


def run_part(run_dir: str | Path, part: str = "heldout") -> list[tuple[str, str | None, set[str]]]:
    """(set folder, split or None, ids) per set of a run's part (`heldout_sets`); a training run's
    held-out part is its validation images (`heldout_ids`)."""
    sets = heldout_sets(run_dir, part)
    return sets if sets is not None else [heldout_ids(run_dir)]
