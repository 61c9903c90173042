"""`sixview camera`: sources, the loop, keys, smoothing, outputs (synthetic video, toy models, no TF)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from convert.toy import save_colour_model  # noqa: E402
from edge import sources  # noqa: E402
from edge.camera import LoopState, ScoreSmoother, handle_key, run_camera  # noqa: E402
from edge.camera.cli import camera  # noqa: E402
from edge.decode import Decoded  # noqa: E402
from edge.draw import MUTED, Style, class_colour, draw_verdict, none_of  # noqa: E402
from edge.engine import Engine  # noqa: E402
from edge.frames import FrameSource  # noqa: E402
from edge.reconnect import backoff_delays  # noqa: E402
from edge.rule import DecisionRule  # noqa: E402
from edge.sources import SourceError, SourceSpec, parse_source  # noqa: E402

W, H = 128, 96  # short side > 64: `--engine auto` routes it to HD
SQ_W, SQ_H = 32, 24
BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}
CORNERS = {"top_left": (0, 0), "top_right": (W - SQ_W, 0), "bottom_left": (0, H - SQ_H),
           "bottom_right": (W - SQ_W, H - SQ_H), "centre": ((W - SQ_W) // 2, (H - SQ_H) // 2)}
# scenes the squares move through; frame i shows SCENES[(i // 3) % len(SCENES)]
SCENES = [{"red": "top_left"}, {"red": "top_right", "green": "bottom_left"}, {"blue": "bottom_right"},
          {}, {"green": "centre"}, {"blue": "top_left", "red": "bottom_right"}]


def scene(i: int) -> dict[str, str]:
    return SCENES[(i // 3) % len(SCENES)]


def make_frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    for colour, where in scene(i).items():
        x, y = CORNERS[where]
        img[y:y + SQ_H, x:x + SQ_W] = BGR[colour]
    return img


def make_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """An MJPG AVI (intra-only: every frame decodes exactly, counts are exact)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(make_frame(i))
    writer.release()
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    save_colour_model(d / "standard.onnx", role="standard")
    save_colour_model(d / "hd.onnx", role="hd", input_size=(64, 64))
    return d


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("slow_models")
    save_colour_model(d / "standard.onnx", role="standard")
    save_colour_model(d / "hd.onnx", role="hd", input_size=(64, 64), delay_ms=100)
    return d


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "moving.avi", 24)


def run_cli(*args: str):
    return CliRunner().invoke(camera, [str(a) for a in args], catch_exceptions=False)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- sources -------------------------------------------------------------------------
def test_parse_source(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "clip.avi", 2)
    assert parse_source("0") == SourceSpec("camera", 0)
    assert parse_source(" 2 ") == SourceSpec("camera", 2)
    assert parse_source("/dev/video1") == SourceSpec("device", "/dev/video1")
    assert parse_source("rtsp://cam.local:554/stream1").kind == "stream"
    assert parse_source("HTTPS://host/live.mjpg").kind == "stream"
    assert parse_source(str(clip)) == SourceSpec("file", str(clip))
    assert not parse_source(str(clip)).live and parse_source("0").live
    with pytest.raises(SourceError, match="no such video file"):
        parse_source(str(tmp_path / "missing.mp4"))
    pipeline = "videotestsrc ! videoconvert ! appsink"
    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    with pytest.raises(SourceError, match="GStreamer"):
        parse_source(pipeline)
    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)
    assert parse_source(pipeline) == SourceSpec("gstreamer", pipeline)
    assert backoff_delays(6) == (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)


class FakeCapture:
    """A camera that delivers `frames` frames (one per `period` s) and then fails."""

    def __init__(self, frames: int, opened: bool = True, period: float = 0.004):
        self.left, self.opened, self.period, self.n = frames, opened, period, 0
        self._img: np.ndarray | None = None

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def grab(self) -> bool:
        time.sleep(self.period)
        if self.left <= 0:
            return False
        self.left -= 1
        self._img = make_frame(self.n)
        self.n += 1
        return True

    def retrieve(self):
        return True, self._img

    def read(self):
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 250.0, cv2.CAP_PROP_FRAME_WIDTH: W, cv2.CAP_PROP_FRAME_HEIGHT: H}.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        return False

    def release(self) -> None:
        self.opened = False


