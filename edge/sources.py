"""Frame sources, parsed and opened: camera index, device path, video file, stream URL or GStreamer pipeline.

`parse_source` classifies a `--source`; `open_capture` opens it with the right OpenCV backend
(live sources with a one-frame buffer, network streams with bounded waits) and `try_open`
turns a source that does not open into None and one line of log. Reading the opened source
is `edge/frames.py` (the newest-frame reader thread); reopening a lost one, `edge/reconnect.py`.

Jetson CSI camera (needs an OpenCV built with GStreamer, e.g. JetPack's; the
pip wheels have none):

    nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1
    ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR
    ! appsink drop=true max-buffers=1
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .inputs import file_kind

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
OPEN_TIMEOUT_MS = 5000  # network streams: give up opening / reading after this long
READ_TIMEOUT_MS = 5000
Opener = Callable[["SourceSpec"], "Capture"]


class SourceError(RuntimeError):
    """A source that cannot be parsed or opened."""


class Capture(Protocol):
    """What we use of cv2.VideoCapture (tests inject fakes)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source`: kind is camera, device, file, stream or gstreamer."""

    kind: str
    target: int | str

    @property
    def live(self) -> bool:
        """Cameras and streams run on their own clock; files do not."""
        return self.kind != "file"

    def __str__(self) -> str:
        return {"camera": f"camera {self.target}", "device": f"device {self.target}",
                "file": f"video file {self.target}", "stream": f"stream {self.target}",
                "gstreamer": "GStreamer pipeline"}[self.kind]


def parse_source(text: str) -> SourceSpec:
    """Classify a `--source` string; a missing file or an unusable pipeline raises SourceError."""
    text = text.strip()
    if not text:
        raise SourceError("--source is empty")
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text))
    if "!" in text:  # GStreamer's element separator
        if not has_gstreamer():
            raise SourceError("this OpenCV build has no GStreamer support, needed for a pipeline source: "
                              "use an OpenCV built with -D WITH_GSTREAMER=ON (JetPack's is); "
                              "the pip wheels have none")
        return SourceSpec("gstreamer", text)
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() in STREAM_SCHEMES:
        return SourceSpec("stream", text)
    if text.startswith("/dev/"):
        return SourceSpec("device", text)
    try:
        kind = file_kind(os.stat(text).st_mode)
    except FileNotFoundError:
        raise SourceError(f"no such video file: {text}") from None
    except OSError as e:
        raise SourceError(f"cannot read {text}: {e.strerror or e}") from None
    if kind is not None:  # a named pipe would block the open forever; a folder holds no video
        raise SourceError(f"not a video file: {text} is {kind}")
    return SourceSpec("file", text)


def has_gstreamer() -> bool:
    """Whether this OpenCV can open GStreamer pipelines."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except AttributeError:  # very old OpenCV: read the build information instead
        return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))


def open_capture(spec: SourceSpec) -> Capture:
    """Open a source with the right backend; live sources get a one-frame buffer."""
    if spec.kind == "gstreamer":
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
    elif spec.kind == "stream":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
    else:
        cap = cv2.VideoCapture(spec.target)
    if spec.live and cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2 and some others honour it; the rest ignore it
    return cap


def try_open(spec: SourceSpec, opener: Opener | None = None, log: Callable[[str], None] = print) -> Capture | None:
    """The source opened (by `opener`, default `open_capture`), or None when it does not open
    (OpenCV's complaint, if any, logged in one line)."""
    try:
        cap = (opener or open_capture)(spec)
    except (cv2.error, OSError) as e:
        log(f"{spec}: {str(e).strip().splitlines()[-1]}")
        return None
    if cap is None or not cap.isOpened():
        if cap is not None:
            cap.release()
        return None
    return cap


def open_error(spec: SourceSpec) -> SourceError:
    """The error for a source that does not open, with the likely reasons for its kind."""
    hint = {"camera": " (not connected, in use by another program, or no permission)",
            "device": " (not connected, in use by another program, or no permission)",
            "file": " (not a video this OpenCV can decode)",
            "stream": f" (unreachable, or no answer within {OPEN_TIMEOUT_MS / 1000:g} s)",
            "gstreamer": " (check the pipeline with gst-launch-1.0)"}[spec.kind]
    return SourceError(f"cannot open {spec}{hint}")
