"""The memory budgets: an image's decoding cost from its header (per format), refused before any
large allocation; the scan's read-ahead in bytes; the server's image budget and `--max-batch`.
Fast cases: unit; child processes' peak memory and a server: integration (inputs built in tmp_path)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import REPO, grey_with_square
from PIL import Image

from edge.decode import BYTES_PER_PIXEL, DecodeError, ImageTooLarge, NotImageData, decode, decode_budget, plan
from edge.errors import TooLarge
from edge.headers import SLACK, probe
from edge.pipeline import Loaded, stream

MB = 2**20


def png_header(width: int, height: int, bits: int = 8, colour: int = 2) -> bytes:
    """A small PNG declaring width x height at `bits` per sample, colour type `colour` (6: RGBA)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def hdr_header(width: int, height: int, y_first: bool = True) -> bytes:
    res = f"-Y {height} +X {width}" if y_first else f"+X {width} -Y {height}"
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + res.encode() + b"\n" + b"\0" * 64


def encoded(ext: str, arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


# -- headers, per format (unit) -------------------------------------------------------------
@pytest.mark.parametrize("make,fmt,size,raw", [
    (lambda: png_header(300, 200, 8, 2), "PNG", (300, 200), 3),
    (lambda: png_header(300, 200, 16, 6), "PNG", (300, 200), 8),
    (lambda: png_header(300, 200, 8, 0), "PNG", (300, 200), 1),
    (lambda: encoded(".png", np.zeros((20, 30, 4), np.uint8)), "PNG", (30, 20), 4),
    (lambda: encoded(".tif", np.zeros((20, 30), np.float32)), "TIFF", (30, 20), 4),
    (lambda: encoded(".tif", np.zeros((20, 30, 3), np.uint16)), "TIFF", (30, 20), 6),
    (lambda: encoded(".tif", np.zeros((20, 30, 4), np.uint8)), "TIFF", (30, 20), 4),
    (lambda: hdr_header(640, 480), "HDR", (640, 480), 12),
    (lambda: hdr_header(640, 480, y_first=False), "HDR", (640, 480), 12),
    (lambda: encoded(".hdr", np.zeros((20, 30, 3), np.float32)), "HDR", (30, 20), 12),
    (lambda: encoded(".pfm", np.zeros((20, 30, 3), np.float32)), "PFM", (30, 20), 12),
    (lambda: encoded(".ppm", np.zeros((20, 30, 3), np.uint16)), "PPM", (30, 20), 6),
    (lambda: b"P7\nWIDTH 30\nHEIGHT 20\nDEPTH 4\nMAXVAL 65535\nTUPLTYPE RGB_ALPHA\nENDHDR\n", "PAM", (30, 20), 8),
    (lambda: encoded(".jpg", np.zeros((20, 30, 3), np.uint8)), "JPEG", (30, 20), 3),
    (lambda: encoded(".webp", np.zeros((20, 30, 4), np.uint8)), "WEBP", (30, 20), 4),
])
def test_the_header_tells_size_and_bytes_per_pixel(make, fmt, size, raw):
    h = probe(make())
    assert (h.format, (h.width, h.height), h.raw_bytes) == (fmt, size, raw)
    assert h.cost() >= SLACK + h.pixels * 3  # at least the 8-bit BGR result


def test_palette_with_transparency_and_pillow_formats():
    im = Image.new("P", (40, 30))
    im.putpalette([0, 255, 0] * 256)
    b = io.BytesIO()
    im.save(b, "PNG", transparency=0)
    assert probe(b.getvalue()).raw_bytes == 4  # expanded with alpha
    b = io.BytesIO()
    im.save(b, "GIF")
    gif = probe(b.getvalue())
    assert (gif.format, gif.width, gif.height, gif.opencv) == ("GIF", 40, 30, False)  # Pillow decodes it


def test_cost_grows_with_depth_alpha_and_orientation():
    rgb8, rgba16 = probe(png_header(1000, 1000, 8, 2)), probe(png_header(1000, 1000, 16, 6))
    assert rgba16.cost() > rgb8.cost()
    jpeg = probe(encoded(".jpg", np.zeros((800, 800, 3), np.uint8)))
    assert jpeg.cost(4) < jpeg.cost(2) < jpeg.cost(1)  # JPEG decoded at a reduced size


# -- refused before decoding (unit) ---------------------------------------------------------
def test_a_16_bit_rgba_png_at_the_pixel_limit_is_refused_for_its_bytes():
    data = png_header(10000, 10000, 16, 6)  # exactly --max-pixels, 8 bytes per pixel as decoded
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"^image too large to decode: 10000x10000 PNG \(RGBA, 16-bit\)") as e:
        decode(data, max_pixels=100_000_000)
    assert time.perf_counter() - t0 < 1.0
    assert isinstance(e.value, TooLarge) and e.value.http_status == 413 and e.value.code == "image_too_large"
    assert "decoding budget of" in str(e.value) and "\n" not in str(e.value)


