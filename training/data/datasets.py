"""Labelled image sets on disk: CIFAR-10 pickles, image-folder trees, labels CSVs.

A `DataSource` names its classes and splits and yields `Record`s (an id, the
label names, and a reader returning file bytes or a decoded uint8 array);
`training.data.cache` turns those into memory-mapped arrays. `open_source` picks the
reader from what a path holds:

- CIFAR-10 pickled: `cifar-10-python.tar.gz`, or the `cifar-10-batches-py/`
  folder (or a folder holding it); splits `train` (data_batch_1..5), `test`.
- image folders: `ROOT/{train,val,test}/<class>/*` (or `ROOT/<class>/*`, split
  `all`); a `.tar.gz` of such a tree is extracted once into the cache folder.
- labels CSV: `labels.csv` (or its folder) with columns `path,labels`, labels
  `|`-separated, paths relative to the CSV; split `all`. An optional
  `classes.txt` beside it declares the vocabulary (one name per line); a label
  outside it is an error (`strict`), or kept for the caller to judge.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.inputs import file_sha256
from training.data.archives import extract_archive, tar_is_cifar_pickle
from training.data.safe_pickle import read_cifar_batch, read_cifar_meta
from training.errors import DataError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SPLIT_DIRS = ("train", "val", "test")
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def norm_class(name: str) -> str:
    """Canonical class name: stripped, lower case."""
    return name.strip().lower()


@dataclass(frozen=True)
class Record:
    """One image of a split: its id, label names, a reader for its content, and its file if it has one."""

    id: str
    labels: tuple[str, ...]
    read: Callable[[], bytes | np.ndarray]
    path: Path | None = None


class DataSource(ABC):
    """A labelled image set: ordered class names, split names, records per split."""

    kind: str = ""
    declared: bool = True  # the class list is declared (folders, metadata, classes.txt), not inferred from labels

    def __init__(self, path: Path, classes: list[str], splits: list[str]) -> None:
        self.path = path
        self.classes = classes
        self.splits = splits

    @abstractmethod
    def records(self, split: str) -> Iterator[Record]:
        """Yield the records of `split` in a stable order."""

    @abstractmethod
    def digest(self) -> str:
        """Hex digest that changes whenever the source's content may have changed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, classes={len(self.classes)}, splits={self.splits})"


def _stat_digest(files: list[Path], root: Path, extra: bytes = b"") -> str:
    h = hashlib.sha256(extra)
    for f in files:
        try:
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f.relative_to(root)}\0missing\n".encode())
    return h.hexdigest()


