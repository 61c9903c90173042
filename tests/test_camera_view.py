"""What the user sees: the overlay at 320x240 to 4K, `scan --annotate`, and the camera window
itself under Xvfb (a GUI OpenCV in a virtualenv of its own under ~/.cache/sixview/, keys sent with xdotool,
a screenshot).

`SIXVIEW_GUI_VENV=path` runs the window in that virtualenv instead (e.g. one with OpenCV 4.x).
`SIXVIEW_UPDATE_DOCS=1` also writes the pictures docs/camera.md shows: docs/camera-window.png,
docs/annotated.png and docs/recording-frame.png (synthetic scenes through the toy colour models).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from edge import draw  # noqa: E402
from edge.decode import Decoded  # noqa: E402
from edge.display import qt_font_dir, window_size  # noqa: E402
from edge.draw import Style, class_colour, draw_banner, draw_verdict, put_text, status_text  # noqa: E402
from edge.engine import Engine, Verdict  # noqa: E402
from edge.tiling import view_boxes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
UPDATE_DOCS = os.environ.get("SIXVIEW_UPDATE_DOCS") == "1"
SIZES = [(320, 240), (640, 480), (1920, 1080), (3840, 2160)]
RED, BLUE = class_colour(0), class_colour(2)  # the toy models' classes: red, green, blue


def scene(w: int, h: int, red: bool = True, blue: bool = True, t: float = 0.0) -> np.ndarray:
    """A drawn scene (BGR): a wall-to-floor gradient, a red disc (top left), a blue box (bottom
    right) and a yellow triangle (no class) that slides with `t` in [0, 1]."""
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    img = (np.array([150, 140, 125]) * (1 - y) + np.array([90, 100, 110]) * y).astype(np.uint8)
    img = np.repeat(img, w, axis=1)
    s = min(w, h)
    if red:
        cv2.circle(img, (round(w * 0.22), round(h * 0.25)), round(s * 0.12), (20, 20, 245), -1, cv2.LINE_AA)
    if blue:
        cv2.rectangle(img, (round(w * 0.70), round(h * 0.62)), (round(w * 0.88), round(h * 0.86)), (245, 30, 15), -1)
    x = w * (0.30 + 0.25 * t)
    tri = np.array([[x, h * 0.8], [x + w * 0.10, h * 0.55], [x + w * 0.17, h * 0.8]], np.int32)
    cv2.fillPoly(img, [tri], (60, 200, 230), cv2.LINE_AA)
    return img


def classify(models: Path, img: np.ndarray, scale: float = 1.0, tiling: bool = True) -> Verdict:
    engine = Engine(models, routing="hd", tiling=tiling)
    h, w = img.shape[:2]
    return engine.classify([engine.prepare(Decoded(img, w, h))], hook=lambda _, s: [x * scale for x in s])[0]


@pytest.fixture
def texts(monkeypatch) -> list[tuple[str, tuple[int, int], float, int]]:
    """Every cv2.putText call made while drawing: (text, org, scale, thickness)."""
    calls: list[tuple[str, tuple[int, int], float, int]] = []
    real = cv2.putText

    def spy(img, text, org, font, scale, colour, thickness=1, line_type=cv2.LINE_8):
        calls.append((text, tuple(org), scale, thickness))
        return real(img, text, org, font, scale, colour, thickness, line_type)

    monkeypatch.setattr(draw.cv2, "putText", spy)
    return calls


def text_box(text: str, org: tuple[int, int], scale: float, thickness: int) -> tuple[int, int, int, int]:
    (tw, th), base = cv2.getTextSize(text, draw.FONT, scale, thickness)
    return org[0], org[1] - th, org[0] + tw, org[1] + base


# -- the overlay -----------------------------------------------------------------------
@pytest.mark.parametrize("w,h", SIZES)
def test_overlay_at_every_size(colour_models, texts, w, h):
    img = scene(w, h)
    v = classify(colour_models, img)
    d = v.decision
    assert set(d.labels) == {"red", "blue"} and (d.views["red"], d.views["blue"]) == ("top_left", "bottom_right")
    out = draw_verdict(img.copy(), v, status_text("auto", v, 30.0, 12.3, 45.6))
    st = Style.for_frame(w, h)
    drawn = [t for t, *_ in texts]
    # every text once (no dark outline copy under it), each inside the frame
    assert len(set(zip(drawn, [o for _, o, *_ in texts], strict=True))) == len(texts)
    for text, org, scale, thick in texts:
        x0, y0, x1, y1 = text_box(text, org, scale, thick)
        assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h, (text, (x0, y0, x1, y1))
        assert thick == st.thick
    assert any(re.fullmatch(r"red [01]\.\d\d \(top left\)", t) for t in drawn), drawn
    assert {"top left", "bottom right"} <= set(drawn) and not {"whole", "centre", "top right"} & set(drawn)
    # the winners outlined in their label's colour where the views are
    boxes = {b.name: b for b in view_boxes(w, h)}
    tl, br, i = boxes["top_left"], boxes["bottom_right"], st.line // 2
    assert tuple(out[tl.y1 - 1 - i, tl.x0 + tl.width // 2]) == RED  # bottom edge of the top-left view
    assert tuple(out[br.y0 + i, br.x0 + round(0.75 * br.width)]) == BLUE  # top edge of the bottom-right view
    assert tuple(out[h // 2, w // 2]) == tuple(img[h // 2, w // 2])  # the middle of the frame is left alone


def test_text_scales_with_the_frame():
    heights = [Style.for_frame(w, h).size("Ag")[1] for w, h in SIZES]
    assert heights == sorted(heights) and heights[0] >= 14
    for (w, h), th in zip(SIZES, heights, strict=True):
        assert 0.035 * h <= th <= 0.075 * h, (w, h, th)
    assert Style.for_frame(3840, 2160).line > Style.for_frame(640, 480).line


@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("text", ["none of: red, green, blue", "hd cpu fp32 | tiling on | 45 ms", "red? 0.25"])
def test_text_is_one_pass_inside_its_box(w, h, text):
    """The text's ink is what ONE putText draws, and lies inside the box it was measured for."""
    st = Style.for_frame(w, h)
    canvas = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = put_text(canvas, text, 10, 10, st, bg=None)
    (tw, th), base = cv2.getTextSize(text, draw.FONT, st.scale, st.thick)
    single = np.zeros_like(canvas)
    cv2.putText(single, text, (x0 + st.pad, y0 + st.pad + th), draw.FONT, st.scale, (255, 255, 255), st.thick,
                cv2.LINE_AA)
    assert np.array_equal(canvas, single)
    ys, xs = np.nonzero(canvas[..., 0] > 60)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert xs.max() - xs.min() <= tw + 2  # a second, offset copy would be wider than measured
    rows = np.flatnonzero((canvas[..., 0] > 60).any(axis=1))
    assert rows.max() - rows.min() + 1 == len(rows)  # one line: one run of rows
    filled = np.zeros_like(canvas)
    box = put_text(filled, text, 10, 10, st)
    assert box == (x0, y0, x1, y1) and (filled[y0:y1, x0:x1] > 0).all(axis=2).mean() > 0.95  # ink on its box


