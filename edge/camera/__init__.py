"""The live loop: newest frame -> six-view verdict -> records, window, recording.

Capture runs in `FrameSource`'s thread; inference, drawing and the window run
here, on the calling (main) thread, as GUI toolkits require. Key handling is a
pure function (`handle_key`) so it can be tested without a window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..decode import Decoded
from ..display import Display, VideoRecorder, save_snapshot
from ..draw import draw_banner, draw_verdict, status_text
from ..engine import ROUTINGS, Engine, Verdict
from ..errors import per_image
from ..merge import ScoreHook, ScoreSmoother
from ..records import record
from ..sources import Frame, FrameSource
from ..stats import summarize

MAX_CONSECUTIVE_FAILURES = 30  # a frame error that repeats this often is not transient: stop
PAUSED = "PAUSED (space to resume)"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- keys ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LoopState:
    """What the keys control: the frames' routing and tiling, pausing, and whether the views
    that won nothing are drawn (faint) or only the winners."""

    routing: str = "auto"
    tiling: bool = True
    paused: bool = False
    all_views: bool = False


KEYS = {ord("q"): "quit", 27: "quit", ord("e"): "engine", ord("t"): "tiling",
        ord("s"): "snapshot", ord(" "): "pause", ord("v"): "views"}
KEY_HELP = "q/Esc quit, e engine, t tiling, v all views, s snapshot, space pause"


def handle_key(state: LoopState, key: int) -> tuple[LoopState, str | None]:
    """Apply a key code (as cv2.waitKey returns it; -1: none) to the state.

    Returns the new state and the action taken: quit, engine (next routing),
    tiling, snapshot, pause, views, or None for no key or an unbound one.
    """
    if key < 0:
        return state, None
    action = KEYS.get(ord(chr(key & 0xFF).lower()))
    if action == "engine":
        state = replace(state, routing=ROUTINGS[(ROUTINGS.index(state.routing) + 1) % len(ROUTINGS)])
    elif action == "tiling":
        state = replace(state, tiling=not state.tiling)
    elif action == "pause":
        state = replace(state, paused=not state.paused)
    elif action == "views":
        state = replace(state, all_views=not state.all_views)
    return state, action


# -- the loop ------------------------------------------------------------------------
@dataclass
class CameraSummary:
    """What a run did: counts and glass-to-verdict latency."""

    processed: int = 0
    failed: int = 0
    captured: int = 0
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
        """0 ok, 1 source lost (not recovered) or frames failed."""
        return 1 if self.error or self.failed else 0

    def latency(self) -> dict[str, float]:
        """Glass-to-verdict latency statistics in ms (empty if nothing was processed)."""
        return summarize(self.latencies_ms) if self.latencies_ms else {}

    def text(self) -> str:
        """A human summary (two or three lines)."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        lines = [f"camera: {self.captured} frames captured, {self.processed} processed, {self.dropped} dropped, "
                 f"{self.failed} failed, {self.reconnects} reconnects in {self.seconds:.1f} s "
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
        verdict, error = per_image(_classify_frame, self.engine, frame, self.state, self.hook)
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


def _classify_frame(engine: Engine, frame: Frame, state: LoopState, hook: ScoreHook | None) -> Verdict:
    """One frame through the engine's per-frame path, routed and tiled as the keys say."""
    h, w = frame.image.shape[:2]
    prepared = engine.prepare(Decoded(frame.image, w, h), routing=state.routing, tiling=state.tiling,
                              timings_ms={"decode": frame.read_ms})
    return engine.classify([prepared], hook)[0]


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
