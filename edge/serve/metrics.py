"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """The server's counters, gauges and histograms (names start with `sixview_`)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("sixview_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("sixview_request_seconds", "HTTP request latency (first byte in to last byte out)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("sixview_errors", "Errors answered (requests, images and stream frames), by kind",
                              ["kind"], registry=r)
        self.images = Counter("sixview_images", "Images classified, by engine", ["engine"], registry=r)
        self.batch_images = Histogram("sixview_batch_images", "Images per model call, by engine", ["engine"],
                                      buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram("sixview_batch_seconds", "Wall time of one batch (Engine.classify calls)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("sixview_queue_depth", "Images waiting for the model", registry=r)
        self.in_flight = Gauge("sixview_requests_in_flight",
                               "Requests admitted and not yet answered (reading, decoding, waiting, running)",
                               registry=r)
        self.receiving = Gauge("sixview_requests_receiving",
                               "Requests whose body is being received (not yet queued)", registry=r)
        self.stream_frames = Counter("sixview_stream_frames", "Live-stream frames, by outcome (processed, dropped)",
                                     ["outcome"], registry=r)
        self.ready = Gauge("sixview_ready", "1 when the models are loaded and warmed", registry=r)

    def error(self, kind: str) -> None:
        """Count one error of `kind` (its JSON error code)."""
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP answer by route template (unknown paths: "other") and status,
    and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - t0)