def test_guess_none_and_all_views(colour_models, texts):
    w, h = 640, 480
    guess = classify(colour_models, scene(w, h, blue=False), scale=0.3)
    out = draw_verdict(scene(w, h, blue=False), guess)
    assert re.fullmatch(r"red\? 0\.\d\d", texts[-1][0]) and len(texts) == 1
    assert not (out == RED).all(axis=2).any()  # no winning view for a guess
    texts.clear()
    empty = np.full((h, w, 3), 120, np.uint8)
    draw_verdict(empty, classify(colour_models, empty))
    assert [t for t, *_ in texts] == ["none of: red, green, blue"]
    texts.clear()
    draw_verdict(scene(w, h), classify(colour_models, scene(w, h)), all_views=True)
    names = {t for t, *_ in texts}
    assert {"whole", "top left", "top right", "bottom left", "bottom right", "centre"} <= names
    texts.clear()
    notile = classify(colour_models, scene(w, h), tiling=False)
    draw_verdict(scene(w, h), notile)
    assert all("top" not in t for t, *_ in texts)
    banner = draw_banner(scene(w, h), "PAUSED (space to resume)")
    assert banner[h // 2].mean() < scene(w, h)[h // 2].mean()


def test_window_size_and_qt_fonts(tmp_path):
    assert window_size(640, 480) == (640, 480)
    assert window_size(3840, 2160) == (1600, 900) and window_size(1000, 3000) == (300, 900)
    env = {"QT_QPA_FONTDIR": str(tmp_path)}  # a folder that exists is the user's: kept
    assert qt_font_dir(env) is None and env["QT_QPA_FONTDIR"] == str(tmp_path)
    env = {"QT_QPA_FONTDIR": str(tmp_path / "cv2" / "qt" / "fonts")}  # what the wheel sets, absent
    found = qt_font_dir(env)
    assert found is None or (Path(found).is_dir() and env["QT_QPA_FONTDIR"] == found)


def test_scan_annotate_image(colour_models, tmp_path):
    from edge.scan.cli import scan

    photo = tmp_path / "in" / "scene.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), scene(960, 720))
    r = CliRunner().invoke(scan, [str(photo), "--annotate", str(tmp_path / "ann"), "--models", str(colour_models),
                                  "--out", str(tmp_path / "r.jsonl")], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    [ann] = list((tmp_path / "ann").rglob("*.png"))
    img = cv2.imread(str(ann))
    assert img.shape == (720, 960, 3) and (img == RED).all(axis=2).sum() > 1000 and (img == BLUE).all(axis=2).any()
    if UPDATE_DOCS:
        shutil.copyfile(ann, DOCS / "annotated.png")


# -- the window, under Xvfb --------------------------------------------------------------
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sixview"
# never inside the checkout: one virtualenv per checkout, kept across runs (SIXVIEW_GUI_VENV set: used as it is)
GUI_VENV = Path(os.environ.get("SIXVIEW_GUI_VENV")
                or CACHE / f"venv-gui-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}")
GUI_TOOLS = ("Xvfb", "xdotool")


def gui_python() -> Path:
    """A virtualenv with the GUI OpenCV (`pip install -e '.[gui]'` of this checkout), kept in
    ~/.cache/sixview/venv-gui-<checkout>/ and refreshed when pyproject.toml or setup.py changes; skips the
    test when pip cannot install it or its OpenCV cannot load (system libraries missing)."""
    py = _gui_install()
    r = subprocess.run([str(py), "-c", "import cv2"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"the GUI OpenCV in {GUI_VENV} does not load: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return py


def _gui_install() -> Path:
    py = GUI_VENV / "bin" / "python"
    if os.environ.get("SIXVIEW_GUI_VENV"):
        return py
    stamp = GUI_VENV / ".sixview-pyproject"
    want = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in ("pyproject.toml", "setup.py"))).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    GUI_VENV.parent.mkdir(parents=True, exist_ok=True)
    steps = [] if py.exists() else [[sys.executable, "-m", "venv", str(GUI_VENV)]]
    steps.append([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", f"{REPO}[gui]"])
    for cmd in steps:
        try:
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"installing the GUI OpenCV into {GUI_VENV} took over 15 minutes")
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"cannot install the GUI OpenCV into {GUI_VENV} (pip: {last})")
    stamp.write_text(want)
    return py


@pytest.fixture
def xvfb(tmp_path):
    """A virtual X display 1280x1024; its screen is mirrored in an XWD file (-fbdir)."""
    missing = [t for t in GUI_TOOLS if shutil.which(t) is None]
    if not sys.platform.startswith("linux") or missing:
        pytest.skip(f"the window test needs {' and '.join(missing) or 'Linux'} "
                    "(apt-get install xvfb xdotool; .ci/run does)")
    fb = tmp_path / "fb"
    fb.mkdir()
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-fbdir", str(fb),
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()  # Xvfb writes its display number once it is ready
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}", fb / "Xvfb_screen0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def read_xwd(path: Path) -> np.ndarray:
    """A 24/32-bit ZPixmap XWD file (Xvfb's -fbdir screen) as a BGR image."""
    data = path.read_bytes()
    hdr = struct.unpack(">25I", data[:100])
    size, fmt, w, h, order, bpp, bpl, ncolours = hdr[0], hdr[2], hdr[4], hdr[5], hdr[7], hdr[11], hdr[12], hdr[19]
    assert fmt == 2 and bpp == 32, hdr
    px = np.frombuffer(data, np.uint8, bpl * h, size + 12 * ncolours).reshape(h, bpl)[:, :4 * w].reshape(h, w, 4)
    return (px[..., ::-1][..., 1:] if order == 1 else px[..., :3]).copy()  # MSB first: XRGB; else BGRX


def xdo(display: str, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
                          text=True, timeout=10).stdout


def wait_for(what: str, check, timeout: float = 20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def make_clip(path: Path, w: int = 640, h: int = 480, frames: int = 60) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for i in range(frames):
        writer.write(scene(w, h, t=i / frames))
    writer.release()
    return path


@pytest.mark.system  # a GUI virtualenv, Xvfb, xdotool
def test_camera_window_under_xvfb(colour_models, xvfb, tmp_path):
    display, screen = xvfb
    py = gui_python()
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr  # the GUI install is consistent
    clip = make_clip(tmp_path / "clip.avi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(DISPLAY=display, PYTHONUNBUFFERED="1")
    log = tmp_path / "camera.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(GUI_VENV / "bin" / "sixview"), "camera", "--source", str(clip), "--realtime",
                                 "--loop", "--models", str(colour_models), "--snapshots", str(tmp_path / "snaps"),
                                 "--record", str(tmp_path / "rec.mp4"), "--duration", "60"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        win = wait_for("the window", lambda: xdo(display, "search", "--onlyvisible", "--name", "^sixview$").split())[0]
        # sized to the frame (not Qt's 400x300) once the first frame is shown
        geometry = wait_for("a 640x480 window", lambda: (g := xdo(display, "getwindowgeometry", win))
                            and "Geometry: 640x480\n" in g and g, 30)
        x, y = map(int, re.search(r"Position: (\d+),(\d+)", geometry).groups())

        def grab() -> np.ndarray:
            return read_xwd(screen)[y:y + 480, x:x + 640]

        def overlay() -> np.ndarray | None:  # the winners' outlines on screen
            shot = grab()
            return shot if min((shot == RED).all(axis=2).sum(), (shot == BLUE).all(axis=2).sum()) > 500 else None

        # (the first frames can be slow on a busy 2-core machine: as long as the window's sizing)
        wait_for("the overlay on screen", lambda: overlay() is not None, 30)
        time.sleep(0.5)
        shot = overlay()
        assert shot is not None
        if UPDATE_DOCS:
            cv2.imwrite(str(DOCS / "camera-window.png"), shot)
        for key, shown in (("v", "views: all"), ("s", "snapshot: "), ("v", "views: winners only")):
            xdo(display, "key", "--window", win, key)
            wait_for(f"'{shown}' after key {key}", lambda s=shown: s in log.read_text(), 10)
        xdo(display, "key", "--window", win, "space")
        assert not (shot[232:248, :60] < 70).all()
        wait_for("the PAUSED banner", lambda: (grab()[232:248, :60] < 70).all(), 10)
        xdo(display, "key", "--window", win, "space")
        time.sleep(0.5)
        xdo(display, "key", "--window", win, "q")
        assert proc.wait(20) == 0, log.read_text()
    except AssertionError as e:  # any wait that timed out: say what the camera loop said
        raise AssertionError(f"{e}\ncamera log:\n{log.read_text()[-2000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Cannot find font directory" not in text and "QFontDatabase" not in text, text
    assert re.search(r"camera: \d+ frames captured", text) and "recording:" in text
    assert list((tmp_path / "snaps").glob("*.annotated.png"))
    cap = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    frames = []
    while len(frames) < 30:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) >= 10 and frames[0].shape == (480, 640, 3)
    if UPDATE_DOCS:
        cv2.imwrite(str(DOCS / "recording-frame.png"), frames[len(frames) // 2])
