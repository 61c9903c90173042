"""The FIT and TEST sets of `benchmarks.merges` (and `benchmarks.operating_points`): picking and loading
them as `sixview eval` does, their view scores (cached per model file and photos), and synthetic sets
for the toy colour model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.engine import Engine

ROLE = "hd"


def set_specs(paths: Sequence[str], heldout_of: str | None) -> list[tuple[Any, str, set[str] | None]]:
    """(source, split, held-out ids or None) per set, as `sixview eval` picks them
    (`training.commands.eval.input_specs`): each of `paths` (its test split if it has one, else its
    first), or the sets an adaptation run (RUN/splits.json) or a training run held out."""
    from training.commands.eval import input_specs

    return [(src, sp, only) for _, src, sp, only in input_specs(tuple(paths), None, heldout_of)]


def load_sets(specs: Sequence[tuple[Any, str, set[str] | None]], classes: Sequence[str], limit: int | None) -> Any:
    """The sets joined (`combine_sets`), each limited to `limit` photos."""
    from training.eval.sets import combine_sets, load_set

    return combine_sets([load_set(src, sp, classes, limit, only=only) for src, sp, only in specs])


def photo_keys(data: Any) -> set[str]:
    """Each record's file, resolved (or its set and id when it has no file)."""
    return {str(Path(r.path).resolve()) if r.path is not None else f"{data.name}/{r.id}" for r in data.records}


def _part_key(model_path: Path, part: Any) -> str:
    """The cache key of one set part's scores: the model file (path, size, time) and the part's photos."""
    st = model_path.stat()
    h = hashlib.sha256(f"{model_path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(f"{part.path}\0{part.split}\0".encode())
    h.update("\n".join(part.ids).encode())
    return h.hexdigest()[:16]


def score_set(engine: Engine, data: Any, batch: int, cache: Path | None, log: Callable[[str], None],
              role: str = ROLE) -> tuple[np.ndarray, list]:
    """(N, 6, K) view scores of `role` on the set and the errors; with `cache`, each of its sets'
    scores is read from / written to `cache` (keyed by the model file and the set's photos)."""
    from types import SimpleNamespace

    from training.eval.scoring import view_scores

    parts = []
    for part, rows in zip(data.parts, data.part_rows(), strict=True):
        path = cache / f"merges-{_part_key(engine.model(role).path, part)}.npy" if cache is not None else None
        errors: list = []
        if path is not None and path.is_file():
            log(f"  {part.name}: scores from {path}")
            vs = np.load(path)
        else:
            t0 = time.perf_counter()
            vs = view_scores(engine, role, SimpleNamespace(records=data.records[rows]), batch, errors=errors)
            dt = time.perf_counter() - t0
            log(f"  {part.name}: scored {len(vs)} photos in {dt:.1f} s ({len(vs) / max(dt, 1e-9):.0f} photos/s),"
                f" {len(errors)} failed")
            if path is not None:
                cache.mkdir(parents=True, exist_ok=True)
                np.save(path, vs)
        parts.append((vs, errors))
    return np.concatenate([vs for vs, _ in parts]), [e for _, errs in parts for e in errs]


def synthetic_sets(root: Path, fit: int = 48, test: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Two labelled folders (labels.csv, classes.txt) of synthetic photos for the toy colour model
    (red, green, blue): a class is present when a patch of its colour covers 3-10% of the photo;
    unlabelled specks (about 1%) of a colour are what a corner over-reads. About a third of the
    photos hold none of the classes."""
    import cv2

    rng = np.random.default_rng(seed)
    colours = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR
    out = []
    for name, n in (("fit", fit), ("test", test)):
        d = root / name
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "classes.txt").write_text("\n".join(colours) + "\n")
        rows = ["path,labels"]
        for i in range(n):
            h, w = 120, 160
            img = rng.integers(90, 170, (h, w, 3)).astype(np.uint8)
            labels = []
            for c, bgr in colours.items():
                if rng.random() < 0.3:
                    labels.append(c)
                    area = rng.uniform(0.03, 0.10) * h * w
                elif rng.random() < 0.5:
                    area = rng.uniform(0.006, 0.015) * h * w
                else:
                    continue
                side = int(np.sqrt(area))
                x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
                cv2.rectangle(img, (x0, y0), (x0 + side - 1, y0 + side - 1), bgr, -1)
            rel = f"images/{name}_{i:03d}.png"
            cv2.imwrite(str(d / rel), img)
            rows.append(f"{rel},{'|'.join(labels)}")
        (d / "labels.csv").write_text("\n".join(rows) + "\n")
        out.append(d)
    return out[0], out[1]
