"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The content goes to a temporary file beside the target (same folder, so the same file
system), is flushed and fsynced, then `os.replace`s the target. A write that fails or is
killed midway leaves the old file as it was (a killed one may leave its hidden `.*.tmp`).

    atomic_write(path, "text")           # or bytes
    with atomic_write(path) as fh:       # text; atomic_write(path, binary=True) for bytes
        fh.write(...)
    with atomic_path(path) as tmp:       # for writers that want a path (onnx.save)
        onnx.save(model, str(tmp))
    with atomic_path(path, keep_suffix=True) as tmp:  # ... and insist on its suffix (Keras' model.save)
        model.save(tmp)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, overload

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: new files get the mode a plain open() would give them


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened and synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    """fsync `tmp`, give it a new file's mode (or the old file's), and move it over `path`."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (hidden, ending `.tmp`; with `keep_suffix`, `.tmp` + the target's
    suffix, for writers that insist on one) to write in full; it replaces `path` when the block ends
    without an exception, and is removed when it raises."""
    target = Path(path)
    tmp = _temp_beside(target, ".tmp" + (target.suffix if keep_suffix else ""))
    try:
        yield tmp
        _commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _open_atomic(path: Path, binary: bool, encoding: str) -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w",
                                        **({} if binary else {"encoding": encoding})) as fh:
        yield fh


@overload
def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, binary: bool = ...,
                 encoding: str = ...) -> None: ...
@overload
def atomic_write(path: str | os.PathLike[str], data: None = None, *, binary: bool = ...,
                 encoding: str = ...) -> contextlib.AbstractContextManager[IO[Any]]: ...
def atomic_write(path: str | os.PathLike[str], data: str | bytes | None = None, *, binary: bool = False,
                 encoding: str = "utf-8") -> contextlib.AbstractContextManager[IO[Any]] | None:
    """Write `data` (str or bytes) to `path` atomically; without `data`, a context manager giving
    the open temporary file (text, or bytes with `binary=True`) that replaces `path` on success."""
    target = Path(path)
    if data is None:
        return _open_atomic(target, binary, encoding)
    with _open_atomic(target, isinstance(data, bytes), encoding) as fh:
        fh.write(data)
    return None
