"""Connections that send too slowly, or send what is not HTTP, are answered and closed by the server
itself, below the app: uvicorn has no timeout while a request arrives (its keep-alive timeout covers
only the wait between requests, and every byte received restarts it), and ASGI middleware runs only
once the headers are complete.

`guarded_protocol(limits, count)` is uvicorn's HTTP protocol class
(httptools, or h11 without it) with, per connection:

- a header deadline: the request line and headers complete within `header_timeout` seconds of the
  connection (or of the first byte after the previous answer), and at most `max_header_bytes`;
- a minimum upload rate: while a body arrives, the bytes received must keep up with
  `min_upload_rate` bytes a second, `body_timeout` seconds allowed behind (time while the server
  itself is not reading does not count);
- JSON answers for all of these (408, 431) and for what uvicorn answers as "Invalid HTTP request"
  (400), the project's error format; `count(code)` is called once for each.

A WebSocket upgrade leaves the protocol (and these checks) at the handshake; `guarded_ws_protocol`
is uvicorn's WebSocket protocol whose refusals (a malformed handshake: 400; a socket the app closes
before accepting it, e.g. an unknown path: 403) are JSON too. `uvicorn_options(app)`: both, for
`uvicorn.Config`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("sixview.serve")
ANSWERED = "sixview.answered"  # set in a request's scope state when the guard answered it


@dataclass(frozen=True)
class Limits:
    """How slowly a client may send, and the admission of requests (the `sixview serve` options)."""

    header_timeout: float = 10.0  # s for the request line and headers
    body_timeout: float = 10.0  # s a body may lag behind the minimum rate
    min_upload_rate: int = 16 * 1024  # bytes/s a body must average (after body_timeout)
    max_header_bytes: int = 64 * 1024  # request line and headers
    max_receiving: int = 64  # request bodies being received at once (the queue counts only complete ones)
    large_pixels: int = 24_000_000  # an image declaring more pixels is decoded in the large images' lane
    large_queue: int = 8  # requests with a large image in flight at once


def header_size(scope: dict[str, Any]) -> int:
    """About the bytes of a request's line and headers."""
    return (len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            + sum(len(name) + len(value) + 4 for name, value in scope.get("headers") or ()))


def raw_error(status: int, reason: str, code: str, message: str, extra_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 error answer (JSON, connection closed) written by the protocol itself."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}".encode()]
    head += [name + b": " + value for name, value in extra_headers]
    head += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def uvicorn_options(app: Any) -> dict[str, Any]:
    """The guarded protocols for an app of `create_app` (its limits; errors counted in its metrics)."""
    runtime = app.state.runtime
    return {"http": guarded_protocol(runtime.settings.limits, runtime.metrics.error),
            "ws": guarded_ws_protocol(runtime.metrics.error)}


def guarded_ws_protocol(count: Callable[[str], None]) -> type[asyncio.Protocol] | str:
    """uvicorn's WebSocket protocol (websockets' sans-I/O), whose HTTP refusals are JSON errors
    ("auto", uvicorn's own choice, with a uvicorn that has no sans-I/O protocol)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        return "auto"

    class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn.reject = json_reject(self.conn.reject, count)  # type: ignore[method-assign]

    return GuardedWebSocketProtocol


def json_reject(reject: Callable[[Any, str], Any], count: Callable[[str], None]) -> Callable[[Any, str], Any]:
    """websockets' `ServerProtocol.reject` (a text/plain answer) with the project's JSON body instead."""

    def rejected(status: Any, text: str) -> Any:
        response = reject(status, text)
        code = {400: "bad_request", 403: "forbidden", 500: "internal"}.get(response.status_code, "websocket_refused")
        if response.status_code == 400:
            count(code)  # what the app refuses (403) it has counted itself
        message = text.strip().removeprefix("Failed to open a WebSocket connection: ") or "WebSocket refused"
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
            del response.headers[name]
            response.headers[name] = value
        response.body = body
        return response

    return rejected


def guarded_protocol(limits: Limits, count: Callable[[str], None], base: type = AutoHTTPProtocol
                     ) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (`base`: httptools', or h11's without httptools) with the header
    deadline, the minimum upload rate and JSON errors."""
    tick = max(0.05, min(1.0, limits.header_timeout / 4, limits.body_timeout / 4))
    return type("GuardedHTTPProtocol", (_Guard, base),
                {"g_limits": limits, "g_tick": tick, "g_count": staticmethod(count)})


