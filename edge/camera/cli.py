"""`sixview camera`: the live loop on a camera, video file, stream or GStreamer pipeline."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click

from ..display import DisplayError, RecordError, VideoRecorder, WindowDisplay
from ..errors import SETUP_ERRORS
from ..frames import FrameSource
from ..options import engine_options, make_engine, setup_error
from ..reconnect import backoff_delays
from ..sinks import JsonlSink
from ..sources import SourceError, parse_source
from . import run_camera


@click.command("camera")
@click.option("--source", default="0", show_default=True,
              help="Camera index, device path (/dev/video0), video file, rtsp:// or http(s):// URL, "
                   "or a GStreamer pipeline (anything containing '!').")
@click.option("--headless", is_flag=True, help="No window: one JSONL record per processed frame.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL records file (default: stdout with --headless, none with a window).")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty --out (without it, the run refuses).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N processed frames.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after S seconds.")
@click.option("--realtime", is_flag=True,
              help="Video files: play at the file's frame rate and drop the frames the model cannot keep "
                   "up with, as a camera does (default: process every frame).")
@click.option("--loop", is_flag=True, help="Video files: start again at the end.")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Average each class's score over the last K frames before deciding (1: off).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the annotated stream to this video (.mp4, .avi, ...).")
@click.option("--snapshots", type=click.Path(file_okay=False, path_type=Path), default=Path("snapshots"),
              show_default=True, help="Folder for snapshots (key s: PNG + JSON record).")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Reconnect attempts for a lost camera or stream (waits 0.5, 1, 2, 4, 4, ... s).")
@engine_options
def camera(source: str, headless: bool, out: Path | None, overwrite: bool, max_frames: int | None,
           duration: float | None, realtime: bool, loop: bool, smooth: int, record_path: Path | None, snapshots: Path,
           retries: int, **engine_opts) -> None:
    """Classify a live picture: six views of the newest frame, never a queue.

    Window keys: q/Esc quit, e cycle engine (auto/standard/hd), t toggle tiling,
    v show all six views (faint) or only the winning ones, s snapshot (PNG + JSON
    record), space pause (a video file waits). Exit code 0 when the run ends
    (source ended, limit, q, Ctrl-C), 1 when the source cannot be opened (a missing
    or undecodable file included) or was lost and not recovered, or frames failed;
    2 for a usage, model or output error.
    """
    if not source.strip():
        raise click.UsageError("--source is empty")
    try:
        spec = parse_source(source)
    except SourceError as e:  # a missing file, a pipeline this OpenCV cannot run: the source cannot be opened
        click.echo(f"sixview camera: {e}", err=True)
        sys.exit(1)
    if spec.live and (loop or realtime):
        click.echo(f"note: --loop/--realtime apply to video files; {spec} runs in real time anyway", err=True)
    engine = make_engine(**engine_opts)
    try:
        engine.check()  # models load (or fail) before the source opens or any output is touched
    except SETUP_ERRORS as e:
        raise setup_error(e) from None
    try:
        recorder = VideoRecorder(record_path, 0.0) if record_path else None
        display = None if headless else WindowDisplay()
    except (RecordError, DisplayError) as e:
        raise click.UsageError(str(e)) from None
    frames = FrameSource(spec, realtime=realtime, loop=loop, backoff=backoff_delays(retries),
                         log=lambda m: click.echo(m, err=True))
    try:
        frames.open()
    except SourceError as e:
        if display is not None:
            display.close()
        click.echo(f"sixview camera: {e}", err=True)
        sys.exit(1)
    if recorder is not None:
        recorder.fps = frames.fps or 30.0
    sink = JsonlSink(out, overwrite=overwrite) if (out or headless) else nullcontext(None)
    try:
        with sink as s:
            summary = run_camera(frames, engine, write=s.write if s is not None else None, display=display,
                                 recorder=recorder, snapshots=snapshots, max_frames=max_frames,
                                 duration=duration, smooth=smooth, log=lambda m: click.echo(m, err=True))
    except SETUP_ERRORS as e:
        raise setup_error(e) from None
    except RecordError as e:
        raise click.UsageError(str(e)) from None
    click.echo(summary.text(), err=True)
    if out:
        click.echo(f"records: {out}", err=True)
    if recorder is not None and recorder.written:
        click.echo(f"recording: {record_path} ({recorder.written} frames at {recorder.fps:g} fps)", err=True)
    sys.exit(summary.exit_code)
