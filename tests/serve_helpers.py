"""Real servers for the `sixview serve` tests: uvicorn in a thread, or `sixview serve` in a child process,
on 127.0.0.1 and a free port; stopped at the end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLI = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"


def jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


MAX_BODY = 2 * 2**20  # the tests' --max-body


def photo(corner: str, colour_rgb: tuple[int, int, int]) -> bytes:
    """A 640x480 JPEG with one coloured square (the toy models' classes) in a corner or the centre."""
    from conftest import grey_with_square

    return jpeg(grey_with_square(640, 480, corner, 120, colour_rgb))


RED = photo("top_left", (255, 0, 0))
GREEN = photo("bottom_right", (0, 255, 0))
BLUE = photo("centre", (0, 0, 255))


def require_serve() -> Any:
    """Skip the calling test module unless the `serve` extra and the test clients are installed;
    return the WebSocket client module."""
    import pytest

    for name in ("fastapi", "uvicorn", "python_multipart", "prometheus_client"):
        pytest.importorskip(name)
    return pytest.importorskip("websockets.sync.client")


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def assert_json_error(r: httpx.Response, status: int, code: str) -> dict:
    """A JSON error answer with this status and code, and no trace of a stack."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def wait_ready(url: str, timeout: float = 60.0, **client: Any) -> None:
    """Poll /readyz until 200."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/readyz", timeout=5, **client)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s: {last}")


class ThreadServer:
    """`uvicorn.Server` running an app in a thread, on a socket bound to a free loopback port."""

    def __init__(self, app: Any, ws_max_size: int = 16 * 2**20, **config: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        port = self.sock.getsockname()[1]
        scheme = "https" if config.get("ssl_certfile") else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://127.0.0.1:{port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=ws_max_size,
                                                   timeout_graceful_shutdown=2, **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class CliServer:
    """`sixview serve ... --port 0` in a child process; its URL read from the line it prints."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", "0", "--log-level", "warning",
                                      *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.url = ""

    def __enter__(self) -> CliServer:
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        while not self.url:
            line = self.proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("sixview serve did not start: " + "".join(self.lines) + self.proc.stderr.read())
            self.lines.append(line)
            m = re.search(r"(https?://[\d.]+:\d+)/ \(page\)", line)
            if m:
                self.url = m.group(1)
        threading.Thread(target=self._drain, daemon=True).start()  # keep reading: a full pipe would block it
        return self

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def rss_mb(self) -> float:
        """The server's resident memory (Linux /proc)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024

    def stop(self) -> int:
        """SIGTERM (as a service manager stops it); the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
