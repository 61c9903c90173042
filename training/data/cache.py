"""Decoded-image cache: uint8 arrays at native resolution, memory-mapped.

Each source gets `<cache>/arrays/<kind>-<digest>/`; the digest covers the
source's file list, sizes and mtimes (or the archive's hash), so a changed
source lands in a new folder and the stale one is deleted. Per split:

- `<split>.pixels.npy`: (N, H, W, 3) when all images share a size, else a flat
  uint8 buffer; `<split>.index.npy`: (N, 3) int64 rows `offset, h, w`;
- `<split>.labels.npy`: (N, C) uint8 multi-hot over the source's classes;
- `<split>.hashes.npy`: (N, 20) uint8 sha1 of each file's bytes (or pixels);
- `<split>.json`: ids, dropped files and why (written last: marks completion).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic import atomic_path, atomic_write
from edge.decode import DecodeError, decode
from training.data.archives import default_cache_root
from training.data.datasets import DataSource, Record

CACHE_VERSION = 1


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode image bytes to an (H, W, 3) uint8 RGB array exactly as the runtime does
    (edge.decode: EXIF, alpha, 16-bit, palette...); None when undecodable."""
    try:
        return np.ascontiguousarray(decode(data).bgr[:, :, ::-1])
    except DecodeError:
        return None


@dataclass
class CachedSplit:
    """One split's decoded images (memory-mapped), labels and cleaning record."""

    name: str
    classes: list[str]
    ids: list[str]
    labels: np.ndarray
    index: np.ndarray
    pixels: np.ndarray
    hashes: np.ndarray
    dropped: list[dict]
    directory: Path

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def uniform_shape(self) -> tuple[int, int] | None:
        """(H, W) when every image has that size, else None."""
        return tuple(self.pixels.shape[1:3]) if self.pixels.ndim == 4 else None

    def image(self, i: int) -> np.ndarray:
        """Image `i` as an (H, W, 3) uint8 array (a view into the memory map)."""
        if self.pixels.ndim == 4:
            return self.pixels[i]
        off, h, w = (int(v) for v in self.index[i])
        return self.pixels[off:off + h * w * 3].reshape(h, w, 3)

    def images(self, indices: np.ndarray) -> np.ndarray:
        """Stack images `indices` (uniform-size splits only) into (n, H, W, 3)."""
        if self.pixels.ndim != 4:
            raise ValueError("images() needs a split whose images share one size")
        return self.pixels[np.asarray(indices, dtype=np.int64)]


def source_cache_dir(source: DataSource, cache_root: Path | None = None) -> Path:
    """The cache folder for `source`'s current content."""
    root = (cache_root or default_cache_root()) / "arrays"
    return root / f"{source.kind}-{source.digest()[:20]}"


def _drop_stale(cache_dir: Path, source_path: str) -> None:
    for d in cache_dir.parent.iterdir():
        if d == cache_dir or not d.is_dir():
            continue
        try:
            meta = json.loads((d / "source.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("path") == source_path:
            shutil.rmtree(d, ignore_errors=True)


def _decode_record(rec: Record) -> tuple[np.ndarray | None, bytes, str]:
    """(image or None, sha1 digest, reason when dropped)."""
    try:
        raw = rec.read()
    except FileNotFoundError:
        return None, b"", "missing file"
    except OSError as e:
        return None, b"", f"unreadable ({e.strerror or e})"
    if isinstance(raw, np.ndarray):
        img = raw
        digest = hashlib.sha1(np.ascontiguousarray(img).tobytes()).digest()
        return img, digest, ""
    if not raw:
        return None, b"", "empty file"
    img = decode_image(raw)
    digest = hashlib.sha1(raw).digest()
    if img is None or img.size == 0:
        return None, digest, "undecodable"
    return img, digest, ""


def _decode_records(records: Iterable[Record], workers: int) -> Iterator[tuple[Record, tuple]]:
    batch: list[Record] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rec in records:
            batch.append(rec)
            if len(batch) >= 256:
                yield from zip(batch, pool.map(_decode_record, batch), strict=True)
                batch = []
        yield from zip(batch, pool.map(_decode_record, batch), strict=True)


def _build_split(source: DataSource, split: str, d: Path, progress: bool) -> None:
    from tqdm import tqdm

    raw_path = d / f"{split}.pixels.raw.tmp{os.getpid()}"
    ids, labels, index, hashes, dropped, shapes = [], [], [], [], [], set()
    cls = {c: k for k, c in enumerate(source.classes)}
    offset = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    it = _decode_records(source.records(split), workers)
    with open(raw_path, "wb") as raw:
        for rec, (img, digest, reason) in tqdm(it, desc=f"caching {split}", unit="img",
                                               disable=not progress, file=sys.stderr):
            if img is None:
                dropped.append({"id": rec.id, "reason": reason})
                continue
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
            h, w = img.shape[:2]
            raw.write(img.tobytes())
            index.append((offset, h, w))
            offset += img.size
            shapes.add((h, w))
            ids.append(rec.id)
            row = np.zeros(len(source.classes), np.uint8)
            row[[cls[c] for c in rec.labels]] = 1
            labels.append(row)
            hashes.append(np.frombuffer(digest, np.uint8))
    n = len(ids)
    shape = (n, *next(iter(shapes)), 3) if len(shapes) == 1 else (offset,)
    with atomic_path(d / f"{split}.pixels.npy") as npy:
        pix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape if n else (0,))
        flat = pix.reshape(-1)
        with open(raw_path, "rb") as raw:
            pos = 0
            while chunk := raw.read(1 << 26):
                flat[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                pos += len(chunk)
        pix.flush()
        del pix, flat
    raw_path.unlink()
    arrays = {"index": np.asarray(index, np.int64).reshape(n, 3),
              "labels": np.asarray(labels, np.uint8).reshape(n, len(source.classes)),
              "hashes": np.asarray(hashes, np.uint8).reshape(n, 20)}
    for key, arr in arrays.items():
        np.save(d / f"{split}.{key}.npy", arr)
    meta = {"version": CACHE_VERSION, "split": split, "classes": source.classes,
            "ids": ids, "dropped": dropped}
    atomic_write(d / f"{split}.json", json.dumps(meta))


def _load_mmap(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # an empty split cannot be memory-mapped
        return np.load(path)


def load_split(source: DataSource, split: str, cache_root: Path | None = None,
               progress: bool = True) -> CachedSplit:
    """Return `split` of `source` from the cache, decoding it first when needed."""
    if split not in source.splits:
        raise KeyError(f"{source.path} has no split {split!r} (has {source.splits})")
    d = source_cache_dir(source, cache_root)
    meta_path = d / f"{split}.json"
    if not meta_path.exists():
        d.mkdir(parents=True, exist_ok=True)
        (d / "source.json").write_text(json.dumps(
            {"path": str(source.path), "kind": source.kind, "version": CACHE_VERSION}))
        _drop_stale(d, str(source.path))
        _build_split(source, split, d, progress)
    meta = json.loads(meta_path.read_text())
    return CachedSplit(
        name=split, classes=meta["classes"], ids=meta["ids"],
        labels=np.load(d / f"{split}.labels.npy"), index=np.load(d / f"{split}.index.npy"),
        pixels=_load_mmap(d / f"{split}.pixels.npy"),
        hashes=np.load(d / f"{split}.hashes.npy"), dropped=meta["dropped"], directory=d)
