"""Offline scans: the pipeline (`edge/pipeline.py`: loading in worker threads overlapping
inference) over files, one record per image, in input order (finding them: `edge/inputs.py`)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_write
from ..draw import draw_verdict
from ..engine import Engine, Verdict
from ..errors import PerInputError, per_image
from ..inputs import IMAGE_EXTENSIONS, file_kind, read_file
from ..pipeline import load_one, stream
from ..records import record
from ..sinks import OutputError


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


def scan(paths: list[str], engine: Engine, write: Callable[[dict[str, Any]], None],
         annotate_dir: Path | None = None, batch_images: int = 1, workers: int = 2,
         names: Mapping[str, str] | None = None) -> Summary:
    """Classify `paths`, calling `write(record)` once per image, in input order. Annotated copies
    go to `annotate_dir` under `names[path]` (the path relative to its scan root; default: its name)."""
    summary, written = Summary(), set()
    scanned = _identities(paths) if annotate_dir is not None else set()  # never replaced by a copy
    start = time.perf_counter()
    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=None if sys.stderr is not None else True)  # no bar on a closed stderr (`2>&-`)
    load = functools.partial(load_one, read=read_file, renderer=engine.renderer, keep_image=annotate_dir is not None)
    try:
        with contextlib.closing(stream(paths, load, engine.classify, batch_images, workers)) as results:
            for loaded, verdict in results:
                rec = record("path", loaded.key, verdict, timings_ms=loaded.timings_ms, error=loaded.error)
                if verdict is not None and annotate_dir is not None and loaded.prepared.decoded is not None:
                    name = (names or {}).get(loaded.key, os.path.basename(loaded.key))
                    dest = _unique(_annotated_name(annotate_dir / name), written)
                    _, rec["error"] = per_image(_annotate, loaded.prepared.decoded.bgr, verdict, dest, scanned)
                write(rec)
                summary.add(rec)
                bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def check_folder(folder: Path) -> None:
    """Make sure annotated copies can be written into `folder` (created if missing), else `OutputError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write annotated copies into {folder}: not a folder") from None
    except OSError as e:
        raise OutputError(f"cannot write annotated copies into {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write annotated copies into {folder}: permission denied")


class AnnotationFailed(PerInputError):
    """An annotated copy that cannot be written (that image's error; the scan goes on)."""

    code = "output_failed"


def _annotated_name(dest: Path) -> Path:
    """The copy's name: the image's, or + `.png` where OpenCV cannot write the format (`x.gif.png`)."""
    return dest if dest.suffix.lower() in IMAGE_EXTENSIONS - {".gif"} else dest.with_name(dest.name + ".png")


def _unique(dest: Path, written: set[Path]) -> Path:
    """`dest`, or `name~2.ext`, `name~3.ext`, ... when an earlier image of this scan took it (same names
    under two roots): no copy replaces another."""
    out, n = dest, 1
    while out in written:
        n += 1
        out = dest.with_name(f"{dest.stem}~{n}{dest.suffix}")
    written.add(out)
    return out


def _identities(paths: list[str]) -> set[tuple[int, int]]:
    out = set()
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            out.add((st.st_dev, st.st_ino))
    return out


def _annotate(bgr: np.ndarray, verdict: Verdict, dest: Path, scanned: set[tuple[int, int]]) -> None:
    """Write a copy with the verdict drawn on it into a new file that then takes the name: never
    opened for writing where it stands (a named pipe there would block), never half-written."""
    ok, buf = cv2.imencode(dest.suffix, draw_verdict(bgr.copy(), verdict))
    if not ok:
        raise AnnotationFailed(f"cannot write the annotated copy {dest}: OpenCV cannot encode {dest.suffix}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        st = os.stat(dest) if os.path.exists(dest) else None
        if st is not None and file_kind(st.st_mode) is not None:
            raise AnnotationFailed(f"cannot write the annotated copy {dest}: it is {file_kind(st.st_mode)}, "
                                   "not a regular file")
        if st is not None and (st.st_dev, st.st_ino) in scanned:  # --annotate into the scanned folder
            raise AnnotationFailed(f"cannot write the annotated copy {dest}: it is one of the scanned images")
        atomic_write(dest, buf.tobytes())  # Python's open, not OpenCV's: any file name the system allows
    except AnnotationFailed:
        raise
    except OSError as e:
        raise AnnotationFailed(f"cannot write the annotated copy {dest}: {e.strerror or e}") from None
