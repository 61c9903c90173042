"""The FastAPI app: the page, health, readiness, metrics, `/v1/models`, `/v1/classify`, `/v1/stream`.

`create_app(engine, settings)` builds it; `sixview serve` (cli.py) runs it with uvicorn.
Everything under `/v1/` needs the API key when one is set, the OpenAPI schema included (Bearer;
the stream takes it in its first message, as browsers cannot set headers on a WebSocket, and
checks the page's `Origin`). Slow clients and what is not HTTP are answered below the app
(`guard.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..engine import Engine
from ..errors import SETUP_ERRORS, status_of
from .batcher import Busy
from .http_errors import ApiError, BodyLimit, JsonCORS, error_body, install_handlers
from .lanes import Places, declared_pixels
from .metrics import Metrics, MetricsMiddleware
from .runtime import Runtime, ServeSettings
from .stream import allowed_origins, serve_stream
from .uploads import error_status, read_request

STATIC = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere; frames go over this origin's WebSocket.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                           "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def key_ok(given: str | None, expected: str | None) -> bool:
    """Whether `given` (an Authorization header, or a bare key) carries the expected key."""
    if expected is None:
        return True
    if not given:
        return False
    token = given[7:] if given[:7].lower() == "bearer " else given
    return secrets.compare_digest(token.strip().encode(), expected.encode())


def busy(e: Busy, settings: ServeSettings) -> ApiError:
    """The 503 for a request over the queue's limit."""
    return ApiError(503, "busy", f"server busy ({e}); retry in {settings.retry_after_s} s",
                    headers={"Retry-After": str(settings.retry_after_s)})


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The server's app around `engine` (its models are loaded and warmed when the app starts)."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    runtime = Runtime(engine, settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # no documentation pages; the schema is a /v1/ route (behind the key)
    app = FastAPI(title="sixview", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    install_handlers(app, metrics.error)
    app.add_middleware(BodyLimit, limit=settings.max_body, count=metrics.error)
    if settings.cors_origins:
        app.add_middleware(JsonCORS, count=metrics.error, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(api(runtime))
    add_service_routes(app, runtime)
    return app


def api(runtime: Runtime) -> APIRouter:
    """The `/v1/` routes, each behind the API key (when one is set): the OpenAPI schema too."""
    engine, settings = runtime.engine, runtime.settings

    def require_key(request: Request) -> None:
        if not key_ok(request.headers.get("authorization"), settings.api_key):
            raise ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)",
                           headers={"WWW-Authenticate": "Bearer"})

    v1, key = APIRouter(prefix="/v1"), [Depends(require_key)]

    @v1.get("/models", dependencies=key)
    def models() -> dict[str, Any]:  # a plain def runs in a thread: before warm-up it may open a model
        """The loaded models (classes, thresholds, input size, precision, provider, provenance) and defaults."""
        return {"models": runtime.models(), "defaults": {"engine": engine.routing, "tiling": engine.tiling,
                                                         "threshold": engine.threshold},
                "limits": {"max_pixels": engine.max_pixels, "max_body_bytes": settings.max_body,
                           "max_images": settings.max_images, "max_batch": settings.max_batch},
                "ready": runtime.ready.is_set()}

    @v1.get("/openapi.json", dependencies=key, include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    v1.add_api_route("/classify", classify_route(runtime), methods=["POST"], dependencies=key,
                     response_class=JSONResponse)
    allowed = allowed_origins(settings.cors_origins)

    @v1.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        """Live frames: JPEG binary messages in, one record per processed frame out (newest frame only)."""
        await serve_stream(ws, runtime, lambda given: key_ok(given, settings.api_key), allowed)

    return v1


def classify_route(runtime: Runtime) -> Callable[[Request], Awaitable[JSONResponse]]:
    """`POST /v1/classify`. A request holds a receiving place (`--max-receiving`) while its body arrives
    and a queue place (`--queue`) only once it is complete; one with a large image also holds one of
    `--large-queue` places, waits for the one before it (so a single large request at a time holds
    the images' memory budget, `admission.py`) and has its large images decoded in their own lane."""
    settings, metrics, limits = runtime.settings, runtime.metrics, runtime.settings.limits
    receiving = Places(limits.max_receiving, "request bodies being received", "--max-receiving",
                       metrics.receiving.set)
    large = Places(limits.large_queue, "requests with a large image in flight", "--large-queue")
    lane = asyncio.Semaphore(1)  # large requests are classified one at a time: one holds the memory budget

    @contextlib.asynccontextmanager
    async def turn(is_large: bool) -> AsyncIterator[None]:
        if not is_large:
            yield
            return
        with large.hold():
            async with lane:
                yield

    async def classify(request: Request) -> JSONResponse:
        """Multipart `image` files (one or more) or a raw image/* body; options `engine`, `tiling`,
        `threshold` in the query or the form. One scan record per image, plus the server's timings."""
        t0 = time.perf_counter()
        try:
            with receiving.hold():
                uploads, options = await read_request(request, settings.max_images)
            t1 = time.perf_counter()
            is_large = any(declared_pixels(u.data) > limits.large_pixels for u in uploads)
            with runtime.batcher.admit():
                async with turn(is_large):
                    outcome = await runtime.classify(uploads, options)
        except Busy as e:
            raise busy(e, settings) from None
        except SETUP_ERRORS as e:
            raise ApiError(*status_of(e), str(e)) from None  # its class says which (model_invalid, ...)
        timings = {"read": round((t1 - t0) * 1e3, 3), **outcome.timings_ms,
                   "total": round((time.perf_counter() - t0) * 1e3, 3)}
        body = {"results": outcome.records, "timings_ms": timings, "batch_images": outcome.batch_images}
        failed = [x for x in outcome.loaded if x.error is not None]
        if failed and len(failed) == len(outcome.loaded):  # nothing classified: an error answer, records kept
            status, code = error_status(failed[0])
            raise ApiError(status, code, failed[0].error or "", extra=body)
        for x in failed:
            metrics.error(error_status(x)[1])
        return JSONResponse(body)

    return classify


def add_service_routes(app: FastAPI, runtime: Runtime) -> None:
    """Health, readiness, metrics, and the page with its files."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 200 once the models are loaded and warmed, 503 before (or if they failed)."""
        if runtime.ready.is_set():
            return JSONResponse({"status": "ready"})
        message = runtime.failure or "loading and warming the models"
        return JSONResponse(error_body("not_ready", message), 503, headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        # served from the root so that it may control the whole page
        return FileResponse(STATIC / "sw.js", media_type="text/javascript",
                            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"})

    @app.get("/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> FileResponse:
        return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
