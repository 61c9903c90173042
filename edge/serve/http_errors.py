"""Every error the server answers is JSON `{"error": {"code", "message"}}`, never a traceback (those
the protocol itself answers, below the app: `guard.py`); no request body is read past the limit (413);
a client that goes away mid-request is a `disconnect`, one log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import ANSWERED

log = logging.getLogger("sixview.serve")

# HTTP status -> the error code used when an error does not name its own
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type", 422: "invalid",
                503: "unavailable"}
CLIENT_CLOSED = 499  # the status recorded for a request whose client went away (it is never sent)


class ApiError(Exception):
    """An error answered as JSON with `status`; `code` is stable, `message` is for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.extra = headers or {}, extra or {}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message}, **extra}


def install_handlers(app: FastAPI, count: Callable[[str], None]) -> None:
    """Answer ApiError, HTTP errors, validation errors and anything unexpected as JSON;
    `count(code)` is called once per error answered."""

    async def api_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ApiError)
        count(e.code)
        return JSONResponse(error_body(e.code, e.message, **e.extra), e.status, headers=e.headers)

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        code = STATUS_CODES.get(e.status_code, "error")
        count(code)
        return JSONResponse(error_body(code, str(e.detail)), e.status_code, headers=e.headers)

    async def invalid(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        count("invalid")
        return JSONResponse(error_body("invalid", f"{where}: {first.get('msg', 'invalid request')}"), 422)

    async def disconnected(request: Request, e: Exception) -> JSONResponse:
        if request.scope.get("state", {}).get(ANSWERED):  # the guard answered it, and counted it
            return JSONResponse(error_body("request_timeout", "request not received in time"), 408)
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("%s went away during %s %s", client, request.method, request.url.path)
        count("disconnect")
        return JSONResponse(error_body("disconnect", "the client went away"), CLIENT_CLOSED)

    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s: %s", request.method, request.url.path, type(e).__name__, e)
        count("internal")
        return JSONResponse(error_body("internal", "internal server error (see the server's log)"), 500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, unexpected)


def body_too_large(limit: int) -> ApiError:
    """The 413 for a body over `limit` bytes."""
    return ApiError(413, "body_too_large", f"request body over the limit of {limit} bytes (--max-body-mb)")


class BodyLimit:
    """ASGI middleware: a request that declares a body over `limit` bytes is answered 413 unread; one
    that sends more than it may (chunked, or lying) fails with 413 at the first byte over the limit,
    so no route ever holds more than `limit` bytes of one body."""

    def __init__(self, app: ASGIApp, limit: int, count: Callable[[str], None]):
        self.app, self.limit, self.count = app, limit, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            e = body_too_large(self.limit)
            self.count(e.code)
            response = JSONResponse(error_body(e.code, e.message), 413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise body_too_large(self.limit)  # answered by the ApiError handler
            return message

        await self.app(scope, limited, send)


class JsonCORS(CORSMiddleware):
    """starlette's CORS middleware, whose refused preflight (400) is a JSON error (`cors_refused`)."""

    def __init__(self, app: ASGIApp, count: Callable[[str], None], **options: Any):
        super().__init__(app, **options)
        self.count = count

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        self.count("cors_refused")
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        message = bytes(response.body).decode() + " (--cors-origin)"
        return JSONResponse(error_body("cors_refused", message), 400, headers=headers)
