"""The live loop: newest frame -> six-view verdict -> records, window, recording.

Each frame goes through the pipeline's own step (`edge/pipeline.py`: `load_one`, then
`run_loaded`), one newest frame at a time (never `stream`'s read-ahead); the source, the
sink and the UI are the camera's. Capture runs in `FrameSource`'s thread; inference,
drawing and the window run here, on the calling (main) thread, as GUI toolkits require.
The window's keys are `keys.py`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..decode import Decoded
from ..display import Display, VideoRecorder, save_snapshot
from ..draw import draw_banner, draw_verdict, status_text
from ..engine import Engine, Verdict
from ..errors import image_error, try_image
from ..frames import Frame, FrameSource
from ..merge import ScoreHook, ScoreSmoother
from ..pipeline import load_one, run_loaded
from ..records import record
from ..stats import summarize
from .keys import KEY_HELP, LoopState, handle_key

MAX_CONSECUTIVE_FAILURES = 30  # a frame error that repeats this often is not transient: stop
PAUSED = "PAUSED (space to resume)"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the loop ------------------------------------------------------------------------
@dataclass
class CameraSummary:
    """What a run did: counts and glass-to-verdict latency."""

    processed: int = 0
    failed: int = 0
    captured: int = 0
    lost: int = 0  # frames of a video file that could not be read
    dropped: int = 0
    reconnects: int = 0
    source_fps: float = 0.0
    seconds: float = 0.0
    warmup_ms: float = 0.0
    interrupted: bool = False
    error: str | None = None
    latencies_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 ok, 1 source lost (not recovered), frames failed or a file's frames could not be read."""
        return 1 if self.error or self.failed or self.lost else 0

    def latency(self) -> dict[str, float]:
        """Glass-to-verdict latency statistics in ms (empty if nothing was processed)."""
        return summarize(self.latencies_ms) if self.latencies_ms else {}

    def text(self) -> str:
        """A human summary (two or three lines)."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        lines = [f"camera: {self.captured} frames captured, {self.processed} processed, {self.dropped} dropped, "
                 f"{self.failed} failed, {f'{self.lost} lost (unreadable), ' if self.lost else ''}"
                 f"{self.reconnects} reconnects in {self.seconds:.1f} s "
                 f"({rate:.1f} fps processed; source {self.source_fps:.1f} fps; warm-up {self.warmup_ms:.0f} ms)"]
        lat = self.latency()
        if lat:
            lines.append(f"latency (capture to verdict): mean {lat['mean']:.1f} ms, p50 {lat['p50']:.1f} ms, "
                         f"p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms; "
                         f"inference mean {float(np.mean(self.infer_ms)):.1f} ms")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)


def warm_up(engine: Engine, width: int, height: int) -> float:
    """Open the model this frame size routes to and run it once; ms taken (0 if size unknown)."""
    if width <= 0 or height <= 0:
        return 0.0
    t0 = time.perf_counter()
    engine.classify_image(Decoded(np.zeros((height, width, 3), np.uint8), width, height))
    return (time.perf_counter() - t0) * 1e3


@dataclass
class _Loop:
    """The loop's state between frames: keys, smoothing, the last frame shown, rates."""

    source: FrameSource
    engine: Engine
    display: Display | None
    recorder: VideoRecorder | None
    smooth: int
    log: Callable[[str], None]
    summary: CameraSummary = field(default_factory=CameraSummary)
    state: LoopState = field(default_factory=LoopState)
    last: tuple[Frame, np.ndarray | None, dict[str, Any]] | None = None
    shown: tuple[Verdict, str] | None = None  # the last frame's verdict and status, to redraw it while paused
    inf_fps: float = 0.0
    t_prev: float | None = None
    streak: int = 0

    def __post_init__(self) -> None:
        self.smoother = ScoreSmoother(self.smooth)
        self.hook: ScoreHook | None = self.smoother if self.smooth > 1 else None
        self.run = functools.partial(self.engine.classify, hook=self.hook)

    def keys(self, snapshots: Path) -> str | None:
        """Apply the window's key (if any): "quit" to stop, "paused" while paused, else None."""
        if self.display is None:
            return None
        self.state, action = handle_key(self.state, self.display.poll(30 if self.state.paused else 1))
        if action == "quit" or self.display.closed():
            return "quit"
        if action in ("engine", "tiling"):
            self.smoother.reset()
            self.log(f"engine {self.state.routing}, tiling {'on' if self.state.tiling else 'off'}")
        if action == "views":
            self.log(f"views: {'all' if self.state.all_views else 'winners only'}")
        if action == "pause":
            (self.source.pause if self.state.paused else self.source.resume)()
        if action in ("pause", "views") and self.state.paused and self.last is not None and self.shown is not None:
            annotated = draw_verdict(self.last[0].image.copy(), self.shown[0], self.shown[1], self.state.all_views)
            self.last = (self.last[0], annotated, self.last[2])
            self.display.show(draw_banner(annotated.copy(), PAUSED))
        if action == "snapshot" and self.last is not None:
            self.log(f"snapshot: {save_snapshot(snapshots, *self.last)}")
        return "paused" if self.state.paused else None

    def frame(self, frame: Frame) -> dict[str, Any]:
        """Classify one frame and count it: its record."""
        h, w = frame.image.shape[:2]
        loaded = load_one(frame, _pixels, self.engine.renderer, routing=self.state.routing, tiling=self.state.tiling)
        verdicts, exc = try_image(run_loaded, [loaded], self.run)  # a failed run is this frame's error too
        verdict = (verdicts or [None])[0]
        error = loaded.error or (image_error(exc) if exc is not None else None)
        t_done = time.perf_counter()
        latency = (t_done - frame.t_capture) * 1e3
        extra = {"smooth": self.smooth} if self.smooth > 1 else {}
        rec = record("frame", frame.index, verdict, width=w, height=h, error=error,
                     timings_ms={"decode": frame.read_ms}, timestamp=round(frame.timestamp, 6),
                     latency_ms=round(latency, 3), **extra)
        self.summary.processed += 1
        if verdict is None:
            self.summary.failed += 1
            self.streak += 1
            self.log(f"frame {frame.index}: {error}")
            if self.streak >= MAX_CONSECUTIVE_FAILURES:
                self.summary.error = f"{self.streak} frames in a row failed; stopping ({error})"
        else:
            self.streak = 0
            self.summary.latencies_ms.append(latency)
            self.summary.infer_ms.append(verdict.timings_ms.get("infer", 0.0))
        if self.t_prev is not None and t_done > self.t_prev:
            inst = 1.0 / (t_done - self.t_prev)
            self.inf_fps = inst if not self.inf_fps else 0.9 * self.inf_fps + 0.1 * inst
        self.t_prev = t_done
        self.show(frame, verdict, rec, latency)
        return rec

    def show(self, frame: Frame, verdict: Verdict | None, rec: dict[str, Any], latency: float) -> None:
        """Draw the verdict on the frame for the window and the recording; keep it for snapshots."""
        annotated = None
        if verdict is not None and (self.display is not None or self.recorder is not None):
            status = status_text(self.state.routing, verdict, self.source.measured_fps, self.inf_fps, latency,
                                 self.smooth)
            annotated = draw_verdict(frame.image.copy(), verdict, status, self.state.all_views)
            self.shown = (verdict, status)
            if self.display is not None:
                self.display.show(annotated)
            if self.recorder is not None:
                self.recorder.write(annotated, frame.index)
        self.last = (frame, annotated, rec)
        if verdict is None:
            self.shown = None


