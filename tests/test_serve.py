"""`sixview serve` with real parts: uvicorn on 127.0.0.1, httpx and WebSocket clients, the toy models.

Each server is started by the tests (a thread running `uvicorn.Server`, or `sixview serve` as a
child process) and stopped at the end. Every case is bounded in time and count.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from conftest import grey_with_square  # noqa: E402
from serve_helpers import (  # noqa: E402
    BLUE,
    GREEN,
    MAX_BODY,
    RED,
    ThreadServer,
    assert_json_error,
    jpeg,
    metric,
    require_serve,
    wait_ready,
)

ws_client = require_serve()  # before edge.serve is imported

from benchmarks.memory import png_declaring  # noqa: E402
from convert.toy import save_colour_model  # noqa: E402
from edge.engine import Engine  # noqa: E402
from edge.records import FIELDS, record  # noqa: E402
from edge.serve.app import create_app  # noqa: E402
from edge.serve.runtime import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def engine(colour_models) -> Engine:
    return Engine(colour_models)


@pytest.fixture(scope="module")
def server(colour_models):
    app = create_app(Engine(colour_models), ServeSettings(max_body=MAX_BODY, max_images=4))
    with ThreadServer(app, ws_max_size=MAX_BODY) as s:
        wait_ready(s.url)
        yield s


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory) -> Path:
    """Toy models that take about 300 ms a call: requests pile up behind each other."""
    d = tmp_path_factory.mktemp("slow_models")
    save_colour_model(d / "standard.onnx", role="standard", input_size=(32, 32), delay_ms=300)
    save_colour_model(d / "hd.onnx", role="hd", input_size=(64, 64), delay_ms=300)
    return d


@pytest.fixture(scope="module")
def slow_server(slow_models):
    app = create_app(Engine(slow_models, device="cpu"), ServeSettings(max_queue=4, max_batch=8))  # the calibrated delay
    with ThreadServer(app) as s:
        wait_ready(s.url)
        yield s


# -- endpoints -----------------------------------------------------------------------------
def test_health_ready_models(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    body = httpx.get(server.url + "/v1/models").json()
    roles = {m["role"]: m for m in body["models"]}
    assert set(roles) == {"standard", "hd"}
    hd = roles["hd"]
    assert hd["classes"] == ["red", "green", "blue"] and hd["input_size"] == [64, 64]
    assert hd["thresholds"] == {"red": 0.3, "green": 0.3, "blue": 0.3}
    assert hd["precision"] == "fp32" and hd["provider"] and hd["provenance"]["source"]
    assert body["limits"]["max_pixels"] > 0 and body["ready"] is True


def test_readyz_says_503_until_the_models_are_warm(colour_models, monkeypatch):
    from edge.serve import runtime as runtime_mod

    gate = threading.Event()
    warm = runtime_mod.Runtime.warm_up
    monkeypatch.setattr(runtime_mod.Runtime, "warm_up", lambda self: (gate.wait(20), warm(self)))
    with ThreadServer(create_app(Engine(colour_models))) as s:
        r = httpx.get(s.url + "/readyz")
        assert_json_error(r, 503, "not_ready")
        assert httpx.get(s.url + "/healthz").status_code == 200  # alive while not ready
        gate.set()
        wait_ready(s.url, 20)


def test_classify_record_is_the_scan_record(server, engine):
    r = httpx.post(server.url + "/v1/classify", files={"image": ("red.jpg", RED, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    (rec,) = body["results"]
    assert list(rec) == list(FIELDS)
    assert rec["path"] == "red.jpg" and rec["labels"] == ["red"] and rec["views"]["red"] == "top_left"
    assert rec["guess"] is None and rec["error"] is None
    expected = record("path", "red.jpg", engine.classify([engine.load(RED)])[0])
    for key in FIELDS:
        if key != "timings_ms":
            assert rec[key] == expected[key], key
    assert set(rec["timings_ms"]) == set(expected["timings_ms"])
    assert {"read", "load", "queue", "batch", "total"} <= set(body["timings_ms"])
    assert body["batch_images"] >= 1


def test_several_images_and_a_raw_body(server):
    files = [("image", ("r.jpg", RED, "image/jpeg")), ("image", ("g.jpg", GREEN, "image/jpeg")),
             ("image", ("b.jpg", BLUE, "image/jpeg"))]
    recs = httpx.post(server.url + "/v1/classify", files=files).json()["results"]
    assert [(x["path"], x["labels"], x["views"][x["labels"][0]]) for x in recs] == [
        ("r.jpg", ["red"], "top_left"), ("g.jpg", ["green"], "bottom_right"), ("b.jpg", ["blue"], "centre")]
    r = httpx.post(server.url + "/v1/classify", content=GREEN, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["results"][0]["path"] == "upload"
    assert r.json()["results"][0]["labels"] == ["green"]


def test_options_engine_tiling_threshold(server, colour_models):
    url = server.url + "/v1/classify"
    small = jpeg(grey_with_square(600, 450, "top_left", 90))
    rec = httpx.post(url, params={"engine": "standard"}, content=small,
                     headers={"content-type": "image/jpeg"}).json()["results"][0]
    assert rec["engine"] == "standard" and rec["thresholds"]["red"] == 0.5
    rec = httpx.post(url, data={"tiling": "false"}, files={"image": ("s.jpg", small)}).json()["results"][0]
    assert rec["tiling"] is False and rec["labels"] == [] and set(rec["views"].values()) == {"whole"}
    # a per-request threshold decides exactly as an engine with that threshold (sixview scan --threshold)
    for t in (0.999, 0.05):
        rec = httpx.post(url, params={"threshold": str(t)}, files={"image": ("s.jpg", small)}).json()["results"][0]
        own = Engine(colour_models, threshold=t)
        expected = record("path", "s.jpg", own.classify([own.load(small)])[0])
        assert {k: rec[k] for k in ("labels", "guess", "presence", "scores", "thresholds")} == \
               {k: expected[k] for k in ("labels", "guess", "presence", "scores", "thresholds")}
    rec = httpx.post(url, files={"image": ("s.jpg", small)}).json()["results"][0]
    assert rec["thresholds"]["red"] == 0.3  # the shared engine was not changed
    for params in ({"engine": "huge"}, {"threshold": "2"}, {"threshold": "x"}, {"tiling": "maybe"}):
        assert_json_error(httpx.post(url, params=params, files={"image": ("s.jpg", small)}), 422, "invalid_option")


# -- bad input ----------------------------------------------------------------------------
def test_bad_inputs_get_json_errors_and_the_server_goes_on(server):
    url = server.url + "/v1/classify"
    cases = [
        ({"files": {"image": ("notes.txt", b"hello, not a picture\n" * 20, "text/plain")}}, 415, "not_an_image"),
        ({"content": b"just text", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": RED[:400] + b"\0" * 400, "headers": {"content-type": "image/jpeg"}}, 422, "undecodable_image"),
        ({"files": {"image": ("bomb.png", png_declaring(50000, 50000), "image/png")}}, 413, "image_too_large"),
        ({"content": b"\xff" * (MAX_BODY + 1), "headers": {"content-type": "image/jpeg"}}, 413, "body_too_large"),
        ({"files": {"other": ("x.jpg", RED, "image/jpeg")}}, 422, "missing_image"),
        ({"files": [("image", (f"{i}.jpg", RED, "image/jpeg")) for i in range(6)]}, 413, "too_many_images"),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422,
         "missing_image"),
    ]
    for kwargs, status, code in cases:
        body = assert_json_error(httpx.post(url, **kwargs), status, code)
        if code in ("not_an_image", "undecodable_image", "image_too_large"):
            (rec,) = body["results"]  # the image's record says it too
            assert rec["error"] and rec["labels"] == [] and rec["presence"] is None
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MB with no Content-Length: stopped at the limit

    assert_json_error(httpx.post(url, content=chunks(), headers={"content-type": "image/jpeg"}), 413,
                      "body_too_large")
    assert_json_error(httpx.get(server.url + "/nowhere"), 404, "not_found")
    assert_json_error(httpx.get(url), 405, "method_not_allowed")
    # one bad image among good ones: its record carries the error, the others are classified
    r = httpx.post(url, files=[("image", ("ok.jpg", RED, "image/jpeg")), ("image", ("bad.txt", b"nope", "text/plain"))])
    assert r.status_code == 200
    ok, bad = r.json()["results"]
    assert ok["labels"] == ["red"] and bad["error"].startswith("not an image") and bad["path"] == "bad.txt"
    assert httpx.post(url, files={"image": ("red.jpg", RED)}).json()["results"][0]["labels"] == ["red"]


def test_api_key_cors_and_page(colour_models):
    settings = ServeSettings(api_key="s3cret", cors_origins=("http://phone.test",))
    with ThreadServer(create_app(Engine(colour_models), settings)) as s:
        wait_ready(s.url)
        url = s.url + "/v1/classify"
        r = httpx.post(url, files={"image": ("r.jpg", RED)})
        assert_json_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_json_error(httpx.get(s.url + "/v1/models", headers={"authorization": "Bearer nope"}), 401,
                          "unauthorized")
        ok = httpx.post(url, files={"image": ("r.jpg", RED)}, headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"][0]["labels"] == ["red"]
        for open_path in ("/healthz", "/readyz", "/metrics", "/"):
            assert httpx.get(s.url + open_path).status_code == 200
        pre = httpx.options(url, headers={"origin": "http://phone.test", "access-control-request-method": "POST",
                                          "access-control-request-headers": "authorization"})
        assert pre.headers.get("access-control-allow-origin") == "http://phone.test"
        other = httpx.options(url, headers={"origin": "http://evil.test", "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        # the stream: no key, a wrong key, the right key
        with ws_client.connect(s.ws_url + "/v1/stream", open_timeout=10) as ws:
            ws.send(RED)
            assert json.loads(ws.recv(10))["error"]["code"] == "unauthorized"
        with ws_client.connect(s.ws_url + "/v1/stream", open_timeout=10) as ws:
            ws.send(json.dumps({"api_key": "wrong"}))
            assert json.loads(ws.recv(10))["error"]["code"] == "unauthorized"
        with ws_client.connect(s.ws_url + "/v1/stream", open_timeout=10) as ws:
            ws.send(json.dumps({"api_key": "s3cret"}))
            ws.send(RED)
            assert json.loads(ws.recv(10))["record"]["labels"] == ["red"]


def test_no_cors_by_default_and_the_page_files(server):
    pre = httpx.options(server.url + "/v1/classify", headers={"origin": "http://phone.test",
                                                              "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    manifest = httpx.get(server.url + "/manifest.webmanifest").json()
    assert manifest["display"] == "standalone" and {"192x192", "512x512"} <= {i["sizes"] for i in manifest["icons"]}
    for icon in manifest["icons"]:
        assert httpx.get(server.url + icon["src"]).status_code == 200
    sw = httpx.get(server.url + "/sw.js")
    assert sw.status_code == 200 and "javascript" in sw.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(server.url + asset).status_code == 200


# -- load: the queue, batching, metrics ---------------------------------------------------
def test_batching_and_queue_full(slow_server):
    url = slow_server.url + "/v1/classify"
    before_busy = metric(slow_server.url, "sixview_errors_total", kind="busy")
    before_calls = metric(slow_server.url, "sixview_batch_images_count", engine="hd")

    def post(_: int) -> httpx.Response:
        return httpx.post(url, files={"image": ("r.jpg", RED)}, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(12)))
    statuses = sorted(r.status_code for r in answers)
    busy = [r for r in answers if r.status_code == 503]
    ok = [r for r in answers if r.status_code == 200]
    assert set(statuses) <= {200, 503} and busy and len(ok) >= 4, statuses  # --queue 4
    for r in busy:
        assert_json_error(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
    assert all(r.json()["results"][0]["labels"] == ["red"] for r in ok)
    assert max(r.json()["batch_images"] for r in ok) >= 2  # requests that waited were run together
    calls = metric(slow_server.url, "sixview_batch_images_count", engine="hd") - before_calls
    assert calls < len(ok)
    assert metric(slow_server.url, "sixview_errors_total", kind="busy") - before_busy == len(busy)
    assert metric(slow_server.url, "sixview_queue_depth") == 0
    assert metric(slow_server.url, "sixview_requests_in_flight") == 0
    assert post(0).status_code == 200  # and it serves again


def test_metrics_count_what_happened(server):
    m = server.url
    keys = [("sixview_requests_total", {"route": "/v1/classify", "method": "POST", "status": "200"}),
            ("sixview_requests_total", {"route": "/v1/classify", "method": "POST", "status": "415"}),
            ("sixview_errors_total", {"kind": "unsupported_media_type"}),
            ("sixview_errors_total", {"kind": "not_an_image"}),
            ("sixview_images_total", {"engine": "hd"}),
            ("sixview_batch_images_sum", {"engine": "hd"}),
            ("sixview_request_seconds_count", {"route": "/v1/classify"}),
            ("sixview_requests_total", {"route": "other", "method": "GET", "status": "404"})]
    before = [metric(m, name, **labels) for name, labels in keys]
    url = m + "/v1/classify"
    httpx.post(url, files=[("image", ("a.jpg", RED)), ("image", ("b.jpg", GREEN)), ("image", ("c.txt", b"text"))])
    httpx.post(url, files={"image": ("a.jpg", BLUE)})
    httpx.post(url, content=b"text", headers={"content-type": "text/plain"})
    httpx.get(m + "/missing")
    after = [metric(m, name, **labels) for name, labels in keys]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1, 3, 3, 3, 1]
    assert metric(m, "sixview_ready") == 1
    assert metric(m, "sixview_batch_seconds_count") > 0


# -- the live stream -----------------------------------------------------------------------
def test_stream_works_on_the_newest_frame_and_drops_the_rest(slow_server):
    frames = [RED] * 9 + [GREEN]
    with ws_client.connect(slow_server.ws_url + "/v1/stream", open_timeout=10) as ws:
        dropped_before = metric(slow_server.url, "sixview_stream_frames_total", outcome="dropped")
        for f in frames:
            ws.send(f)
        results = []
        deadline = time.monotonic() + 30
        while not results or results[-1]["frame"] != len(frames) - 1:
            assert time.monotonic() < deadline, results
            msg = json.loads(ws.recv(30))
            assert msg["type"] == "result", msg
            results.append(msg)
    got = [r["frame"] for r in results]
    assert got == sorted(set(got)) and len(got) < len(frames)  # in order, never queued: most were dropped
    last = results[-1]
    assert last["record"]["frame"] == 9 and last["record"]["labels"] == ["green"]  # the newest frame
    assert last["received"] == 10 and last["dropped"] == 10 - len(got)
    assert list(last["record"])[:1] == ["frame"] and last["latency_ms"] > 0
    dropped = metric(slow_server.url, "sixview_stream_frames_total", outcome="dropped") - dropped_before
    assert dropped == last["dropped"]


def test_stream_settings_and_bad_frames(server):
    with ws_client.connect(server.ws_url + "/v1/stream", open_timeout=10) as ws:
        ws.send(b"not a jpeg at all")
        msg = json.loads(ws.recv(10))
        assert msg["type"] == "result" and msg["record"]["error"].startswith("not an image")
        ws.send("{not json")
        assert json.loads(ws.recv(10))["error"]["code"] == "bad_message"
        ws.send(json.dumps({"engine": "nope"}))
        assert json.loads(ws.recv(10))["error"]["code"] == "invalid_option"
        ws.send(json.dumps({"engine": "hd", "tiling": False, "threshold": 0.5}))
        ws.send(BLUE)
        rec = json.loads(ws.recv(10))["record"]
        assert rec["tiling"] is False and rec["thresholds"]["blue"] == 0.5 and rec["frame"] == 1
        ws.send(json.dumps({"tiling": True, "threshold": None}))
        ws.send(RED)
        rec = json.loads(ws.recv(10))["record"]
        assert rec["tiling"] is True and rec["labels"] == ["red"] and rec["thresholds"]["red"] == 0.3
    assert httpx.get(server.url + "/healthz").status_code == 200


# -- the command ------------------------------------------------------------------------------