def opener_from(captures: list[FakeCapture]):
    calls: list[SourceSpec] = []

    def opener(spec: SourceSpec) -> FakeCapture:
        calls.append(spec)
        return captures.pop(0) if captures else FakeCapture(0, opened=False)

    return opener, calls


def test_lost_camera_is_retried_then_fails_cleanly(models):
    opener, calls = opener_from([FakeCapture(6), FakeCapture(0, opened=False), FakeCapture(6)])
    log: list[str] = []
    src = FrameSource(SourceSpec("camera", 0), backoff=(0.01, 0.02, 0.04), opener=opener, log=log.append).open()
    summary = run_camera(src, Engine(models), log=log.append)
    # lost after 6 frames; attempt 1 fails, attempt 2 brings it back for 6 more; then 3 failed attempts
    assert len(calls) == 1 + 2 + 3
    assert summary.captured == 12 and summary.processed + summary.dropped == 12 and summary.processed >= 1
    assert summary.reconnects == 1 and summary.exit_code == 1
    assert "lost and not recovered after 3 reconnect attempts" in summary.error
    assert any("reopening in 0.01 s (attempt 1/3)" in m for m in log) and any("is back" in m for m in log)


def test_a_frame_the_model_fails_on_is_that_frames_error(models):
    """A frame goes through the pipeline's step (`load_one`, `run_loaded`); an exception in the
    model call is that frame's error record, and the next frames go on."""
    class Flaky(Engine):
        calls = 0

        def classify(self, items, hook=None, rules=None):
            Flaky.calls += 1
            if Flaky.calls == 3:  # call 1 is the warm-up: the second frame fails
                raise RuntimeError("boom")
            return super().classify(items, hook, rules)

    opener, _ = opener_from([FakeCapture(4)])
    src = FrameSource(SourceSpec("file", "fake.avi"), opener=opener, log=lambda m: None).open()
    recs: list[dict] = []
    summary = run_camera(src, Flaky(models), write=recs.append, log=lambda m: None)
    assert [r["frame"] for r in recs] == [0, 1, 2, 3] and summary.failed == 1 and summary.exit_code == 1
    assert recs[1]["error"] == "cannot process image: RuntimeError: boom" and recs[1]["engine"] is None
    assert (recs[1]["width"], recs[1]["height"]) == (W, H)
    for r in (recs[0], recs[2], recs[3]):
        assert r["error"] is None and set(r["labels"]) == set(scene(r["frame"])) and r["engine"] == "hd"
        assert r["timings_ms"]["preprocess"] > 0 and r["timings_ms"]["infer"] > 0


def test_cli_source_lost_exit_code(models, monkeypatch):
    captures = [FakeCapture(5)]
    monkeypatch.setattr(sources, "open_capture", lambda spec: captures.pop(0) if captures
                        else FakeCapture(0, opened=False))
    r = run_cli("--source", "0", "--headless", "--retries", "1", "--models", models)
    assert r.exit_code == 1
    took = re.search(r"camera 0 lost and not recovered after 1 reconnect attempt over (\d+\.\d) s", r.stderr)
    assert took and 0.5 <= float(took.group(1)) < 5
    assert 1 <= len(jsonl(r.stdout)) <= 5


def test_source_that_cannot_open(models, monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "open_capture", lambda spec: FakeCapture(0, opened=False))
    r = run_cli("--source", "3", "--headless", "--models", models)
    assert r.exit_code == 1 and "cannot open camera 3" in r.stderr
    r = run_cli("--source", tmp_path / "nope.mp4", "--headless", "--models", models)
    assert r.exit_code == 1 and "no such video file" in r.stderr  # docs/camera.md: a source that cannot be opened
    r = run_cli("--source", " ", "--headless", "--models", models)
    assert r.exit_code == 2 and "--source is empty" in r.stderr


# -- the loop, headless --------------------------------------------------------------
def test_headless_labels_per_frame(models, video):
    r = run_cli("--source", video, "--headless", "--models", models)
    assert r.exit_code == 0, r.stderr
    recs = jsonl(r.stdout)
    assert [x["frame"] for x in recs] == list(range(24))
    for x in recs:
        want = scene(x["frame"])
        assert set(x["labels"]) == set(want), x
        assert all(x["views"][c] == where for c, where in want.items())
        assert x["engine"] == "hd" and x["error"] is None and (x["width"], x["height"]) == (W, H)
        assert x["latency_ms"] > 0 and abs(x["timestamp"] - time.time()) < 600
    assert "24 frames captured, 24 processed, 0 dropped" in r.stderr