def test_hdr_headers_are_checked_before_opencv_sees_them():
    with pytest.raises(ImageTooLarge, match="30000x30000 is 900 megapixels") as e:
        decode(hdr_header(30000, 30000))
    assert "opencv" not in str(e.value).lower() and e.value.http_status == 413
    with pytest.raises(ImageTooLarge, match="5000x5000 is 25 megapixels, over the limit of 1"):
        decode(hdr_header(5000, 5000), max_pixels=1_000_000)
    with pytest.raises(ImageTooLarge, match="image too large to decode: 5000x5000 HDR"):
        decode(hdr_header(5000, 5000))  # 25 MP of float RGB: over 6 bytes x 100 MP
    with pytest.raises(DecodeError, match="corrupt HDR"):
        decode(hdr_header(64, 48))  # a header, then no pixels: OpenCV's refusal, without its text


def test_a_small_float_image_decodes_and_unknown_formats_are_refused():
    arr = np.zeros((20, 30, 3), np.float32)
    arr[:, :10] = 1.0
    d = decode(encoded(".hdr", arr))
    assert d.bgr.shape == (20, 30, 3) and d.bgr[5, 2].min() > 200 and d.bgr[5, 25].max() < 10
    with pytest.raises(NotImageData, match="unknown format"):
        decode(b"v/1\x01\x02" + b"\0" * 64)  # OpenEXR's magic: no decoder here reads it


