"""`sixview serve` from the command line, under load, and as a package: the server command's errors,
HTTPS, many clients, per-request thresholds, the batcher, the page shipped offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")

from click.testing import CliRunner  # noqa: E402
from serve_helpers import RED, CliServer, ThreadServer, metric, require_serve, wait_ready  # noqa: E402

ws_client = require_serve()  # before edge.serve is imported

from edge.cli import main  # noqa: E402
from edge.engine import Engine  # noqa: E402
from edge.serve.app import create_app  # noqa: E402
from edge.serve.guard import uvicorn_options  # noqa: E402


def test_serve_command_setup_errors(tmp_path):
    r = CliRunner().invoke(main, ["serve", "--models", str(tmp_path / "none"), "--port", "0"])
    assert r.exit_code == 2 and "no standard model" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["serve", "--ssl-certfile", str(tmp_path / "c.pem"), "--port", "0"])
    assert r.exit_code == 2 and "--ssl-keyfile" in r.output


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    for name in [m for m in sys.modules if m.startswith("edge.serve")]:
        monkeypatch.delitem(sys.modules, name)
    r = CliRunner().invoke(main, ["serve"])
    assert r.exit_code == 2 and "pip install 'sixview[serve]'" in r.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_https_with_a_self_signed_certificate(colour_models, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    app = create_app(Engine(colour_models))  # the guarded protocol over TLS, as `sixview serve` runs it
    with ThreadServer(app, **uvicorn_options(app), ssl_certfile=str(cert), ssl_keyfile=str(key)) as s:
        trust = ssl.create_default_context(cafile=str(cert))
        wait_ready(s.url, verify=trust)
        r = httpx.post(s.url + "/v1/classify", files={"image": ("r.jpg", RED)}, verify=trust)
        assert r.status_code == 200 and r.json()["results"][0]["labels"] == ["red"]


def test_load_many_clients_no_errors_bounded_memory(colour_models):
    """8 clients x 50 requests of a 640x480 JPEG against `sixview serve` in its own process."""
    clients, per_client = 8, 50
    with CliServer("--models", str(colour_models)) as s:
        wait_ready(s.url)
        with httpx.Client(base_url=s.url, timeout=60) as c:  # warm the paths, then take the baseline
            for _ in range(20):
                assert c.post("/v1/classify", files={"image": ("r.jpg", RED)}).status_code == 200
        rss_before = s.rss_mb()
        latencies: list[float] = []
        errors: list[str] = []

        def client(_: int) -> None:
            with httpx.Client(base_url=s.url, timeout=60) as c:
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    r = c.post("/v1/classify", files={"image": ("r.jpg", RED, "image/jpeg")})
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    if r.status_code != 200 or r.json()["results"][0]["labels"] != ["red"]:
                        errors.append(f"{r.status_code} {r.text[:200]}")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        seconds = time.perf_counter() - t0
        rss_after = s.rss_mb()
        batch = metric(s.url, "sixview_batch_images_sum", engine="hd") / max(
            1.0, metric(s.url, "sixview_batch_images_count", engine="hd"))
        assert s.stop() == 0  # SIGTERM: a clean stop
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload: {clients} clients x {per_client} requests (640x480 JPEG, toy models): {len(errors)} errors, "
          f"p50 {statistics.median(latencies):.1f} ms, p95 {q[94]:.1f} ms, {len(latencies) / seconds:.0f} requests/s, "
          f"{batch:.1f} images per model call; server memory {rss_before:.0f} -> {rss_after:.0f} MB")
    assert not errors, errors[:3]
    assert len(latencies) == clients * per_client
    assert rss_after - rss_before < 100, (rss_before, rss_after)


# -- the parts -------------------------------------------------------------------------------
def test_per_request_thresholds_are_rules_on_one_model_call(colour_models):
    from conftest import grey_with_square

    from edge.decode import Decoded
    from edge.serve.engines import Classifier

    engine = Engine(colour_models)
    calls = []
    real = engine.view_scores
    engine.view_scores = lambda items: calls.append(len(items)) or real(items)
    item = engine.prepare(Decoded(grey_with_square(), 600, 450))
    results = Classifier(engine)([([item], None), ([item, item], 0.99), ([item], 0.1)])
    assert calls == [4]  # one model call (per role) whatever thresholds the requests name
    for (verdicts, threshold) in zip(results, (None, 0.99, 0.1), strict=True):
        [own] = Engine(colour_models, threshold=threshold).classify([item])
        assert all(v.decision == own.decision and v.thresholds == own.thresholds for v in verdicts)
    assert results[1][0].decision.labels == [] and results[0][0].decision.labels == ["red"]


def test_serve_with_one_engine_needs_only_its_models(colour_models, tmp_path):
    from edge.serve.cli import open_models

    only_hd = tmp_path / "hd_only"
    only_hd.mkdir()
    for f in colour_models.glob("hd*.onnx"):
        shutil.copy(f, only_hd / f.name)
    open_models(Engine(only_hd, routing="hd"))  # what `sixview serve --engine hd` checks before it listens
    with ThreadServer(create_app(Engine(only_hd, routing="hd"))) as s:
        wait_ready(s.url)
        r = httpx.post(s.url + "/v1/classify", files={"image": ("r.jpg", RED)})
        assert r.status_code == 200 and r.json()["results"][0]["labels"] == ["red"]
        assert [m["role"] for m in httpx.get(s.url + "/v1/models").json()["models"]] == ["hd"]


def test_an_images_http_status_comes_from_its_class_not_its_text():
    from edge.decode import DecodeError, ImageTooLarge, NotImageData
    from edge.pipeline import Loaded
    from edge.serve.uploads import error_status

    def status(e: Exception) -> tuple[int, str]:
        return error_status(Loaded("x", None, str(e), {}, e))

    assert status(ImageTooLarge("9x9")) == (413, "image_too_large")
    assert status(NotImageData("whatever the text")) == (415, "not_an_image")
    assert status(DecodeError("image too large: a corrupt header's words")) == (422, "undecodable_image")
    assert status(ValueError("empty file")) == (422, "undecodable_image")  # no sixview class: the image's


def test_batcher_gathers_concurrent_requests_and_runs_a_lone_one_at_once():
    from edge.serve.batcher import Batcher, Busy

    calls: list[list[int]] = []

    def run(jobs):
        calls.append([len(items) for items, _ in jobs])
        time.sleep(0.05)
        return [[f"v{i}" for i in range(len(items))] for items, _ in jobs]

    async def scenario():
        b = Batcher(run, max_images=4, max_wait_ms=1000, max_pending=6)
        b.start()
        t0 = time.perf_counter()
        with b.admit():
            verdicts, info = await b.submit([1, 2])
        lone = time.perf_counter() - t0
        assert verdicts == ["v0", "v1"] and info.batch_images == 2

        async def request(n):
            with b.admit():
                await asyncio.sleep(0)
                return await b.submit(list(range(n)))

        results = await asyncio.gather(*(request(n) for n in (1, 1, 2, 1, 3, 1)))
        with contextlib.ExitStack() as stack:
            for _ in range(6):
                stack.enter_context(b.admit())
            with pytest.raises(Busy):
                stack.enter_context(b.admit())
        await b.stop()
        return lone, results

    lone, results = asyncio.run(scenario())
    assert lone < 0.5  # a lone request does not wait max_wait_ms for company
    assert [len(v) for v, _ in results] == [1, 1, 2, 1, 3, 1]
    assert calls[0] == [2] and all(sum(c) <= 4 for c in calls[1:])  # never more than max_images a call
    assert len(calls) - 1 < 6  # the six requests shared calls


def test_the_page_ships_with_the_package_and_works_offline():
    import re
    import tomllib

    from conftest import REPO

    from edge.serve.app import STATIC

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "static/*" in data["edge.serve"]  # `pip install .` includes the page
    files = {p.name for p in STATIC.iterdir() if p.is_file()}
    shell = set(re.findall(r'"/(?:static/)?([\w.-]+)"', (STATIC / "sw.js").read_text().split("];")[0]))
    # every file of the page is cached by the service worker (sw.js itself is not, and "/" is index.html)
    assert files - {"sw.js", "index.html"} <= shell, files - shell
    for html_ref in re.findall(r'(?:src|href)="([^"]+)"', (STATIC / "index.html").read_text()):
        assert html_ref.startswith("/"), html_ref  # nothing from elsewhere
