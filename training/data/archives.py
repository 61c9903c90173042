"""Where training caches what it derives from data sets, and tar archives of data sets: extracted
once into that cache, or read in place (CIFAR-10's pickles)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from edge.inputs import file_sha256
from training.errors import DataError


def default_cache_root() -> Path:
    """Cache folder: $SIXVIEW_CACHE, else ~/.cache/sixview."""
    return Path(os.environ.get("SIXVIEW_CACHE") or Path.home() / ".cache" / "sixview")


def extract_archive(archive: Path, cache_root: Path | None = None) -> Path:
    """Extract a tar archive once into `<cache>/extracted/<name>-<hash>/`; return that folder."""
    cache_root = cache_root or default_cache_root()
    stem = archive.name.split(".")[0]
    dest = cache_root / "extracted" / f"{stem}-{file_sha256(archive)[:12]}"
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive}: cannot extract ({e})") from None
    (tmp / ".complete").write_text(str(archive))
    if dest.exists():  # a half-finished earlier attempt
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def tar_is_cifar_pickle(path: Path) -> bool:
    """Whether a tar archive holds CIFAR-10's pickled batches (not image files)."""
    with tarfile.open(path) as tf:
        for m in tf:
            if Path(m.name).name in ("data_batch_1", "test_batch", "batches.meta"):
                return True
            if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                return False
    return False