def test_plan_is_what_decode_will_cost():
    data = encoded(".png", np.zeros((300, 400, 4), np.uint16))
    header, factor, cost = plan(data)
    assert factor == 1 and cost == header.cost() and cost <= decode_budget(100_000_000)
    with pytest.raises(ImageTooLarge):
        plan(data, max_pixels=(cost - SLACK) // BYTES_PER_PIXEL - 1)


def test_the_conversion_to_8_bit_keeps_its_meaning_in_strips():
    gradient = np.linspace(0, 65535, 300 * 500, dtype=np.float64).reshape(300, 500).astype(np.uint16)
    rgba = np.dstack([gradient, gradient, gradient, np.full_like(gradient, 65535)])
    d = decode(encoded(".png", rgba))
    assert np.array_equal(d.bgr[..., 0], (gradient >> 8).astype(np.uint8))
    f = np.linspace(0, 1, 300 * 500, dtype=np.float32).reshape(300, 500)
    f[0, 0] = np.nan
    d = decode(encoded(".tif", f))
    expected = np.clip(np.nan_to_num(f.astype(np.float64)) * 255, 0, 255).astype(np.uint8)
    assert np.array_equal(d.bgr[..., 1], expected)


# -- the scan's read-ahead in bytes (unit) --------------------------------------------------
def test_read_ahead_holds_at_most_its_budget_and_never_stalls():
    held, peak, lock, size = [0], [0], threading.Lock(), 10 * MB

    def load(key: int) -> Loaded[int]:
        with lock:
            held[0] += size
            peak[0] = max(peak[0], held[0])
        return Loaded(key, SimpleNamespace(pixels=np.empty(size, np.uint8), decoded=None))

    batches: list[int] = []

    def run(items: list) -> list[int]:
        batches.append(len(items))
        return [0] * len(items)

    seen = []
    for loaded, _ in stream(range(40), load, run, batch=8, workers=2, max_bytes=25 * MB):
        seen.append(loaded.key)
        with lock:
            held[0] -= size
    assert seen == list(range(40))
    assert peak[0] <= 25 * MB + 2 * size  # the budget, plus what the two threads were loading
    assert max(batches) < 8  # batches ran short rather than hold more
    assert len(list(stream(range(5), load, run, batch=8, workers=2, max_bytes=1))) == 5  # one at a time


# -- the server: --max-batch for any request, the image budget (unit) -------------------------
def test_a_request_larger_than_max_batch_runs_in_batches_of_max_batch():
    pytest.importorskip("prometheus_client")  # the serve extra
    from edge.serve.batcher import Batcher
    calls = []

    def run(jobs):
        calls.append(sum(len(items) for items, _ in jobs))
        return [[f"v{i}" for i in items] for items, _ in jobs]

    async def main():
        batcher = Batcher(run, max_images=8)
        batcher.start()
        with batcher.admit():
            verdicts, info = await batcher.submit(list(range(16)))
        await batcher.stop()
        return verdicts, info

    verdicts, info = asyncio.run(main())
    assert calls == [8, 8] and verdicts == [f"v{i}" for i in range(16)] and info.batch_images == 8


def test_the_image_budget_is_first_come_first_served():
    from edge.serve.admission import ByteBudget
    order = []

    async def user(budget, name: str, n: int, hold_s: float) -> None:
        async with budget.hold(n) as held:
            order.append(name)
            assert budget.free >= 0
            held.keep(n // 2)
            await asyncio.sleep(hold_s)

    async def main():
        budget = ByteBudget(100)
        await asyncio.gather(user(budget, "a", 80, 0.05), user(budget, "b", 60, 0.0), user(budget, "c", 500, 0.0))
        return budget

    budget = asyncio.run(main())
    assert order == ["a", "b", "c"] and budget.free == 100  # c (over the whole budget) ran alone, last


# -- peak memory of real scans (integration) ------------------------------------------------
def peak_scan_mb(*args: object) -> tuple[float, subprocess.CompletedProcess]:
    """`sixview scan ARGS` in a child process: its peak resident memory (MiB: VmHWM, the high-water mark
    of its own address space; `ru_maxrss` would count the forking test process too) and the result."""
    code = ("import re, sys; from edge.cli import main; sys.argv[0] = 'sixview'\n"
            "try:\n    main()\nfinally:\n"
            "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "    print('PEAK', hwm, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "scan", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    peak = [line for line in r.stderr.splitlines() if line.startswith("PEAK ")]
    assert peak, r.stderr
    return int(peak[-1].split()[1]) / 1024, r


def baseline_mb(tmp_path, models) -> float:
    """The peak of a scan of one ordinary photo (both models open, one model call)."""
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), grey_with_square())
    peak, r = peak_scan_mb(photo, "--models", models, "--device", "cpu", "--out", tmp_path / "base.jsonl")
    assert r.returncode == 0, r.stderr
    return peak


@pytest.mark.integration
def test_hostile_images_are_refused_without_their_memory(tmp_path, colour_models):
    base = baseline_mb(tmp_path, colour_models)
    d = tmp_path / "hostile"
    d.mkdir()
    rgba16 = np.zeros((3000, 3000, 4), np.uint16)
    rgba16[::50] = 65535
    cv2.imwrite(str(d / "rgba16.png"), rgba16)  # 9 MP: at the limit below, 8 bytes per pixel decoded
    del rgba16
    (d / "huge.hdr").write_bytes(hdr_header(30000, 30000))
    cv2.imwrite(str(d / "float.hdr"), np.ones((1000, 2500, 3), np.float32))  # 2.5 MP of float RGB
    peak, r = peak_scan_mb(*sorted(d.iterdir()), "--models", colour_models, "--device", "cpu",
                           "--max-pixels", 9_000_000, "--out", tmp_path / "r.jsonl")
    assert r.returncode == 1, r.stderr
    errors = [json.loads(line)["error"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(errors) == 3 and all(e.startswith("image too large") for e in errors), errors
    assert "opencv" not in (tmp_path / "r.jsonl").read_text().lower()
    assert peak - base < 40, (peak, base)  # nothing of theirs was decoded (the 16-bit PNG alone: ~170 MB)


@pytest.mark.integration
def test_an_accepted_float_image_stays_within_its_header_cost(tmp_path, colour_models):
    base = baseline_mb(tmp_path, colour_models)
    path = tmp_path / "sky.hdr"
    sky = np.zeros((1500, 2000, 3), np.float32)
    sky[::7] = 0.5
    cv2.imwrite(str(path), sky)
    del sky
    cost = probe(path.read_bytes()).cost()
    peak, r = peak_scan_mb(path, "--models", colour_models, "--device", "cpu", "--out", tmp_path / "r.jsonl")
    assert r.returncode == 0, r.stderr
    assert peak - base <= cost / MB + 16, (peak, base, cost / MB)  # was ~73 bytes per pixel: ~210 MB
    assert peak < 2048


# -- the server (integration) ----------------------------------------------------------------
@pytest.mark.integration
def test_the_server_obeys_max_batch_and_refuses_hostile_headers(colour_models):
    httpx = pytest.importorskip("httpx")
    from serve_helpers import ThreadServer, assert_json_error, jpeg, metric, require_serve, wait_ready
    require_serve()
    from edge.engine import Engine
    from edge.serve.app import create_app
    from edge.serve.runtime import ServeSettings

    app = create_app(Engine(colour_models), ServeSettings(max_batch=8, max_images=16, image_memory=8 * MB))
    with ThreadServer(app) as s:
        wait_ready(s.url)
        calls = metric(s.url, "sixview_batch_images_count", engine="hd")
        photo = jpeg(grey_with_square())
        r = httpx.post(s.url + "/v1/classify", files=[("image", (f"{i}.jpg", photo)) for i in range(16)], timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["batch_images"] == 8 and [x["labels"] for x in body["results"]] == [["red"]] * 16
        assert metric(s.url, "sixview_batch_images_count", engine="hd") - calls == 2  # two model calls of 8
        for data in (hdr_header(30000, 30000), png_header(10000, 10000, 16, 6)):
            r = httpx.post(s.url + "/v1/classify", content=data, headers={"content-type": "image/png"}, timeout=30)
            err = assert_json_error(r, 413, "image_too_large")
            assert "opencv" not in err["error"]["message"].lower()
        assert app.state.runtime.budget.free == 8 * MB  # every share given back
