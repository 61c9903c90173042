"""The live stream (`/v1/stream`): the page sends camera frames, the server answers records.

Messages in: text JSON settings (`engine`, `tiling`, `threshold`, and `api_key` when the
server has one; any time, applied to the next frame) and binary frames (JPEG bytes).
Messages out: `{"type": "result", "frame", "record", "latency_ms", "timings_ms",
"received", "dropped"}` per processed frame, `{"type": "error", "error": {...}}`.

A receiving task reads every message as it comes and keeps only the newest frame in a
one-frame slot; a working task takes the slot's frame, classifies it (through the
batcher, with the HTTP requests) and answers. A frame that arrives while the slot is
still full replaces the frame there, which is dropped and counted: frames are never
queued, so the answer is always about the newest frame the server had when it was free.
Frame indices count the frames received (dropped ones leave gaps), like `sixview camera`'s.

A browser's WebSocket is not bound by CORS: a handshake whose `Origin` is neither the server's
own (the scheme and `Host` it was reached by) nor one of `--cors-origin` is refused (403,
`forbidden_origin`) before it is accepted. A client that sends no `Origin` (not a browser) is let in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ..errors import SETUP_ERRORS, status_of
from .batcher import Busy
from .http_errors import ApiError, error_body
from .runtime import Outcome, Runtime
from .uploads import Options, Upload, error_status, parse_options

log = logging.getLogger("sixview.serve")
POLICY_VIOLATION = 1008  # WebSocket close code: e.g. a missing or wrong API key


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    return str(v).lower() if isinstance(v, bool) else str(v)


def read_settings(text: str, options: Options) -> tuple[Options, str | None]:
    """A settings message applied to `options`, and the API key it carries (if any)."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ApiError(400, "bad_message", "text messages must be JSON settings") from None
    if not isinstance(msg, dict):
        raise ApiError(400, "bad_message", "text messages must be a JSON object")
    current = {"engine": options.routing, "tiling": options.tiling, "threshold": options.threshold}
    current.update({k: msg[k] for k in current if k in msg})
    key = msg.get("api_key")
    return parse_options({k: _as_text(v) for k, v in current.items()}), key if isinstance(key, str) else None


class _Slot:
    """The newest frame not yet taken: (index, bytes, arrival time)."""

    def __init__(self) -> None:
        self.frame: tuple[int, bytes, float] | None = None
        self.ready = asyncio.Event()

    def put(self, frame: tuple[int, bytes, float]) -> bool:
        """Keep `frame`; True when it replaced one not yet taken (that one is dropped)."""
        dropped = self.frame is not None
        self.frame = frame
        self.ready.set()
        return dropped

    async def take(self) -> tuple[int, bytes, float]:
        while self.frame is None:
            self.ready.clear()
            await self.ready.wait()
        frame, self.frame = self.frame, None
        return frame


async def _classify_frame(runtime: Runtime, options: Options, index: int, data: bytes) -> Outcome | ApiError:
    """One frame through the server's path, or the error that answers it."""
    try:
        with runtime.batcher.admit():
            return await runtime.classify([Upload("frame", data)], options, key="frame", values=[index])
    except Busy as e:
        return ApiError(503, "busy", f"server busy ({e}): frame {index} skipped")
    except SETUP_ERRORS as e:
        return ApiError(*status_of(e), str(e))  # its class says which (model_invalid, provider_unavailable)
    except Exception as e:  # noqa: BLE001 (one frame's failure; the stream goes on)
        log.error("stream frame %d failed: %s: %s", index, type(e).__name__, e)
        return ApiError(500, "internal", f"frame {index} could not be classified (see the server's log)")


async def _answer_frames(ws: WebSocket, runtime: Runtime, state: dict[str, Any], slot: _Slot,
                         refuse: Callable[[ApiError], Awaitable[None]]) -> None:
    """Classify the newest frame, answer it, and again (the stream's worker task)."""
    while True:
        index, data, arrived = await slot.take()
        outcome = await _classify_frame(runtime, state["options"], index, data)
        if isinstance(outcome, ApiError):
            await refuse(outcome)
            continue
        rec, loaded = outcome.records[0], outcome.loaded[0]
        if loaded.error is not None:
            runtime.metrics.error(error_status(loaded)[1])
        runtime.metrics.stream_frames.labels(outcome="processed").inc()
        await ws.send_json({"type": "result", "frame": index, "record": rec,
                            "latency_ms": round((time.perf_counter() - arrived) * 1e3, 3),
                            "timings_ms": outcome.timings_ms, "received": state["received"],
                            "dropped": state["dropped"]})


def allowed_origins(cors_origins: tuple[str, ...]) -> frozenset[str]:
    """The origins, besides the server's own, whose pages may open the stream."""
    return frozenset(o.strip().rstrip("/").lower() for o in cors_origins)


def origin_ok(ws: WebSocket, allowed: frozenset[str]) -> bool:
    """Whether the handshake's `Origin` (when it has one) is the server's own or an allowed one."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    scheme = "https" if ws.url.scheme in ("wss", "https") else "http"
    own = f"{scheme}://{ws.headers.get('host', '').strip().lower()}"
    return origin == own or origin in allowed


async def serve_stream(ws: WebSocket, runtime: Runtime, authorized: Callable[[str | None], bool],
                       allowed: frozenset[str] = frozenset()) -> None:
    """Serve one WebSocket until the client goes (refused unless its origin is allowed)."""
    metrics = runtime.metrics
    if not origin_ok(ws, allowed):
        metrics.error("forbidden_origin")
        log.warning("refused a stream from origin %s", ws.headers.get("origin"))
        body = error_body("forbidden_origin", "this origin may not open the stream (--cors-origin)")
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(JSONResponse(body, 403))
        else:
            await ws.close(POLICY_VIOLATION, "forbidden origin")
        return
    await ws.accept()
    state: dict[str, Any] = {"options": Options(), "ok": authorized(ws.headers.get("authorization")),
                             "received": 0, "dropped": 0}
    slot = _Slot()

    async def refuse(e: ApiError, close: bool = False) -> None:
        metrics.error(e.code)
        await ws.send_json({"type": "error", **error_body(e.code, e.message)})
        if close:
            await ws.close(POLICY_VIOLATION, e.message[:120])

    worker = asyncio.create_task(_answer_frames(ws, runtime, state, slot, refuse), name="sixview-stream")
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if worker.done():  # the worker ended (the client went away while it answered)
                break
            if msg.get("text") is not None:
                try:
                    state["options"], key = read_settings(msg["text"], state["options"])
                except ApiError as e:
                    await refuse(e)
                    continue
                if key is not None:
                    state["ok"] = authorized(key)
                    if not state["ok"]:
                        await refuse(ApiError(401, "unauthorized", "wrong API key"), close=True)
                        return
            elif msg.get("bytes") is not None:
                if not state["ok"]:
                    await refuse(ApiError(401, "unauthorized", "send {\"api_key\": KEY} first"), close=True)
                    return
                state["received"] += 1
                if slot.put((state["received"] - 1, msg["bytes"], time.perf_counter())):
                    state["dropped"] += 1
                    metrics.stream_frames.labels(outcome="dropped").inc()
    except WebSocketDisconnect:
        pass
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # the client is gone: nothing to answer
            await worker
