"""The camera's outputs: the window, the `--record` video and snapshots.

The window is an OpenCV HighGUI window (any GUI OpenCV: the pip `opencv-python` wheels
use Qt on Linux). It opens at the frame's size (at most `MAX_WINDOW`, same aspect ratio;
the user may resize it, the ratio is kept) with no toolbar, so the window is the frame.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .frames import Frame

MAX_PAD_SECONDS = 5.0  # --record repeats a frame for at most this long to fill a gap
RECORD_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
MAX_WINDOW = (1600, 900)  # a larger frame opens scaled down to fit this box
WINDOW_FLAGS = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF",
             "/usr/share/fonts/truetype/liberation", "/usr/local/share/fonts")
NO_GUI = ("this OpenCV has no GUI support (opencv-python-headless?): "
          "pip uninstall -y opencv-python-headless && pip install 'opencv-python>=4.9', or run with --headless")


class Display(Protocol):
    """A window (or a test double): show images, report keys and closing."""

    def show(self, img: np.ndarray) -> None: ...
    def poll(self, wait_ms: int) -> int: ...
    def closed(self) -> bool: ...
    def close(self) -> None: ...


class DisplayError(RuntimeError):
    """No window can be shown here."""


def window_size(width: int, height: int, limit: tuple[int, int] = MAX_WINDOW) -> tuple[int, int]:
    """The window's size on open: the frame's, scaled down (same ratio) to fit `limit`."""
    f = min(1.0, limit[0] / width, limit[1] / height)
    return max(1, round(width * f)), max(1, round(height * f))


def qt_font_dir(env: MutableMapping[str, str] = os.environ) -> str | None:
    """Point Qt at a system font folder when QT_QPA_FONTDIR is unset or names no folder.

    The pip `opencv-python` wheels set it, on import, to a `cv2/qt/fonts` they no longer ship, and Qt
    then warns "Cannot find font directory" at start. A folder that exists (the user's) is kept.
    Returns the folder set, or None."""
    current = env.get("QT_QPA_FONTDIR")
    if current and os.path.isdir(current):
        return None
    found = next((d for d in FONT_DIRS if glob.glob(os.path.join(d, "*.tt[fc]"))), None)
    if found is None:
        ttf = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
        found = os.path.dirname(ttf[0]) if ttf else None
    if found:
        env["QT_QPA_FONTDIR"] = found
    return found


class WindowDisplay:
    """An OpenCV HighGUI window, sized to the first frame shown."""

    def __init__(self, name: str = "sixview", limit: tuple[int, int] = MAX_WINDOW):
        gui = re.search(r"GUI:\s+(\S+)", cv2.getBuildInformation())
        if gui and gui.group(1).upper() == "NONE":
            raise DisplayError(NO_GUI)
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError("no display to open a window on ($DISPLAY is not set): run with --headless")
        if gui and gui.group(1).upper().startswith("QT"):
            qt_font_dir()
        try:
            cv2.namedWindow(name, WINDOW_FLAGS)
        except cv2.error:
            raise DisplayError(NO_GUI) from None
        self.name, self.limit, self._shown = name, limit, False

    def show(self, img: np.ndarray) -> None:
        """Show an image (the first one sizes the window)."""
        if not self._shown:
            with contextlib.suppress(cv2.error):
                cv2.resizeWindow(self.name, *window_size(img.shape[1], img.shape[0], self.limit))
        cv2.imshow(self.name, img)
        self._shown = True

    def poll(self, wait_ms: int) -> int:
        """Pump window events; the key pressed or -1."""
        return cv2.waitKey(max(1, wait_ms))

    def closed(self) -> bool:
        """True once the user closed the window."""
        try:
            return self._shown and cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        """Destroy the window."""
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)


class RecordError(RuntimeError):
    """--record cannot be written."""


class VideoRecorder:
    """Writes the annotated stream at the source's rate; a frame is repeated to cover
    the frames dropped after it, so the video keeps real time."""

    def __init__(self, path: Path | str, fps: float):
        self.path, self.fps = Path(path), fps if fps > 0 else 30.0
        if self.path.suffix.lower() not in RECORD_CODECS:
            raise RecordError(f"--record {self.path}: use one of {', '.join(RECORD_CODECS)}")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._next = 0  # source index the next written frame stands for
        self.written = 0

    def write(self, img: np.ndarray, index: int) -> None:
        """Write the frame for source index `index` (and repeats for skipped indices)."""
        if self._writer is None:
            self._size = (img.shape[1], img.shape[0])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*RECORD_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise RecordError(f"--record {self.path}: OpenCV cannot write this file")
            self._next = index
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        repeats = 1 + min(max(0, index - self._next), int(MAX_PAD_SECONDS * self.fps))
        for _ in range(repeats):
            self._writer.write(img)
        self.written += repeats
        self._next = index + 1

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def save_snapshot(folder: Path, frame: Frame, annotated: np.ndarray | None, rec: dict[str, Any]) -> Path:
    """Write the frame as PNG (and its annotated copy) plus its JSON record; return the PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(frame.timestamp))}_f{frame.index:06d}"
    png = stem.with_suffix(".png")
    if not cv2.imwrite(str(png), frame.image):
        raise OSError(f"cannot write {png}")
    if annotated is not None:
        cv2.imwrite(str(stem) + ".annotated.png", annotated)
    stem.with_suffix(".json").write_text(json.dumps({**rec, "snapshot": png.name}, indent=1), encoding="utf-8")
    return png