class _Guard:
    """The checks, mixed into uvicorn's protocol class by `guarded_protocol`."""

    g_limits: Limits
    g_tick: float
    g_count: Callable[[str], None]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    client: Any
    flow: Any
    server_state: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.g_seen: Any = None  # the request whose body is being timed
        self.g_header_since: float | None = time.monotonic()  # a request's headers are awaited since then
        self.g_header_bytes = 0
        self.g_body_start = self.g_body_bytes = 0.0
        self.g_timer = self.loop.call_later(self.g_tick, self.g_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.g_timer.cancel()
        super().connection_lost(exc)

    def g_between(self) -> bool:
        """No request is being received or served: the next one's headers are awaited."""
        cycle = self.cycle
        return cycle is None or (cycle.response_complete and not cycle.more_body)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.g_between():
            if self.g_header_since is None:
                self.g_header_since = now
            self.g_header_bytes += len(data)
        elif self.cycle.more_body:
            self.g_body_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # answered (400), or upgraded to a WebSocket
        if self.cycle is not None and self.cycle is not self.g_seen:  # a new request: its headers are in
            self.g_seen, self.g_header_since, self.g_header_bytes = self.cycle, None, 0
            self.g_body_start, self.g_body_bytes = now, 0
            if header_size(self.cycle.scope) > self.g_limits.max_header_bytes:
                self.g_too_large()
        elif self.g_between() and self.g_header_bytes > self.g_limits.max_header_bytes:  # still no end of headers
            self.g_too_large()

    def g_too_large(self) -> None:
        self.g_refuse(431, "Request Header Fields Too Large", "header_too_large",
                      f"request line and headers over {self.g_limits.max_header_bytes} bytes")

    def g_check(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        now, cycle = time.monotonic(), self.cycle
        if self.g_between():
            since = self.g_header_since
            if since is not None and now - since > self.g_limits.header_timeout:
                self.g_refuse(408, "Request Timeout", "request_timeout",
                              f"request headers not received within {self.g_limits.header_timeout:g} s")
                return
        elif cycle.more_body:
            if self.flow.read_paused:  # the server is not reading: not the client's delay
                self.g_body_start += self.g_tick
            lim = self.g_limits
            behind = lim.min_upload_rate * (now - self.g_body_start - lim.body_timeout) - self.g_body_bytes
            if behind > 0:
                rate = self.g_body_bytes / max(now - self.g_body_start, 1e-3)
                self.g_refuse(408, "Request Timeout", "request_timeout",
                              f"request body arriving at {rate:.0f} bytes/s, under the minimum of "
                              f"{self.g_limits.min_upload_rate} bytes/s")
                return
        self.g_timer = self.loop.call_later(self.g_tick, self.g_check)

    def g_refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer `status` as JSON (unless the app already answers) and close the connection."""
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            self.transport.close()  # answered before its body was read: the rest is not awaited
            return
        self.g_answer(status, reason, code, message)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closed the connection of %s: %s (%s)", client, message, status)

    def g_answer(self, status: int, reason: str, code: str, message: str) -> None:
        """Write the JSON answer (unless the app's has begun), end the app's request, count, close."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(raw_error(status, reason, code, message, self.server_state.default_headers))
        if cycle is not None and not cycle.response_complete:
            cycle.scope["state"][ANSWERED] = True  # the app's read ends (a disconnect) without a count
            cycle.disconnected = True  # and what it sends is dropped
            cycle.message_event.set()
        self.g_count(code)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:  # uvicorn's answer to what it cannot parse
        self.g_answer(400, "Bad Request", "bad_request", "invalid HTTP request")
