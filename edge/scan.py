"""Offline scans: classify images with decoding in worker threads overlapping inference,
and write one record per image, in input order (finding them: `edge/inputs.py`)."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .draw import draw_verdict
from .engine import Engine, Prepared, Verdict
from .errors import per_image
from .inputs import IMAGE_EXTENSIONS, read_file
from .records import record


@dataclass
class Summary:
    """What a scan did."""

    images: int = 0
    errors: int = 0
    labels: Counter = field(default_factory=Counter)
    unlabelled: int = 0  # classified images with no confident label (none of the classes, or a guess)
    guessed: int = 0  # of them, those with a guess
    stage_ms: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, rec: dict[str, Any]) -> None:
        self.images += 1
        self.errors += rec["error"] is not None
        self.labels.update(rec["labels"])
        if rec["error"] is None:  # a guess comes only without confident labels (in labels too with --guess-in-labels)
            guessed = rec.get("guess") is not None
            self.unlabelled += guessed or not rec["labels"]
            self.guessed += guessed
        self.stage_ms.update(rec["timings_ms"])

    def text(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        lines = [f"{'interrupted after' if self.interrupted else 'scanned'} {self.images} images "
                 f"in {self.seconds:.1f} s ({rate:.1f} images/s), {self.errors} errors"]
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in self.labels.most_common()))
        if self.unlabelled:
            lines.append(f"none of the classes (no label): {self.unlabelled} images "
                         f"({self.guessed} of them with a guess)")
        ok = self.images - self.errors
        if ok:
            lines.append("mean ms per image: " + ", ".join(
                f"{k} {v / ok:.1f}" for k, v in self.stage_ms.items()))
        return "\n".join(lines)


@dataclass
class _Loaded:
    """One path's outcome of loading: a prepared image, or the error for its record."""

    path: str
    prepared: Prepared | None
    error: str | None
    timings: dict[str, float]


def _load(path: str, engine: Engine, keep_image: bool) -> _Loaded:
    """Read, decode and render one image's views (runs in a worker thread)."""
    t0 = time.perf_counter()
    data, error = per_image(read_file, path)
    timings = {"decode": (time.perf_counter() - t0) * 1e3}
    prepared = None
    if data is not None:
        prepared, error = per_image(engine.load, data, keep_image=keep_image, timings_ms=timings)
    return _Loaded(path, prepared, error, {} if error else timings)


def scan(paths: list[str], engine: Engine, write: Callable[[dict[str, Any]], None],
         annotate_dir: Path | None = None, batch_images: int = 1, workers: int = 2,
         names: Mapping[str, str] | None = None) -> Summary:
    """Classify `paths`, calling `write(record)` once per image, in input order. Annotated copies
    go to `annotate_dir` under `names[path]` (the path relative to its scan root; default: its name)."""
    summary = Summary()
    start = time.perf_counter()
    window = max(2 * batch_images + workers, 4)
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[Future[_Loaded]] = deque()
    todo = iter(paths)
    try:
        while True:
            while len(pending) < window and (path := next(todo, None)) is not None:
                pending.append(pool.submit(_load, path, engine, annotate_dir is not None))
            if not pending:
                break
            group = [pending.popleft().result() for _ in range(min(batch_images, len(pending)))]
            ready = [g for g in group if g.prepared is not None]
            verdicts = dict(zip(map(id, ready), engine.classify([g.prepared for g in ready]), strict=True))
            for g in group:
                v = verdicts.get(id(g))
                rec = record("path", g.path, v, timings_ms=g.timings, error=g.error)
                if v is not None and annotate_dir is not None and g.prepared.decoded is not None:
                    name = (names or {}).get(g.path, os.path.basename(g.path))
                    _, error = per_image(_annotate, g.prepared.decoded.bgr, v, annotate_dir / name)
                    rec["error"] = error and f"cannot write the annotated copy: {error}"
                write(rec)
                summary.add(rec)
                bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _annotate(bgr: np.ndarray, verdict: Verdict, dest: Path) -> None:
    """Write a copy with the verdict drawn on it (PNG where OpenCV cannot write the format)."""
    if dest.suffix.lower() not in IMAGE_EXTENSIONS - {".gif"}:  # OpenCV writes no GIF
        dest = dest.with_suffix(".png")
    ok, buf = cv2.imencode(dest.suffix, draw_verdict(bgr.copy(), verdict))
    if not ok:
        raise OSError(f"OpenCV cannot encode {dest.suffix}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buf.tobytes())  # Python's open, not OpenCV's: any file name the system allows