def _is_tar(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar")))


class CifarPickleSource(DataSource):
    """CIFAR-10 in the official pickled format (archive or extracted folder)."""

    kind = "cifar-pickle"

    def __init__(self, path: Path) -> None:
        self._dir: Path | None = None
        self._members: dict[str, str] = {}
        if path.is_dir():
            d = path if (path / "data_batch_1").exists() else path / "cifar-10-batches-py"
            self._dir = d
            meta = d / "batches.meta"
            classes = read_cifar_meta(meta.read_bytes()) if meta.exists() else list(CIFAR10_CLASSES)
        else:
            with tarfile.open(path) as tf:
                for m in tf.getmembers():
                    if m.isfile():
                        self._members[Path(m.name).name] = m.name
            meta = self._read("batches.meta", path, optional=True)
            classes = read_cifar_meta(meta) if meta else list(CIFAR10_CLASSES)
        splits = [s for s, names in CIFAR_BATCHES.items() if self._has(names[0])]
        if "train" not in splits and "test" not in splits:
            raise DataError(f"{path}: no CIFAR-10 batches (data_batch_1..5, test_batch) found")
        super().__init__(path, [norm_class(c) for c in classes], splits)

    def _has(self, name: str) -> bool:
        return (self._dir / name).exists() if self._dir else name in self._members

    def _read(self, name: str, archive: Path | None = None, optional: bool = False) -> bytes | None:
        if self._dir is not None:
            return (self._dir / name).read_bytes()
        if name not in self._members:
            if optional:
                return None
            raise DataError(f"{self.path}: missing {name}")
        with tarfile.open(archive or self.path) as tf:
            f = tf.extractfile(self._members[name])
            assert f is not None
            return f.read()

    def records(self, split: str) -> Iterator[Record]:
        """Yield one record per image, reading each batch once."""
        for batch in CIFAR_BATCHES[split]:
            if not self._has(batch):
                continue
            images, labels, names = read_cifar_batch(self._read(batch), where=batch)
            for i, (lab, name) in enumerate(zip(labels, names, strict=True)):
                if not 0 <= lab < len(self.classes):
                    raise DataError(f"{batch}: label {lab} outside the {len(self.classes)} classes")
                img = images[i]
                yield Record(f"{batch}/{i}:{name}", (self.classes[lab],), lambda img=img: img)

    def digest(self) -> str:
        """Archive hash, or names/sizes/mtimes of the batch files."""
        if self._dir is None:
            return file_sha256(self.path)
        return _stat_digest(sorted(self._dir.iterdir()), self._dir)


def _files_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderSource(DataSource):
    """Image-folder tree: `ROOT/<split>/<class>/*` or `ROOT/<class>/*`."""

    kind = "folder"

    def __init__(self, path: Path) -> None:
        split_dirs = {s: path / s for s in SPLIT_DIRS if (path / s).is_dir()}
        if not split_dirs:
            split_dirs = {"all": path}
        self._split_dirs = split_dirs
        classes = sorted({norm_class(c.name) for d in split_dirs.values() for c in _class_dirs(d)})
        if not classes:
            raise DataError(f"{path}: no class folders (expected {path}/train/<class>/ or {path}/<class>/)")
        super().__init__(path, classes, list(split_dirs))

    def _files(self, split: str) -> list[tuple[Path, str]]:
        out = []
        for c in _class_dirs(self._split_dirs[split]):
            out += [(f, norm_class(c.name)) for f in _files_in(c)]
        return out

    def records(self, split: str) -> Iterator[Record]:
        """Yield one record per file (decoding happens in the cache)."""
        for f, c in self._files(split):
            yield Record(str(f.relative_to(self.path)), (c,), f.read_bytes, f)

    def digest(self) -> str:
        """Digest of every file's relative path, size and mtime."""
        files = [f for s in self.splits for f, _ in self._files(s)]
        return _stat_digest(files, self.path)


def read_labels_csv(csv_path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Rows of a `path,labels` CSV: (relative path, label names); `|` separates labels. A UTF-8 byte
    order mark (Excel's "CSV UTF-8") is skipped; an image listed on two rows (however its path is
    spelled: `a.jpg`, `./a.jpg`) is refused, naming both lines, since it would count twice."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
                raise DataError(f"{csv_path}: needs the columns 'path,labels', has {reader.fieldnames}")
            rows, first = [], {}
            for row in reader:
                rel = (row["path"] or "").strip()
                same = first.setdefault(os.path.normpath(rel), reader.line_num)
                if same != reader.line_num:
                    raise DataError(f"{csv_path}: line {reader.line_num} lists {rel} again (first on line {same}): "
                                    "list each image once, its labels '|'-separated")
                labels = tuple(norm_class(x) for x in (row["labels"] or "").split("|") if x.strip())
                rows.append((rel, labels))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read labels CSV ({e})") from None


class CsvSource(DataSource):
    """Multi-label set described by a `path,labels` CSV (split `all`).

    With `classes.txt`, a label it does not list raises DataError when `strict`;
    otherwise the record keeps it and `undeclared` names it (for the caller to judge).
    """

    kind = "csv"

    def __init__(self, csv_path: Path, strict: bool = True) -> None:
        self.csv_path = csv_path
        self.rows = read_labels_csv(csv_path)
        vocab = csv_path.parent / "classes.txt"
        self.declared = vocab.exists()
        if self.declared:
            try:
                text = vocab.read_text(encoding="utf-8-sig")  # a byte order mark is no part of a name
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"{vocab}: cannot read ({e})") from None
            classes = [norm_class(x) for x in text.splitlines() if x.strip()]
        else:
            classes = sorted({c for _, labels in self.rows for c in labels})
        self.undeclared = sorted({c for _, labels in self.rows for c in labels} - set(classes))
        if self.undeclared and strict:
            raise DataError(f"{csv_path}: labels not in classes.txt: {self.undeclared}")
        super().__init__(csv_path.parent, classes, ["all"])

    def records(self, split: str) -> Iterator[Record]:
        """Yield one record per CSV row (a missing file fails when read)."""
        root = self.csv_path.parent
        for rel, labels in self.rows:
            yield Record(rel, labels, (root / rel).read_bytes, root / rel)

    def digest(self) -> str:
        """Digest of the CSV bytes plus every listed file's size and mtime."""
        root = self.csv_path.parent
        return _stat_digest([root / rel for rel, _ in self.rows], root, self.csv_path.read_bytes())


def _folder_root(d: Path) -> Path:
    """The folder holding train/test (or class folders), descending through lone wrappers."""
    cur = d
    for _ in range(4):
        if any((cur / s).is_dir() for s in SPLIT_DIRS):
            return cur
        subs = _class_dirs(cur)
        if len(subs) != 1:
            break
        cur = subs[0]
    return d


def open_source(path: str | Path, cache_root: Path | None = None, strict: bool = True) -> DataSource:
    """Open a data set, choosing the reader from what `path` holds (`strict`: see CsvSource)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data not found: {p}")
    try:
        if p.is_file():
            if p.suffix.lower() == ".csv":
                return CsvSource(p, strict)
            if _is_tar(p):
                if tar_is_cifar_pickle(p):
                    return CifarPickleSource(p)
                return FolderSource(_folder_root(extract_archive(p, cache_root)))
            raise DataError(f"{p}: not a data set (expected a folder, labels.csv or .tar.gz)")
        if (p / "labels.csv").is_file():
            return CsvSource(p / "labels.csv", strict)
        if (p / "data_batch_1").exists() or (p / "test_batch").exists() or (
                p / "cifar-10-batches-py").is_dir():
            return CifarPickleSource(p)
        return FolderSource(_folder_root(p))
    except tarfile.TarError as e:
        raise DataError(f"{p}: unreadable archive ({e})") from None
    except PermissionError as e:
        raise DataError(f"{p}: {e.strerror}") from None