def test_max_frames_loop_smooth_out(models, video, tmp_path):
    out = tmp_path / "r.jsonl"
    r = run_cli("--source", video, "--headless", "--loop", "--max-frames", 30, "--smooth", 3,
                "--out", out, "--models", models)
    assert r.exit_code == 0, r.stderr
    recs = jsonl(out.read_text())
    assert [x["frame"] for x in recs] == list(range(30)) and all(x["smooth"] == 3 for x in recs)
    assert recs[26]["labels"] == recs[2]["labels"] == ["red"]  # frame 24 is the file's frame 0 again
    assert r.stdout == ""


def test_realtime_slow_model_drops_instead_of_queueing(slow_models, tmp_path):
    n = 45  # 1.5 s at 30 fps; the model takes >= 100 ms a frame, so about 2 in 3 frames must go
    src = FrameSource(parse_source(str(make_video(tmp_path / "rt.avi", n))), realtime=True).open()
    recs: list[dict] = []
    # ONNX Runtime runs the delay loop as calibrated (OpenVINO may run it faster)
    summary = run_camera(src, Engine(slow_models, device="cpu"), write=recs.append, log=lambda m: None)
    idx = [x["frame"] for x in recs]
    assert summary.captured == n and summary.processed == len(recs)
    assert summary.dropped == n - len(recs) > 0
    assert len(recs) < n * 2 // 3
    assert idx == sorted(set(idx)) and idx[-1] == n - 1  # always the newest: the last frame is the file's last
    assert max(b - a for a, b in zip(idx, idx[1:], strict=False)) >= 2
    for x in recs:  # dropping keeps labels right for the frames that are processed
        assert set(x["labels"]) == set(scene(x["frame"]))


def test_every_frame_by_default_even_when_slow(slow_models, tmp_path):
    recs: list[dict] = []
    src = FrameSource(parse_source(str(make_video(tmp_path / "all.avi", 6)))).open()
    summary = run_camera(src, Engine(slow_models), write=recs.append, log=lambda m: None)
    assert [x["frame"] for x in recs] == list(range(6)) and summary.dropped == 0 and summary.exit_code == 0


def test_duration_ends_a_looping_realtime_run(models, video):
    r = run_cli("--source", video, "--headless", "--realtime", "--loop", "--duration", "0.4", "--models", models)
    assert r.exit_code == 0 and len(jsonl(r.stdout)) >= 1


# -- keys, window, snapshots, recording ----------------------------------------------
@pytest.mark.parametrize("key,state,action", [
    (-1, LoopState(), None),
    (ord("x"), LoopState(), None),
    (ord("q"), LoopState(), "quit"),
    (ord("Q"), LoopState(), "quit"),
    (27, LoopState(), "quit"),
    (ord("e"), LoopState(routing="standard"), "engine"),
    (ord("t"), LoopState(tiling=False), "tiling"),
    (ord("s"), LoopState(), "snapshot"),
    (ord(" "), LoopState(paused=True), "pause"),
    (ord("v"), LoopState(all_views=True), "views"),
    (0x100000 | ord("t"), LoopState(tiling=False), "tiling"),  # modifier bits from waitKeyEx-style codes
])
def test_handle_key(key, state, action):
    assert handle_key(LoopState(), key) == (state, action)


def test_handle_key_cycles_and_toggles_back():
    s = LoopState()
    engines = []
    for _ in range(3):
        s, _ = handle_key(s, ord("e"))
        engines.append(s.routing)
    assert engines == ["standard", "hd", "auto"]
    s, _ = handle_key(handle_key(s, ord("t"))[0], ord("t"))
    s, _ = handle_key(handle_key(s, ord(" "))[0], ord(" "))
    s, _ = handle_key(handle_key(s, ord("v"))[0], ord("v"))
    assert s == LoopState()


class FakeDisplay:
    """Plays a key script (one key per poll) and keeps what was shown."""

    def __init__(self, keys: list[int]):
        self.keys, self.shown, self.closed_calls = list(keys), [], 0

    def show(self, img):
        self.shown.append(img.copy())

    def poll(self, wait_ms: int) -> int:
        return self.keys.pop(0) if self.keys else -1

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        self.closed_calls += 1


