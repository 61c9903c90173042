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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .decode import Decoded
from .display import Display, VideoRecorder, save_snapshot
from .draw import draw_banner, draw_verdict, status_text
from .engine import ROUTINGS, Engine, Verdict
from .errors import per_image
from .merge import ScoreHook
from .records import record
from .sources import Frame, FrameSource
from .stats import summarize

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


# -- temporal smoothing --------------------------------------------------------------
class ScoreSmoother:
    """A score hook for `Engine.classify`: each class's merged score averaged over the last k
    frames, so the decision is taken on the mean (k == 1: no smoothing)."""

    def __init__(self, k: int = 1):
        if k < 1:
            raise ValueError(f"--smooth must be >= 1, got {k}")
        self.k = k
        self._history: deque[np.ndarray] = deque(maxlen=k)
        self._role: str | None = None

    def reset(self) -> None:
        """Forget the history (routing or tiling changed)."""
        self._history.clear()

    def __call__(self, role: str, scores: list[float]) -> list[float]:
        """The mean of the last k frames' merged scores of the same model (history reset on a change)."""
        if role != self._role or (self._history and len(self._history[0]) != len(scores)):
            self.reset()
            self._role = role
        self._history.append(np.asarray(scores, np.float64))
        return np.mean(self._history, axis=0).tolist()


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


def run_camera(source: FrameSource, engine: Engine, *, write: Callable[[dict[str, Any]], None] | None = None,
               display: Display | None = None, recorder: VideoRecorder | None = None,
               snapshots: Path = Path("snapshots"), max_frames: int | None = None,
               duration: float | None = None, smooth: int = 1,
               log: Callable[[str], None] = _stderr) -> CameraSummary:
    """Run the loop until the source ends, a limit is reached, q/Esc, a closed window,
    Ctrl-C or SIGTERM; always stops the capture thread and closes the outputs."""
    summary = CameraSummary()
    state = LoopState(engine.routing, engine.tiling)
    smoother = ScoreSmoother(smooth)
    hook = smoother if smooth > 1 else None
    last: tuple[Frame, np.ndarray | None, dict[str, Any]] | None = None
    shown: tuple[Verdict, str] | None = None  # the last frame's verdict and status, to redraw it while paused
    inf_fps, t_prev, streak, in_hand = 0.0, None, 0, False
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
            if display is not None:
                state, action = handle_key(state, display.poll(30 if state.paused else 1))
                if action == "quit" or display.closed():
                    break
                if action in ("engine", "tiling"):
                    smoother.reset()
                    log(f"engine {state.routing}, tiling {'on' if state.tiling else 'off'}")
                if action == "views":
                    log(f"views: {'all' if state.all_views else 'winners only'}")
                if action == "pause":
                    (source.pause if state.paused else source.resume)()
                if action in ("pause", "views") and state.paused and last is not None and shown is not None:
                    annotated = draw_verdict(last[0].image.copy(), shown[0], shown[1], state.all_views)
                    last = (last[0], annotated, last[2])
                    display.show(draw_banner(annotated.copy(), PAUSED))
                if action == "snapshot" and last is not None:
                    log(f"snapshot: {save_snapshot(snapshots, *last)}")
                if state.paused:
                    continue
            frame = source.read(timeout=0.05 if display is not None else 0.5)
            if frame is None:
                if source.finished:
                    break
                continue
            in_hand = True  # captured, not yet processed: dropped if the run stops now
            h, w = frame.image.shape[:2]
            verdict, error = per_image(_classify_frame, engine, frame, state, hook)
            t_done = time.perf_counter()
            latency = (t_done - frame.t_capture) * 1e3
            extra = {"smooth": smooth} if smooth > 1 else {}
            rec = record("frame", frame.index, verdict, width=w, height=h, error=error,
                         timings_ms={"decode": frame.read_ms}, timestamp=round(frame.timestamp, 6),
                         latency_ms=round(latency, 3), **extra)
            summary.processed += 1
            in_hand = False
            if verdict is None:
                summary.failed += 1
                streak += 1
                log(f"frame {frame.index}: {error}")
                if streak >= MAX_CONSECUTIVE_FAILURES:
                    summary.error = f"{streak} frames in a row failed; stopping ({error})"
                    break
            else:
                streak = 0
                summary.latencies_ms.append(latency)
                summary.infer_ms.append(verdict.timings_ms.get("infer", 0.0))
            if t_prev is not None and t_done > t_prev:
                inst = 1.0 / (t_done - t_prev)
                inf_fps = inst if not inf_fps else 0.9 * inf_fps + 0.1 * inst
            t_prev = t_done
            if write is not None:
                write(rec)
            annotated = None
            if verdict is not None and (display is not None or recorder is not None):
                status = status_text(state.routing, verdict, source.measured_fps, inf_fps, latency, smooth)
                annotated = draw_verdict(frame.image.copy(), verdict, status, state.all_views)
                shown = (verdict, status)
                if display is not None:
                    display.show(annotated)
                if recorder is not None:
                    recorder.write(annotated, frame.index)
            last = (frame, annotated, rec)
            if verdict is None:
                shown = None
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
