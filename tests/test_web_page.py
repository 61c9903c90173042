"""The web page in a real browser: Playwright driving Debian's Chromium against a real server.

Upload a photo and read its labels on the page; start the live camera (Chromium's fake camera
playing a .y4m clip written here) and read the labels of the object in the clip; the camera's
message on a page that is not a secure context. Screenshots go to a temporary folder, or to
docs/serve-upload.png and docs/serve-camera.png with SIXVIEW_UPDATE_DOCS=1.
Skipped (with the reason) without Playwright or Chromium; CI installs both.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[dev]')")
pytest.importorskip("fastapi")
CHROMIUM = Path("/usr/lib/chromium/chromium")  # the real binary (/usr/bin/chromium is a wrapper script)
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; Playwright cannot download its own here)",
                allow_module_level=True)

from conftest import REPO, grey_with_square  # noqa: E402
from serve_helpers import ThreadServer, wait_ready  # noqa: E402

from edge.engine import Engine  # noqa: E402
from edge.serve.app import create_app  # noqa: E402
from edge.tiling import view_boxes  # noqa: E402

expect = sync_api.expect
DOCS = REPO / "docs"


def shot_path(tmp_path, name: str):
    """Where a screenshot goes: docs/ when SIXVIEW_UPDATE_DOCS=1 (to refresh the committed ones), else tmp."""
    return (DOCS if os.environ.get("SIXVIEW_UPDATE_DOCS") == "1" else tmp_path) / name
TIMEOUT_MS = 20_000
INSECURE_HOST = "sixview-lan.test"  # resolved to 127.0.0.1 by Chromium, but not a secure context


def write_y4m(path: Path, frames: int = 30, width: int = 320, height: int = 240) -> Path:
    """A clip for Chromium's fake camera: a red square on grey, moving a little (I420, 4:2:0)."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            bgr = np.full((height, width, 3), 128, np.uint8)
            x = 20 + i * 2
            bgr[40:140, x:x + 100] = (0, 0, 255)
            f.write(b"FRAME\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def server(colour_models):
    with ThreadServer(create_app(Engine(colour_models))) as s:
        wait_ready(s.url)
        yield s


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "clip.y4m")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}", f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def tab(chromium):
    context = chromium.new_context(viewport={"width": 1100, "height": 820})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors  # no script error on the page


def test_upload_a_photo_and_see_its_labels(tab, server, tmp_path):
    img = grey_with_square(640, 480, "top_left", 110, (255, 0, 0))
    img[330:450, 480:600] = (255, 0, 0)  # a blue square (BGR) in the bottom-right corner
    photo = tmp_path / "two_squares.jpg"
    cv2.imwrite(str(photo), img)
    tab.goto(server.url + "/")
    expect(tab.locator("#status")).to_contain_text("ready", timeout=TIMEOUT_MS)
    tab.set_input_files("#file", str(photo))
    labels = tab.locator("#labels")
    expect(labels).to_contain_text("red", timeout=TIMEOUT_MS)
    expect(labels).to_contain_text("blue")
    expect(labels).to_contain_text("top left view")
    expect(tab.locator("#none")).to_be_hidden()
    expect(tab.locator("#latency")).to_contain_text("ms round trip")
    size = tab.eval_on_selector("#picture", "c => [c.width, c.height]")
    assert size[0] > 0 and size[1] > 0
    tab.screenshot(path=str(shot_path(tmp_path, "serve-upload.png")), full_page=True)
    # the page's view boxes are edge/tiling.py's
    for w, h in ((641, 479), (32, 32), (1920, 1080), (5, 3)):
        js = tab.evaluate(f"viewBoxes({w}, {h}, 0.6, true)")
        assert js == {v.name: [v.x0, v.y0, v.x1, v.y1] for v in view_boxes(w, h, 0.6)}
    # nothing confident (threshold 1): the guess, shown apart from the labels
    tab.fill("#threshold", "1")
    tab.dispatch_event("#threshold", "change")
    expect(tab.locator("#guess")).to_contain_text("maybe", timeout=TIMEOUT_MS)
    expect(tab.locator("#labels li")).to_have_count(0)
    tab.fill("#threshold", "")
    # nothing in the picture: said so plainly
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((480, 640, 3), 128, np.uint8))
    tab.set_input_files("#file", str(grey))
    expect(tab.locator("#none")).to_be_visible(timeout=TIMEOUT_MS)
    expect(tab.locator("#none")).to_contain_text("none of my classes")
    # a file that is no image: the server's reason, no crash
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    tab.set_input_files("#file", str(text))
    expect(tab.locator("#error")).to_contain_text("not an image", timeout=TIMEOUT_MS)
    # the page installs: a service worker controls it
    assert tab.evaluate("navigator.serviceWorker.ready.then(r => Boolean(r.active))")


def test_live_camera_shows_the_object_in_the_clip(tab, server, tmp_path):
    tab.goto(server.url + "/")
    tab.click("#tab-live")
    tab.click("#camera-start")
    expect(tab.locator("#labels")).to_contain_text("red", timeout=TIMEOUT_MS)
    expect(tab.locator("#latency")).to_contain_text("frames/s", timeout=TIMEOUT_MS)
    tab.wait_for_timeout(500)  # a few more frames, so the screenshot shows a settled overlay
    tab.screenshot(path=str(shot_path(tmp_path, "serve-camera.png")), full_page=True)
    tab.click("#camera-stop")
    expect(tab.locator("#camera-start")).to_be_enabled()


def test_camera_on_a_page_that_is_not_secure_says_why(tab, server):
    port = server.url.rsplit(":", 1)[1]
    tab.goto(f"http://{INSECURE_HOST}:{port}/")
    assert tab.evaluate("window.isSecureContext") is False
    tab.click("#tab-live")
    tab.click("#camera-start")
    expect(tab.locator("#camera-message")).to_contain_text("needs a secure page")
    tab.click("#tab-photo")  # uploads still work there
    expect(tab.locator("#status")).to_contain_text("ready", timeout=TIMEOUT_MS)
