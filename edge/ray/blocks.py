"""The output folder of `sixview scan --ray`: per-block JSONL files and the manifest that says
which blocks are finished, so that `--resume` does only what is missing.

    DIR/manifest.jsonl       line 1: the scan (format, images, block size, the listing's digest,
                             the options that shape the records); then one line per finished block:
                             {"block": 42, "file": "block-000042.jsonl", "images": 1000, "errors": 3}
    DIR/block-000042.jsonl   the records of images 42*B .. 43*B-1 of the listing, in listing order

A block file is written whole (`edge.atomic`: a hidden `.block-000042.jsonl.<random>.tmp`, then
renamed) before its manifest line is appended, so a line always means a complete file; a block without
its line is done again. Block files are listed as `block-*`, never the hidden temporary files, which
are removed when the folder is opened (a killed run's). The manifest is opened like a results file
(`edge.sinks.open_output`): locked against a second run, and an existing one is kept only with
`--resume` and replaced only with `--overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..atomic import atomic_write
from ..sinks import CsvSink, OutputError, empty, open_output

if TYPE_CHECKING:
    from ..scan import Summary

FORMAT = 1
MANIFEST = "manifest.jsonl"


def block_name(block: int) -> str:
    """The file name of a block's records."""
    return f"block-{block:06d}.jsonl"


class RunFolder:
    """The blocks and manifest of one scan. `header` describes the scan; with `resume`, an existing
    manifest must describe the same scan (else OutputError), and its finished blocks are kept."""

    def __init__(self, path: Path | str, header: dict[str, Any], *, resume: bool = False,
                 overwrite: bool = False):
        self.path, self.header = Path(path), {"format": FORMAT, **header}
        self._resume, self._overwrite = resume, overwrite
        self._fh: IO[bytes] | None = None
        self._fresh = False  # started here: removed again if no block gets done (a run stopped at its start)
        self.done: dict[int, dict[str, Any]] = {}  # block -> its manifest line

    def __enter__(self) -> RunFolder:
        manifest = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"cannot write {self.path}: not a folder")
        self._fh = open_output(manifest, append=self._resume, overwrite=self._overwrite)
        try:
            for stale in self.path.glob(".block-*.tmp"):  # a block a killed run was writing (the lock is ours)
                with contextlib.suppress(OSError):
                    stale.unlink()
            if self._resume and os.fstat(self._fh.fileno()).st_size:
                self._read_manifest(manifest)
            else:
                for stale in self.path.glob("block-*.jsonl"):  # of a scan being replaced
                    stale.unlink()
                self._append(self.header)
                self._fresh = True
        except BaseException:
            self._fh.close()
            raise
        return self

    def _read_manifest(self, manifest: Path) -> None:
        lines = []
        for raw in manifest.read_bytes().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by an interruption
                lines.append(json.loads(raw))
        old = lines[0] if lines and "format" in lines[0] else {}
        differ = [k for k in self.header if old.get(k) != self.header[k]]
        if differ:
            raise OutputError(f"{self.path} holds another scan ({', '.join(differ)} differ): "
                              "--overwrite to replace it, or choose another --ray-dir")
        for line in lines[1:]:
            if isinstance(line.get("block"), int) and (self.path / str(line.get("file"))).is_file():
                self.done[line["block"]] = line
        if not manifest.read_bytes().endswith(b"\n"):  # finish a cut line, so the next one stands alone
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        assert self._fh is not None
        try:
            self._fh.write(data)
            self._fh.flush()
        except OSError as e:
            raise OutputError(f"cannot write {self.path / MANIFEST}: {e.strerror or e}") from None

    def _append(self, entry: dict[str, Any]) -> None:
        self._write((json.dumps(entry) + "\n").encode())

    def write_block(self, block: int, lines: list[bytes], errors: int) -> None:
        """Write a finished block's records (JSONL lines in listing order), then record it."""
        name = block_name(block)
        try:
            with atomic_write(self.path / name, binary=True) as fh:  # a hidden .NAME.<random>.tmp until whole
                fh.writelines(lines)
        except OSError as e:
            raise OutputError(f"cannot write {self.path / name}: {e.strerror or e}") from None
        entry = {"block": block, "file": name, "images": len(lines), "errors": errors}
        self._append(entry)
        self.done[block] = entry

    def lines(self, blocks: int) -> Iterator[bytes]:
        """Every record of blocks 0 .. blocks-1, in listing order (all must be done)."""
        for b in range(blocks):
            with open(self.path / self.done[b]["file"], "rb") as fh:
                yield from fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                if self._fresh and not self.done:  # nothing to resume: the next run starts without a flag
                    (self.path / MANIFEST).unlink()
                self._fh.close()


class Gather:
    """The driver's side of the output: records gathered by block, each block written once whole
    (and counted in `summary`)."""

    def __init__(self, folder: RunFolder, images: int, block_size: int, summary: Summary):
        self.folder, self.images, self.size, self.summary = folder, images, block_size, summary
        self.partial: dict[int, dict[int, bytes]] = {}

    def expected(self, block: int) -> int:
        return min(self.size, self.images - block * self.size)

    def add(self, index: int, line: bytes) -> None:
        block = index // self.size
        if block in self.folder.done:  # a retried task's second answer
            return
        got = self.partial.setdefault(block, {})
        if index in got:
            return
        got[index] = line
        if len(got) == self.expected(block):
            recs = [json.loads(got[i]) for i in sorted(got)]
            self.folder.write_block(block, [got[i] for i in sorted(got)], sum(r["error"] is not None for r in recs))
            for r in recs:
                self.summary.add(r)
            del self.partial[block]


def merge_blocks(folder: RunFolder, blocks: int, sink: Any, table: CsvSink | None, name: str) -> None:
    """Every block's records, in listing order, into --out (or stdout) and the CSV."""
    target = sink if sink is not None else sys.stdout.buffer
    try:
        if sink is not None:
            empty(sink, name)  # a resumed or repeated merge writes the whole file again (a device: as it is)
        for line in folder.lines(blocks):
            target.write(line)
            if table is not None:
                table.write(json.loads(line))
        target.flush()
    except OSError as e:
        raise OutputError(f"cannot write {name}: {e.strerror or e}") from None
