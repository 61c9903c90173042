"""`sixview serve` against slow, large, vanishing and foreign clients: uvicorn on 127.0.0.1 with the
guarded protocol (`edge/serve/guard.py`), its timeouts set short; raw sockets for what httpx will not send.
Every case is bounded in count (at most 10 slow clients) and time (seconds)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")

from serve_helpers import RED, ThreadServer, assert_json_error, jpeg, metric, require_serve, wait_ready  # noqa: E402

ws_client = require_serve()  # before edge.serve is imported

import numpy as np  # noqa: E402

from edge.engine import Engine  # noqa: E402
from edge.serve import runtime as runtime_mod  # noqa: E402
from edge.serve.app import create_app  # noqa: E402
from edge.serve.guard import Limits, uvicorn_options  # noqa: E402
from edge.serve.lanes import declared_pixels  # noqa: E402
from edge.serve.runtime import ServeSettings  # noqa: E402

pytestmark = pytest.mark.integration

SHORT = Limits(header_timeout=1.0, body_timeout=1.0)


def guarded(app, **config) -> ThreadServer:
    return ThreadServer(app, **uvicorn_options(app), **config)


@pytest.fixture(scope="module")
def short_server(colour_models):
    app = create_app(Engine(colour_models), ServeSettings(max_queue=2, limits=SHORT))
    with guarded(app) as s:
        wait_ready(s.url)
        yield s


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sent until it closed the connection (or `timeout`)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


def json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


HEADS = {
    "body": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n",
    "chunked": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n",
    "header": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n",
}
DRIPS = {"body": b"x", "chunked": b"1\r\nx\r\n", "header": b"X-Slow: 1\r\n"}


def trickle(port: int, kind: str, until: float) -> bytes:
    """One slow client: a request's start, then a few bytes every 0.3 s; what the server answered."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(HEADS[kind])
        try:
            while time.monotonic() < until:
                time.sleep(0.3)
                s.sendall(DRIPS[kind])
        except OSError:
            pass  # closed by the server
        return read_all(s, 2)


def test_slow_clients_never_hold_up_normal_requests(short_server):
    url, port = short_server.url, port_of(short_server.url)
    before = metric(url, "sixview_errors_total", kind="request_timeout")
    kinds = ["body"] * 4 + ["chunked"] * 2 + ["header"] * 4  # 6 slow bodies, the queue has 2 places
    until = time.monotonic() + 6
    with ThreadPoolExecutor(len(kinds)) as pool:
        slow = [pool.submit(trickle, port, k, until) for k in kinds]
        time.sleep(0.5)
        waits = []
        while time.monotonic() < until - 1:
            t0 = time.monotonic()
            r = httpx.post(url + "/v1/classify", files={"image": ("r.jpg", RED)}, timeout=10)
            waits.append(time.monotonic() - t0)
            assert r.status_code == 200 and r.json()["results"][0]["labels"] == ["red"], r.text
            time.sleep(0.2)
        answers = [f.result(15) for f in slow]
    assert len(waits) >= 5 and max(waits) < 1.0, waits
    for raw in answers:  # each slow client was answered 408 in the project's format, and closed
        status, body = json_answer(raw)
        assert status == 408 and body["error"]["code"] == "request_timeout", raw
    assert metric(url, "sixview_errors_total", kind="request_timeout") - before == len(kinds)
    assert metric(url, "sixview_requests_receiving") == 0 and metric(url, "sixview_requests_in_flight") == 0


