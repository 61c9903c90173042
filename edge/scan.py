"""Offline scans: find images, split them into shards, classify them with decoding
in worker threads overlapping inference, and write one record per image."""

from __future__ import annotations

import glob
import os
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from .draw import draw_verdict
from .engine import Engine, Prepared, Verdict
from .errors import per_image
from .records import record

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect(inputs: Iterable[str]) -> list[str]:
    """Image paths from files, folders (recursive, symlink loops skipped) and globs,
    sorted and without duplicates. Raises FileNotFoundError for an input that matches nothing."""
    found: list[str] = []
    for arg in inputs:
        if os.path.isdir(arg):
            found.extend(_walk(arg))
        elif os.path.lexists(arg):
            found.append(os.path.normpath(arg))  # named explicitly: try it even if unusual
        else:
            matches = glob.glob(arg, recursive=True) if glob.has_magic(arg) else []
            if not matches:
                raise FileNotFoundError(f"no such file, folder or glob match: {arg}")
            for m in matches:
                found.extend(_walk(m) if os.path.isdir(m) else [os.path.normpath(m)] if _is_image(m) else [])
    return sorted(set(found))


def _walk(root: str) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: None):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames.clear()
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second way into a folder
            dirnames.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for f in sorted(filenames):
            if _is_image(f):
                yield os.path.normpath(os.path.join(dirpath, f))


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n, e.g. 0/4; got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard i/n needs 0 <= i < n; got {text!r}")
    return i, n


def in_shard(path: str, shard: tuple[int, int]) -> bool:
    """Deterministic, order-independent assignment of a path to one of n shards."""
    i, n = shard
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) % n == i


@dataclass
class Summary:
    """What a scan did."""

    images: int = 0
    errors: int = 0
    labels: Counter = field(default_factory=Counter)
    stage_ms: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, rec: dict[str, Any]) -> None:
        self.images += 1
        self.errors += rec["error"] is not None
        self.labels.update(rec["labels"])
        self.stage_ms.update(rec["timings_ms"])

    def text(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        lines = [f"{'interrupted after' if self.interrupted else 'scanned'} {self.images} images "
                 f"in {self.seconds:.1f} s ({rate:.1f} images/s), {self.errors} errors"]
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in self.labels.most_common()))
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


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _load(path: str, engine: Engine, keep_image: bool) -> _Loaded:
    """Read, decode and render one image's views (runs in a worker thread)."""
    t0 = time.perf_counter()
    data, error = per_image(_read, path)
    timings = {"decode": (time.perf_counter() - t0) * 1e3}
    prepared = None
    if data is not None:
        prepared, error = per_image(engine.load, data, keep_image=keep_image, timings_ms=timings)
    return _Loaded(path, prepared, error, {} if error else timings)


def scan(paths: list[str], engine: Engine, write: Callable[[dict[str, Any]], None],
         annotate_dir: Path | None = None, batch_images: int = 1, workers: int = 2,
         roots: list[str] | None = None) -> Summary:
    """Classify `paths`, calling `write(record)` once per image, in input order."""
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
                    try:
                        _annotate(g, v, annotate_dir, roots or [])
                    except OSError as e:
                        rec["error"] = str(e)
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


def _annotate(g: _Loaded, verdict: Verdict, out_dir: Path, roots: list[str]) -> None:
    rel = Path(os.path.basename(g.path))
    for r in roots:
        if os.path.isdir(r) and os.path.abspath(g.path).startswith(os.path.abspath(r) + os.sep):
            rel = Path(os.path.relpath(g.path, r))
            break
    if rel.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}:
        rel = rel.with_suffix(".png")
    dest = out_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    img = draw_verdict(g.prepared.decoded.bgr.copy(), verdict)
    if not cv2.imwrite(str(dest), img):
        raise OSError(f"cannot write annotated image {dest}")