def test_keys_drive_the_loop_and_snapshot(models, video, tmp_path):
    # one key per loop turn, then a frame (unless paused): frame 0 as started; 's' saves frame 0 and
    # frame 1 follows; 'e' -> standard for frame 2; 't' -> no tiling for frame 3; space pauses (two
    # turns, no frames), space resumes: frame 4; q
    keys = [-1, ord("s"), ord("e"), ord("t"), ord(" "), -1, ord(" "), ord("q")]
    display, recs = FakeDisplay(keys), []
    engine = Engine(models)
    src = FrameSource(parse_source(str(video))).open()
    summary = run_camera(src, engine, write=recs.append, display=display, snapshots=tmp_path / "snaps",
                         log=lambda m: None)
    assert [x["frame"] for x in recs] == [0, 1, 2, 3, 4] and summary.exit_code == 0
    assert [x["engine"] for x in recs] == ["hd", "hd", "standard", "standard", "standard"]
    assert [x["tiling"] for x in recs] == [True, True, True, False, False]
    assert set(recs[3]["views"].values()) == {"whole"} and set(recs[4]["labels"]) == set(scene(4))
    assert len(display.shown) == 6 and display.closed_calls == 1  # five frames plus the PAUSED banner
    pngs = sorted((tmp_path / "snaps").glob("*_f000000*.png"))
    assert [p.name.endswith(".annotated.png") for p in pngs] == [True, False]
    img = cv2.imread(str(pngs[1]))
    assert img.shape == (H, W, 3) and np.abs(img.astype(int) - make_frame(0)).mean() < 8  # the raw frame
    rec = json.loads(pngs[1].with_suffix(".json").read_text())
    assert rec["frame"] == 0 and rec["labels"] == ["red"] and rec["snapshot"] == pngs[1].name
    assert cv2.imread(str(pngs[0])).shape == (H, W, 3)


def test_record_writes_a_readable_video(models, video, tmp_path):
    out = tmp_path / "rec" / "annotated.mp4"
    r = run_cli("--source", video, "--headless", "--max-frames", 10, "--record", out, "--models", models)
    assert r.exit_code == 0, r.stderr
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert len(frames) == 10 and abs(fps - 30.0) < 0.5 and frames[0].shape == (H, W, 3)
    assert "recording:" in r.stderr
    r = run_cli("--source", video, "--headless", "--record", tmp_path / "x.gif", "--models", models)
    assert r.exit_code == 2 and "--record" in r.stderr


def test_window_without_gui_or_model_errors_are_one_line(models, video, tmp_path):
    r = run_cli("--source", video, "--models", models)  # this OpenCV is headless (or there is no display)
    assert r.exit_code == 2 and "--headless" in r.stderr.splitlines()[-1]
    r = run_cli("--source", video, "--headless", "--models", tmp_path / "empty")
    assert r.exit_code == 2 and "no standard model" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"not a video at all")
    r = run_cli("--source", bad, "--headless", "--models", models)
    assert r.exit_code == 1 and "cannot open video file" in r.stderr


# -- smoothing -----------------------------------------------------------------------
def _decide(hook: ScoreSmoother, red: float, green: float, role: str = "hd") -> list[str]:
    """The labels, with the guess (if any) as the reference system's rule puts it there."""
    s = np.array([[red, green], [red / 2, green / 2]], np.float32)
    rule = DecisionRule(("red", "green"), (0.3, 0.3), 0.2, guess_in_labels=True)
    d = rule.decide(s, ("whole", "centre"), role, hook)
    return d.labels


def test_smoother_averages_and_redecides():
    sm = ScoreSmoother(3)
    labels = [_decide(sm, r, 0.05) for r in (0.95, 0.0, 0.95, 0.0, 0.0, 0.0)]
    # means over the last 3: .95, .475, .633, .317, .317, 0 -> red until the window has no support
    assert labels == [["red"], ["red"], ["red"], ["red"], ["red"], []]
    assert ScoreSmoother(1)("hd", [0.1, 0.9]) == pytest.approx([0.1, 0.9])  # k=1: untouched
    sm.reset()
    assert _decide(sm, 0.1, 0.25) == ["green"]  # the guess (top-1 above 0.20), in labels by the reference rule
    _decide(sm, 0.9, 0.9)
    assert _decide(sm, 0.1, 0.1, role="standard") == []  # another model: the history starts again
    with pytest.raises(ValueError):
        ScoreSmoother(0)


