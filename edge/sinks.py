"""Where records go: JSONL and CSV files (or stdout), written so that nothing is lost.

- A results file is opened only after the models are loaded, locked against a
  second writer (`flock`), and never emptied by accident: an existing
  non-empty file needs `append` (`--resume`) or `overwrite` (`--overwrite`).
- Each JSONL line is written and flushed whole; an interrupted run loses
  nothing already written. Resuming cuts a line left half-written and drops
  the earlier records of the paths being retried, so every path ends with
  exactly one record (its latest).
- A path that is not valid UTF-8 (Python holds its bytes as surrogate escapes)
  is written in JSON as `\\udcXX` escapes, which `json.loads` and
  `os.fsencode` turn back into the same bytes; the CSV holds the raw bytes.
- A write that fails (a full disk, a closed device) raises `OutputError`.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from .atomic import atomic_write
from .errors import OutputFailed


class OutputError(OutputFailed, RuntimeError):
    """A results file that cannot be opened, locked or written (a setup error: exit code 2)."""


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def open_output(path: Path, *, append: bool = False, overwrite: bool = False) -> IO[bytes]:
    """A results file opened for appending and locked; an existing non-empty file is refused
    unless `append` (kept) or `overwrite` (emptied, once the lock is held)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a named pipe with no reader fails at once instead of blocking
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_why(e)}") from None
    os.set_blocking(fd, True)
    fh = os.fdopen(fd, "ab")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise OutputError(f"{path} is being written by another run; wait for it or choose another file") from None
    size = os.fstat(fd).st_size
    if size and not (append or overwrite):
        fh.close()
        raise OutputError(f"{path} already holds results: --resume to continue it, --overwrite to replace it")
    if overwrite:
        fh.truncate(0)
    return fh


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """The whole records of a JSONL file (a line cut short by an interruption is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    with p.open(encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def done_paths(path: Path | str) -> set[str]:
    """Paths that already have a successful record in a JSONL file (for --resume)."""
    return {r["path"] for r in read_records(path) if r.get("error") is None and "path" in r}


def _replace_contents(path: Path, lines: Iterable[bytes]) -> None:
    """Write `lines` to a new file beside `path`, then put it in its place (a crash leaves the old one)."""
    try:
        with atomic_write(path, binary=True) as fh:
            fh.writelines(lines)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_why(e)}") from None


def json_line(rec: dict[str, Any]) -> bytes:
    """One record as a UTF-8 JSON line; names that are not valid UTF-8 as `\\udcXX` escapes."""
    try:
        return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(rec) + "\n").encode("ascii")


class JsonlSink:
    """Records as JSONL lines in a file (or on stdout for None or '-'), each flushed whole.

    `append` continues an existing file: a cut last line is removed and the records of
    `retry` (paths about to be scanned again) are dropped first.
    """

    def __init__(self, path: Path | str | None, *, append: bool = False, overwrite: bool = False,
                 retry: Iterable[str] = ()):
        self.path = None if path in (None, "-") else Path(path)
        self._append, self._overwrite, self._retry = append, overwrite, set(retry)
        self._fh: IO[bytes] | None = None
        self.kept: list[dict[str, Any]] = []  # the records an appended file keeps

    def __enter__(self) -> JsonlSink:
        if self.path is None:
            self._fh = sys.stdout.buffer
            return self
        self._fh = open_output(self.path, append=self._append, overwrite=self._overwrite)
        if self._append and os.fstat(self._fh.fileno()).st_size:
            self._compact()
        return self

    def _compact(self) -> None:
        assert self.path is not None and self._fh is not None
        raw = self.path.read_bytes()
        self.kept = [r for r in read_records(self.path) if r.get("path") not in self._retry]
        lines = [json_line(r) for r in self.kept]
        if b"".join(lines) != raw:  # something to cut: rewrite, then hold the lock on the new file
            _replace_contents(self.path, lines)
            old, self._fh = self._fh, open_output(self.path, append=True)
            old.close()

    def write(self, rec: dict[str, Any]) -> None:
        """Write one record and flush it."""
        assert self._fh is not None
        try:
            self._fh.write(json_line(rec))
            self._fh.flush()
        except OSError as e:
            raise OutputError(f"cannot write {self.path or 'stdout'}: {_why(e)}") from None

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None and self.path is not None:
            with contextlib.suppress(OSError):  # the write that failed has said so
                self._fh.close()


class CsvSink:
    """A flat CSV: path, engine, labels ('|'-joined), guess (the guessed class, its score is in its
    column), presence, error, then one score column per class.

    `rows` (the records a resumed JSONL file keeps) are written first, so the CSV always
    matches the whole JSONL file; a resumed run passes `overwrite` to rebuild it that way.
    """

    def __init__(self, path: Path | str, classes: list[str], *, overwrite: bool = False,
                 rows: Iterable[dict[str, Any]] = ()):
        self.path, self.classes = Path(path), list(classes)
        self._overwrite, self._rows = overwrite, list(rows)
        self._fh: IO[str] | None = None
        self._binary: IO[bytes] | None = None
        self._writer: Any = None

    def __enter__(self) -> CsvSink:
        self._binary = open_output(self.path, overwrite=self._overwrite)
        self._fh = open(self._binary.fileno(), "w", newline="", encoding="utf-8", errors="surrogateescape",
                        closefd=False)
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["path", "engine", "labels", "guess", "presence", "error", *self.classes])
        for rec in self._rows:
            self.write(rec)
        return self

    def write(self, rec: dict[str, Any]) -> None:
        """Write one record's row and flush it."""
        assert self._fh is not None
        try:
            guess, presence = rec.get("guess"), rec.get("presence")  # absent in records of older runs
            self._writer.writerow([rec.get("path", rec.get("frame")), rec["engine"] or "",
                                   "|".join(rec["labels"]), guess["label"] if guess else "",
                                   "" if presence is None else presence, rec["error"] or "",
                                   *(rec["scores"].get(c, "") for c in self.classes)])
            self._fh.flush()
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {_why(e)}") from None

    def __exit__(self, *exc: object) -> None:
        for fh in (self._fh, self._binary):
            if fh is not None:
                with contextlib.suppress(OSError):  # the write that failed has said so
                    fh.close()
