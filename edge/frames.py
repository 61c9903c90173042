"""The newest-frame reader: a thread reads an opened source (`edge/sources.py`) and hands the
consumer only the newest frame, so a slow model sees the present, not a queue (Ultralytics'
stream loader does the same).

Video files are read frame by frame by default (the reader waits for the consumer, nothing is
dropped); with `realtime` they play at their own frame rate and drop frames like a camera.
A lost camera or stream is reopened with bounded back-off (`edge/reconnect.py`). `pause()`
stops a file where it is (the reader waits until `resume()`); a camera or stream cannot wait,
so it keeps being read and its newest frame kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .reconnect import Reconnect, backoff_delays
from .sources import Capture, Opener, SourceSpec, open_error, try_open

MAX_DRAIN = 8  # frames grabbed at most when draining a live source's buffer on open
MAX_SKIPS = 8  # unreadable frames of a video file skipped in a row before the rest counts as lost


@dataclass
class Frame:
    """A captured frame: its index (position in the stream), capture times and read cost."""

    index: int
    image: np.ndarray
    timestamp: float  # epoch seconds, for records
    t_capture: float  # time.perf_counter(), for latency
    read_ms: float


class FrameSource:
    """A source read by a background thread that keeps only the newest frame.

    `read()` returns the next frame to process, or None on timeout or when the
    source is finished (`finished`); `error` then says why, if it failed.
    """

    def __init__(self, spec: SourceSpec, *, realtime: bool = False, loop: bool = False,
                 backoff: Sequence[float] = backoff_delays(4), opener: Opener | None = None,
                 log: Callable[[str], None] = print):
        self.spec, self.loop, self.log = spec, loop and not spec.live, log
        self.keep_latest = spec.live or realtime  # else: every frame, the reader waits for the consumer
        self._opener = opener
        self.reconnect = Reconnect(spec, backoff, self._open, log)
        self.captured = self.dropped = self.lost = 0  # lost: frames of a video file that could not be read
        self._skips, self._skip_to = 0, 0  # unreadable frames skipped in a row, and the last frame skipped to
        self.error: str | None = None
        self.fps = 0.0  # the source's nominal rate (0 if unknown)
        self.size = (0, 0)  # (width, height) as the source reports it (0 if unknown)
        self._cap: Capture | None = None
        self._slot: Frame | None = None
        self._done = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused_at: float | None = None  # perf_counter() when a file was paused
        self._rate_t: float | None = None
        self.measured_fps = 0.0  # frames per second actually captured (smoothed)

    @property
    def reconnects(self) -> int:
        """How many times a lost source came back."""
        return self.reconnect.reconnects

    # -- life cycle ----------------------------------------------------------------
    def open(self) -> FrameSource:
        """Open the source (raises SourceError) and read its nominal FPS and size."""
        cap = self._open()
        if cap is None:
            raise open_error(self.spec)
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 0.0
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
        return self

    def start(self) -> None:
        """Start the capture thread (opens the source first if needed)."""
        if self._cap is None:
            self.open()
        self._thread = threading.Thread(target=self._run, name="sixview-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the capture thread, then release the source."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # blocked inside a read: releasing now could crash the backend
                self.log(f"warning: {self.spec} did not stop within {timeout:g} s; leaving it to exit")
                return
        with self._cond:  # a frame left waiting: a live frame we did not get to, or a file's read-ahead
            if self._slot is not None:
                if self.keep_latest:
                    self.dropped += 1
                else:
                    self.captured -= 1
                self._slot = None
        self._release()

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self) -> None:
        """Stop reading a video file until `resume()`; a live source keeps draining (newest frame)."""
        with self._cond:
            if not self.spec.live and self._paused_at is None:
                self._paused_at = time.perf_counter()

    def resume(self) -> None:
        """Go on reading where the file was paused (a frame read before the pause counts as captured now)."""
        with self._cond:
            if self._paused_at is None:
                return
            now = time.perf_counter()
            if self._slot is not None:
                shift = now - max(self._paused_at, self._slot.t_capture)
                self._slot.t_capture += shift
                self._slot.timestamp += shift
            self._paused_at, self._rate_t = None, None
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        """True while a file is paused."""
        return self._paused_at is not None

    @property
    def finished(self) -> bool:
        """True once the source has ended (EOF, failure or stop) and no frame is waiting."""
        with self._cond:
            return self._done and self._slot is None

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet handed out; None on timeout or when finished."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._done, timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a file reader waiting for room
            return frame

    # -- the capture thread --------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.spec.live:
                self._drain()
            self._read_loop()
        except Exception as e:  # noqa: BLE001 (a backend error must end the run, not hang it)
            self.error = f"{self.spec}: capture failed ({e})"
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _read_loop(self) -> None:
        pacing = not self.spec.live and self.keep_latest
        period = 1.0 / (self.fps or 30.0)
        pos = 0  # position in the file, for pacing
        t0, first = time.perf_counter(), self.captured
        while not self._stop.is_set():
            if self._paused_at is not None:  # a paused file: read nothing, and let the clock wait too
                t_wait = time.perf_counter()
                with self._cond:
                    self._cond.wait_for(lambda: self._paused_at is None or self._stop.is_set())
                t0 += time.perf_counter() - t_wait
                continue
            if pacing:  # play the file at its own rate; skip frames we are late for
                due = t0 + pos * period
                now = time.perf_counter()
                if now < due:
                    if self._stop.wait(due - now):
                        return
                elif now > due + period and self._cap is not None and self._cap.grab():
                    pos += 1
                    self._count(dropped=True)
                    continue
            t_read = time.perf_counter()
            ok, img = self._cap.read() if self._cap is not None else (False, None)
            t_cap = time.perf_counter()
            if not ok or img is None:
                if not self.spec.live:
                    if self._unreadable(self.captured - first):
                        continue
                    if self.loop and self.captured and self._reopen_file():
                        pos, t0, first = 0, time.perf_counter(), self.captured
                        continue
                    return  # end of file
                if not self._recover():
                    return
                continue
            self.reconnect.frame_arrived()
            self._skips = 0
            # index: frames captured before this one (so dropped frames leave gaps)
            self._publish(Frame(self.captured, img, time.time(), t_cap, (t_cap - t_read) * 1e3))
            pos += 1

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self.keep_latest:
                if self._slot is not None:
                    self.dropped += 1
            else:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
                if self._stop.is_set():
                    return  # read ahead but never handed out: not counted
            self._count(dropped=False)
            self._slot = frame
            self._cond.notify_all()

    def _count(self, dropped: bool) -> None:
        self.captured += 1
        self.dropped += dropped
        now = time.perf_counter()
        if self._rate_t is not None and now > self._rate_t:
            inst = 1.0 / (now - self._rate_t)
            self.measured_fps = inst if not self.measured_fps else 0.9 * self.measured_fps + 0.1 * inst
        self._rate_t = now

    def _drain(self) -> None:
        """Skip frames the backend buffered before we started reading (they return at once);
        the first one that takes time to arrive is fresh and is handed out."""
        for i in range(MAX_DRAIN):
            t = time.perf_counter()
            if self._cap is None or not self._cap.grab():
                return  # the read loop will see the failure
            t_cap = time.perf_counter()
            if t_cap - t > 0.002 or i == MAX_DRAIN - 1:
                ok, img = self._cap.retrieve()
                if ok and img is not None:
                    self._publish(Frame(self.captured, img, time.time(), t_cap, (t_cap - t) * 1e3))
                return
            self._count(dropped=True)

    def _unreadable(self, got: int) -> bool:
        """A video file's read failed after `got` frames of this pass: before the file's own frame count,
        skip the frame (True: read on); after MAX_SKIPS in a row, or at its end, count what was not read
        as lost (`lost`, `error`) and end (False)."""
        cap = self._cap
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap is not None else 0
        if cap is None or got >= declared or self._stop.is_set():
            self._skip_to = 0
            return False
        target = max(int(cap.get(cv2.CAP_PROP_POS_FRAMES) or 0), self._skip_to) + 1  # forward only
        if self._skips < MAX_SKIPS and target < declared and cap.set(cv2.CAP_PROP_POS_FRAMES, target):
            self._skips, self._skip_to = self._skips + 1, target
            return True
        self._skips, self._skip_to = 0, 0
        self.lost += declared - got
        self.error = f"{self.spec}: {declared - got} of its {declared} frames could not be read (a damaged file?)"
        return False

    def _recover(self) -> bool:
        """Reopen a lost live source (`Reconnect`); False (and `error`) when out of attempts."""
        self._release()
        self._cap, error = self.reconnect.reopen(self._stop)
        self.error = error or self.error
        return self._cap is not None

    def _reopen_file(self) -> bool:
        self._release()
        self._cap = self._open()
        return self._cap is not None

    def _open(self) -> Capture | None:
        return try_open(self.spec, self._opener, self.log)

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def stats(self) -> dict[str, Any]:
        """Counters for the summary."""
        return {"captured": self.captured, "dropped": self.dropped, "lost": self.lost, "reconnects": self.reconnects,
                "source_fps": round(self.fps, 3)}