# -- overlay -------------------------------------------------------------------------
def test_overlay_draws_confident_labels_the_guess_and_none_of_apart(models):
    frame = make_frame(0)  # red, top left
    red = np.array(class_colour(0), np.uint8)

    def drawn(scale: float, img: np.ndarray = frame) -> tuple[np.ndarray, object]:
        engine = Engine(models, routing="hd")  # thresholds 0.3, fallback score 0.2
        [v] = engine.classify([engine.prepare(Decoded(img, W, H))], hook=lambda _, s: [x * scale for x in s])
        return draw_verdict(img.copy(), v), v

    confident, v = drawn(1.0)
    assert v.decision.labels == ["red"] and (confident == red).all(axis=2).sum() > 100  # bar and bold box
    guess, v = drawn(0.25)
    assert v.decision.labels == [] and v.decision.guess[0] == "red"
    empty, v = drawn(1.0, np.full((H, W, 3), 90, np.uint8))
    assert v.decision.labels == [] and v.decision.guess is None and not (empty == red).all(axis=2).any()

    def muted(img: np.ndarray) -> int:
        return int((img == np.array(MUTED, np.uint8)).all(axis=2).sum())

    assert not (guess == red).all(axis=2).any() and muted(guess) > muted(empty) + 200  # a muted bar, no bold box
    st = Style.for_frame(640, 480)
    assert none_of(["red", "green", "blue"], 1000, st) == "none of: red, green, blue"
    assert none_of(["airplane", "automobile", "bird", "cat", "deer"], 260, st).endswith(", ...")
    assert none_of(["airplane"], 10, st) == "none of the classes"


# -- pause -----------------------------------------------------------------------------
def test_pause_holds_a_realtime_file(tmp_path):
    """Paused, a file played in real time stops where it is: nothing read, nothing dropped, and the
    frame after the pause is the next one, stamped as captured on resume."""
    src = FrameSource(parse_source(str(make_video(tmp_path / "p.avi", 45))), realtime=True, log=lambda m: None)
    got: list[int] = []
    with src:
        while not got or got[-1] < 9:
            got.append(src.read(timeout=5).index)
        src.pause()
        assert src.paused
        time.sleep(0.1)  # a read under way when the pause came ends
        held = src.captured
        time.sleep(0.6)  # 18 frames at 30 fps
        assert src.captured == held
        src.resume()
        frame = src.read(timeout=5)
        assert time.perf_counter() - frame.t_capture < 0.3 and not src.paused
        got.append(frame.index)
        while (frame := src.read(timeout=5)) is not None:
            got.append(frame.index)
    assert src.captured == 45 and got[-1] == 44
    assert src.dropped < 8  # without the pause, the 0.6 s would have dropped about 18


def test_pause_keeps_a_live_source_draining():
    opener, _ = opener_from([FakeCapture(200, period=0.005)])
    src = FrameSource(SourceSpec("camera", 0), opener=opener, log=lambda m: None).open()
    with src:
        src.pause()
        assert not src.paused  # a camera cannot wait
        time.sleep(0.2)
        frame = src.read(timeout=1)
        assert src.captured > 10 and frame.index >= src.captured - 3  # the newest, not the first
        src.resume()


def test_space_pauses_the_source_and_v_redraws(models, video):
    """Space pauses the source (and the next space resumes it); v while paused redraws the frame."""
    src = FrameSource(parse_source(str(video)), realtime=True).open()
    seen: list[bool] = []

    class Spy(FakeDisplay):
        def poll(self, wait_ms: int) -> int:
            seen.append(src.paused)
            return super().poll(wait_ms)

    display = Spy([-1, ord(" "), -1, ord("v"), -1, ord(" "), ord("q")])
    run_camera(src, Engine(models), display=display, log=lambda m: None)
    assert seen == [False, False, True, True, True, True, False]
    assert len(display.shown) == 1 + 1 + 1 + 1  # a frame, PAUSED, redrawn with all views (PAUSED), a frame
    assert not np.array_equal(display.shown[1], display.shown[2])
