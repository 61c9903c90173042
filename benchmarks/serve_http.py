"""The two ends of `benchmarks.serve`'s HTTP: `sixview serve` in a child process, and a lean client."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import REPO

CLI = "import sys; from edge.cli import main; sys.argv[0] = 'sixview'; main()"


class Server:
    """`sixview serve` in a child process, on a free loopback port."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", "0", "--log-level", "warning",
                                      *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.url = ""
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            m = re.search(r"(http://[\d.]+:\d+)/ \(page\)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            raise RuntimeError("sixview serve did not start:\n" + "".join(lines))
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def get(self, path: str) -> tuple[int, str]:
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server was not ready in time")

    def rss_mb(self) -> float | None:
        status = Path(f"/proc/{self.proc.pid}/status")
        if not status.is_file():
            return None
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read_text()).group(1)) / 1024

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Client:
    """A lean keep-alive HTTP client (the standard library's): the client's own cost is not the server's,
    and on a 2-core machine a heavier client would take CPU from the server it measures."""

    BOUNDARY = "sixview-bench-boundary"

    def __init__(self, url: str):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    @classmethod
    def multipart(cls, data: bytes, name: str = "frame.jpg") -> bytes:
        """A multipart/form-data body with one `image` file, as `curl -F image=@frame.jpg` sends it."""
        return (f"--{cls.BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{cls.BOUNDARY}--\r\n".encode()

    def post(self, body: bytes, content_type: str = "image/jpeg") -> tuple[int, dict[str, Any]]:
        self.conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": content_type})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def close(self) -> None:
        self.conn.close()