def run_camera(source: FrameSource, engine: Engine, *, write: Callable[[dict[str, Any]], None] | None = None,
               display: Display | None = None, recorder: VideoRecorder | None = None,
               snapshots: Path = Path("snapshots"), max_frames: int | None = None,
               duration: float | None = None, smooth: int = 1,
               log: Callable[[str], None] = _stderr) -> CameraSummary:
    """Run the loop until the source ends, a limit is reached, q/Esc, a closed window,
    Ctrl-C or SIGTERM; always stops the capture thread and closes the outputs."""
    loop = _Loop(source, engine, display, recorder, smooth, log, state=LoopState(engine.routing, engine.tiling))
    summary, in_hand = loop.summary, False
    restore = _sigterm_as_interrupt()
    t_start = time.perf_counter()
    try:
        if display is not None:
            log(f"window keys: {KEY_HELP}")
        summary.warmup_ms = warm_up(engine, *source.size)  # model load + first run, before frames queue up
        t_start = time.perf_counter()
        source.start()
        while not (max_frames and summary.processed >= max_frames):
            if duration and time.perf_counter() - t_start >= duration:
                break
            key = loop.keys(snapshots)
            if key == "quit":
                break
            if key == "paused":
                continue
            frame = source.read(timeout=0.05 if display is not None else 0.5)
            if frame is None:
                if source.finished:
                    break
                continue
            in_hand = True  # captured, not yet processed: dropped if the run stops now
            rec = loop.frame(frame)
            in_hand = False
            if summary.error:  # too many failures in a row
                break
            if write is not None:
                write(rec)
    except KeyboardInterrupt:
        summary.interrupted = True
    except BrokenPipeError:  # stdout closed by a reader (e.g. `| head`): stop quietly
        summary.interrupted = True
        _silence_stdout()
    finally:
        summary.seconds = time.perf_counter() - t_start
        source.stop()
        if recorder is not None:
            recorder.close()
        if display is not None:
            display.close()
        restore()
    for k, v in source.stats().items():
        setattr(summary, k, v)
    summary.dropped += in_hand
    summary.error = summary.error or source.error
    return summary


def _pixels(frame: Frame) -> Decoded:
    """A frame's pixels for the pipeline's loader: already decoded (BGR), no copy."""
    h, w = frame.image.shape[:2]
    return Decoded(frame.image, w, h)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM (docker stop, systemd) end the loop like Ctrl-C; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
