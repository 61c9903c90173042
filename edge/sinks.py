"""Where records go: JSONL and CSV files (or stdout), written so that nothing is lost.

- A results file is opened only after the models are loaded, locked against a second writer (`flock`),
  and never emptied by accident: a non-empty one needs `append` (`--resume`) or `overwrite`; every
  output is held before any is changed (`open_sinks`). Devices and pipes are written as they are.
- Each JSONL line is written and flushed whole; resuming cuts a line left half-written and drops the
  earlier records of the paths being retried, so every path ends with exactly one record (its latest).
- A path that is not valid UTF-8 is written in JSON as `\\udcXX` escapes (`json.loads` and
  `os.fsencode` give its bytes back); the CSV holds the raw bytes.
- A write that fails (a full disk, a closed device) raises `OutputError`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .atomic import atomic_write
from .errors import OutputFailed
from .inputs import file_kind


class OutputError(OutputFailed, RuntimeError):
    """A results file that cannot be opened, locked or written (a setup error: exit code 2)."""


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def lock_output(path: Path, *, append: bool = False, overwrite: bool = False) -> IO[bytes]:
    """A results file opened for appending and locked, nothing changed yet: a non-empty one is refused
    unless `append` or `overwrite` (then `empty`). A device or pipe (`/dev/null`, `/dev/stdout`) is never
    locked nor emptied; a named pipe without a reader is refused at once (O_NONBLOCK), never waited for."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:  # ENXIO: a named pipe with no reader (or a socket)
        kind = file_kind(st.st_mode) if e.errno == errno.ENXIO and (st := _stat(path)) else None
        why = f"{kind}{' with no reader' if kind == 'a named pipe' else ''}" if kind else _why(e)
        raise OutputError(f"cannot write {path}: {why}") from None
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        fh = os.fdopen(fd, "ab")  # /proc/version and the like refuse here (their offset cannot move)
    except OSError as e:
        os.close(fd)
        raise OutputError(f"cannot write {path}: {_why(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise OutputError(f"{path} is being written by another run; wait for it or choose another file") from None
    if st.st_size and not (append or overwrite):
        fh.close()
        raise OutputError(f"{path} already holds results: --resume to continue it, --overwrite to replace it")
    return fh


def empty(fh: IO[bytes], path: Path | str) -> None:
    """Empty a locked results file (a device or a pipe holds nothing to empty)."""
    try:
        if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            fh.truncate(0)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_why(e)}") from None


def open_output(path: Path, *, append: bool = False, overwrite: bool = False) -> IO[bytes]:
    """`lock_output`, then emptied when `overwrite`: for an output that is the only one."""
    fh = lock_output(path, append=append, overwrite=overwrite)
    if overwrite:
        empty(fh, path)  # a failure stops the run: the file is closed with the error's frame
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


class _Held:
    """Entering an output is `hold` (opened, locked, checked: nothing in it changed) then `start`."""

    def __enter__(self):
        self.hold()
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise


class JsonlSink(_Held):
    """Records as JSONL lines in a file (or on stdout for None or '-'), each flushed whole.

    `append` continues an existing file: a cut last line is removed and the records of
    `retry` (paths about to be scanned again) are dropped first (in `start`, after `hold`).
    """

    def __init__(self, path: Path | str | None, *, append: bool = False, overwrite: bool = False,
                 retry: Iterable[str] = ()):
        self.path = None if path in (None, "-") else Path(path)
        self._append, self._overwrite, self._retry = append, overwrite, set(retry)
        self._fh: IO[bytes] | None = None
        self.kept: list[dict[str, Any]] = []  # the records an appended file keeps

    def hold(self) -> JsonlSink:
        """Open and lock the file (stdout: check that it is open); nothing in it changes yet."""
        if self.path is not None:
            self._fh = lock_output(self.path, append=self._append, overwrite=self._overwrite)
            return self
        self._fh = getattr(sys.stdout, "buffer", None)  # None: started with stdout closed (`>&-`)
        with contextlib.suppress(io.UnsupportedOperation):  # captured (as in tests): no descriptor to check
            if self._fh is None or _stat(sys.stdout.fileno()) is None:
                raise OutputError("cannot write stdout: it is closed (give --out FILE)")
        return self

    def start(self) -> JsonlSink:
        """Empty the held file (`overwrite`) or compact it (`append`)."""
        if self.path is not None and self._fh is not None:
            if self._overwrite:
                empty(self._fh, self.path)
            elif self._append and os.fstat(self._fh.fileno()).st_size:
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


class CsvSink(_Held):
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

    def hold(self) -> CsvSink:
        """Open and lock the file; nothing in it changes yet."""
        self._binary = lock_output(self.path, overwrite=self._overwrite)
        return self

    def start(self, rows: Iterable[dict[str, Any]] | None = None) -> CsvSink:
        """Empty the held file (`overwrite`), write the header, then `rows` (default: the constructor's)."""
        assert self._binary is not None
        if self._overwrite:
            empty(self._binary, self.path)
        self._fh = open(self._binary.fileno(), "w", newline="", encoding="utf-8", errors="surrogateescape",
                        closefd=False)
        self._writer = csv.writer(self._fh)
        try:
            self._writer.writerow(["path", "engine", "labels", "guess", "presence", "error", *self.classes])
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {_why(e)}") from None
        for rec in self._rows if rows is None else rows:
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


@contextlib.contextmanager
def open_sinks(out: Path | None, csv_path: Path | None, classes: list[str], *, resume: bool = False,
               overwrite: bool = False, retry: Iterable[str] = (),
               ready: Callable[[], None] | None = None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """The JSONL results (stdout without `out`) and the CSV, as one `write(record)`. Every output is
    held (opened, locked, checked; then `ready()`, a caller's own check) before any is changed, so a
    refused one leaves the others as they were; then `--overwrite` empties them, `--resume` compacts
    the JSONL file and rebuilds the CSV from the records it keeps."""
    sink = JsonlSink(out, append=resume, overwrite=overwrite, retry=retry)
    table = CsvSink(csv_path, classes, overwrite=overwrite or resume) if csv_path else None
    with contextlib.ExitStack() as stack:
        stack.callback(sink.__exit__)
        sink.hold()
        if table is not None:
            stack.callback(table.__exit__)
            if _same_target(out, csv_path):  # lines of both, interleaved (or one lock refusing the other)
                raise OutputError(f"--csv {csv_path} is where the JSONL records go too: give it a file of its own")
            table.hold()
        if ready is not None:
            ready()
        sink.start()
        if table is not None:
            table.start(sink.kept)

        def write(rec: dict[str, Any]) -> None:
            sink.write(rec)
            if table is not None:
                table.write(rec)

        yield write


def _stat(target: Path | int) -> os.stat_result | None:
    with contextlib.suppress(OSError):
        return os.stat(target)
    return None


def _same_target(out: Path | None, csv_path: Path) -> bool:
    """Whether the CSV would go where the JSONL records go (`out`, else stdout); /dev/null takes both."""
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):  # stdout captured (tests)
        ids = [(st.st_dev, st.st_ino) if st else None for st in
               (_stat(out if out is not None else sys.stdout.fileno()), _stat(csv_path), _stat(os.devnull))]
        return ids[0] is not None and ids[0] == ids[1] != ids[2]
    return False