def test_a_client_that_goes_away_is_a_disconnect_in_one_line(short_server, caplog):
    url, port = short_server.url, port_of(short_server.url)
    before = {k: metric(url, "sixview_errors_total", kind=k) for k in ("disconnect", "internal")}
    caplog.set_level(logging.INFO)
    for head in (HEADS["body"], b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: form-data; "
                 b"name=\"image\"; filename=\"a.jpg\"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + b"x" * 30000)
            time.sleep(0.2)
    deadline = time.monotonic() + 5
    while metric(url, "sixview_errors_total", kind="disconnect") - before["disconnect"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert metric(url, "sixview_errors_total", kind="internal") == before["internal"]
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 2 and not any(r.exc_info for r in caplog.records)
    assert httpx.post(url + "/v1/classify", files={"image": ("r.jpg", RED)}).status_code == 200


def test_what_is_not_http_is_answered_in_json(short_server):
    port = port_of(short_server.url)
    upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    cases = [(b"GARBAGE\r\n\r\n", 400, "bad_request"),
             (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, "header_too_large"),
             (b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n", 400, "bad_request"),  # no key
             (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n" + upgrade + key + b"\r\n", 403, "forbidden")]
    for request, status, code in cases:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request)
            got, body = json_answer(read_all(s))
        assert got == status and body["error"]["code"] == code
    with socket.create_connection(("127.0.0.1", port)) as s:  # connected, silent: the header deadline
        got, body = json_answer(read_all(s, 5))
    assert got == 408 and body["error"]["code"] == "request_timeout"
    with socket.create_connection(("127.0.0.1", port)) as s:  # kept alive after an answer, then a stalled header
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        got, body = json_answer(read_all(s, 5))
    assert got == 408 and body["error"]["code"] == "request_timeout"
    assert_json_error(httpx.get(short_server.url + "/docs"), 404, "not_found")


def test_key_covers_the_schema_cors_and_the_streams_origin(colour_models):
    settings = ServeSettings(api_key="k", cors_origins=("http://phone.test",), limits=SHORT)
    app = create_app(Engine(colour_models), settings)
    with guarded(app) as s:
        wait_ready(s.url)
        assert_json_error(httpx.get(s.url + "/v1/openapi.json"), 401, "unauthorized")
        schema = httpx.get(s.url + "/v1/openapi.json", headers={"authorization": "Bearer k"})
        assert schema.status_code == 200 and "/v1/classify" in schema.json()["paths"]
        refused = httpx.options(s.url + "/v1/classify", headers={"origin": "http://evil.example",
                                                                 "access-control-request-method": "POST"})
        assert_json_error(refused, 400, "cors_refused")
        host = s.ws_url.split("//")[1]
        for origin in (f"http://{host}", "http://phone.test", None):  # its own page, an allowed one, no browser
            with ws_client.connect(s.ws_url + "/v1/stream", origin=origin, open_timeout=10) as ws:
                ws.send(json.dumps({"api_key": "k"}))
                ws.send(RED)
                assert json.loads(ws.recv(10))["record"]["labels"] == ["red"]
        with pytest.raises(Exception) as e:
            ws_client.connect(s.ws_url + "/v1/stream", origin="http://evil.example", open_timeout=10)
        response = e.value.response
        assert response.status_code == 403 and json.loads(response.body)["error"]["code"] == "forbidden_origin"
        assert metric(s.url, "sixview_errors_total", kind="forbidden_origin") == 1


def test_large_images_have_their_own_lane(colour_models, monkeypatch):
    """Large images decode slowly (made 2 s here); a small photo posted behind four of them is answered
    at once, and large requests beyond --large-queue get 503."""
    big = jpeg(np.full((1500, 1500, 3), 128, np.uint8))  # 2.25 MP: "large" under large_pixels=2e6
    slow_decode = runtime_mod.load_upload

    def load(renderer, upload, options):
        if declared_pixels(upload.data) > 2_000_000:
            time.sleep(2)
        return slow_decode(renderer, upload, options)

    monkeypatch.setattr(runtime_mod, "load_upload", load)
    limits = Limits(large_pixels=2_000_000, large_queue=3)
    app = create_app(Engine(colour_models), ServeSettings(limits=limits))
    with guarded(app) as s:
        wait_ready(s.url)

        def post(data: bytes) -> tuple[float, httpx.Response]:
            t0 = time.monotonic()
            r = httpx.post(s.url + "/v1/classify", files={"image": ("x.jpg", data)}, timeout=30)
            return time.monotonic() - t0, r

        with ThreadPoolExecutor(4) as pool:
            large = [pool.submit(post, big) for _ in range(4)]
            time.sleep(0.5)
            wait, small = post(RED)
            answers = [f.result(30)[1] for f in large]
        assert small.status_code == 200 and wait < 1.0, wait
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 200, 200, 503], statuses
        busy = next(r for r in answers if r.status_code == 503)
        assert "--large-queue" in assert_json_error(busy, 503, "busy")["error"]["message"]
    assert threading.active_count() < 50


def test_the_guard_over_h11(colour_models):
    """The same checks on uvicorn's h11 protocol (what uvicorn uses without httptools)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from edge.serve.guard import guarded_protocol

    app = create_app(Engine(colour_models), ServeSettings(limits=SHORT))
    runtime = app.state.runtime
    with ThreadServer(app, http=guarded_protocol(SHORT, runtime.metrics.error, base=H11Protocol)) as s:
        wait_ready(s.url)
        port = port_of(s.url)
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(trickle, port, kind, time.monotonic() + 3) for kind in ("body", "header")]
            assert httpx.post(s.url + "/v1/classify", files={"image": ("r.jpg", RED)}).status_code == 200
            for f in slow:
                status, body = json_answer(f.result(10))
                assert status == 408 and body["error"]["code"] == "request_timeout"
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            status, body = json_answer(read_all(sock))
        assert status == 400 and body["error"]["code"] == "bad_request"
