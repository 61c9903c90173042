"""What a scan reads: image paths found in files, folders and globs, their shard keys, and
reading one file safely (regular files only, with a size limit, never blocking).

A path's shard key is the path relative to the scan root it was found under
(`/`-separated; a file named on its own is keyed by its name), so
`sixview scan photos --shard i/n`, `sixview scan /abs/photos ...` and
`cd photos && sixview scan . ...` put every image in the same shard.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import NotFound, PerInputError, TooLarge

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
MAX_FILE_BYTES = 512 * 2**20  # larger files are refused before reading: no image format needs more
_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def file_kind(mode: int) -> str | None:
    """What a file of `st_mode` is when it is no regular file ("a named pipe", "a folder", ...), else None."""
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class InputError(PerInputError, ValueError):
    """A file that is not read as an image: not a regular file (`bad_input`, 422), too large, or gone."""


class FileTooLarge(InputError, TooLarge):
    """A file over the size limit, refused before it is read (413)."""

    code = "file_too_large"


class FileMissing(InputError, NotFound, FileNotFoundError):
    """A listed file that is no longer there, or a link to nothing (404; still a FileNotFoundError)."""


def too_large(size: int | None, max_bytes: int) -> FileTooLarge:
    """The error for a file of `size` bytes (None: one that grew past the limit while it was read)."""
    limit = f"{max_bytes / 2**20:.0f} MiB"
    if size is None:
        return FileTooLarge(f"file too large: over {limit}")
    return FileTooLarge(f"file too large: {size / 2**20:.0f} MiB (the limit is {limit})")


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions a folder scan picks up."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect_keyed(inputs: Iterable[str]) -> dict[str, str]:
    """Image paths -> shard keys, from files, folders (recursive, symlink loops skipped) and globs,
    sorted by path; a file reached twice (by a relative and an absolute path, through a linked folder
    or a link: the same device and inode) is kept once, as first spelled. Raises FileNotFoundError
    for an input that matches nothing."""
    found: dict[str, str] = {}
    seen: set[tuple[int, int] | str] = set()

    def add(path: str, root: str | None) -> None:
        path = os.path.normpath(path)
        try:
            st = os.stat(path)
            identity: tuple[int, int] | str = (st.st_dev, st.st_ino)
        except OSError:  # a link to nothing: its own record says so
            identity = os.path.abspath(path)
        if identity not in seen:
            seen.add(identity)
            found[path] = _key(path, root)

    for arg in inputs:
        if os.path.isdir(arg):
            for p in _walk(arg):
                add(p, arg)
        elif os.path.lexists(arg):
            add(arg, None)  # named explicitly: try it even if unusual
        else:
            matches = glob.glob(arg, recursive=True) if glob.has_magic(arg) else []
            if not matches:
                raise FileNotFoundError(f"no such file, folder or glob match: {arg}")
            base = _glob_base(arg)
            for m in sorted(matches):
                for p in _walk(m) if os.path.isdir(m) else [m] if is_image_name(m) else []:
                    add(p, base)
    return dict(sorted(found.items()))


def collect(inputs: Iterable[str]) -> list[str]:
    """Image paths from files, folders and globs (see `collect_keyed`), sorted, each file once."""
    return list(collect_keyed(inputs))


def _key(path: str, root: str | None) -> str:
    rel = os.path.basename(path) if root is None else os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return rel.replace(os.sep, "/")


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or "."


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
            if is_image_name(f):
                yield os.path.join(dirpath, f)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n, e.g. 0/4; got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard i/n needs 0 <= i < n; got {text!r}")
    return i, n


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Deterministic, order-independent assignment of a shard key to one of n shards."""
    i, n = shard
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % n == i


def keep_shard(found: dict[str, str], shard: str | None) -> dict[str, str]:
    """The files of `found` (path -> shard key) in shard 'i/n' (all of them without one)."""
    if not shard:
        return found
    part = parse_shard(shard)
    return {p: k for p, k in found.items() if in_shard(k, part)}


def read_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes (links followed). Anything else (a named pipe, a device, a socket)
    is refused without blocking, and so is a file over `max_bytes`; one that is not there raises `FileMissing`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise FileMissing(f"cannot read: {e.strerror or 'no such file'}") from None
    except OSError:  # a socket (or a device with nothing behind it) does not even open: say what it is
        try:
            kind = file_kind(os.stat(path).st_mode)
        except OSError:
            kind = None
        if kind is None:
            raise
        raise InputError(f"not an image file: {kind}") from None
    try:
        st = os.fstat(fd)
        kind = file_kind(st.st_mode)
        if kind is not None:
            raise InputError(f"not an image file: {kind}")
        if st.st_size > max_bytes:
            raise too_large(st.st_size, max_bytes)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew while being read
            raise too_large(None, max_bytes)
        return data
    finally:
        os.close(fd)


def file_sha256(path: Path | str) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
