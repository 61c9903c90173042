"""`sixview serve`: the HTTP API and the web page (uvicorn)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import prometheus_client  # noqa: F401
import python_multipart  # noqa: F401 (forms; imported here so that a missing extra is named)
import uvicorn
import websockets  # noqa: F401 (uvicorn speaks WebSocket, for the live stream, through it)

from ..engine import Engine
from ..errors import SETUP_ERRORS
from ..options import SetupError, engine_options, make_engine, setup_error
from .app import create_app
from .guard import Limits, uvicorn_options
from .runtime import ServeSettings


class Server(uvicorn.Server):
    """uvicorn's server, where Ctrl-C and SIGTERM stop it gracefully and the command then exits 0
    (uvicorn's own handler re-raises the signal after the shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def open_models(engine: Engine) -> None:
    """Open and check every model the routing can reach (`--engine`: that one), before the server listens."""
    engine.check()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one), or a setup error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise SetupError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Both files or neither, and a certificate and key that load."""
    if (certfile is None) != (keyfile is None):
        raise click.UsageError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    if certfile is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError) as e:
            raise SetupError(f"cannot use {certfile} / {keyfile} for HTTPS: {e}") from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; set --api-key then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--api-key", envvar="SIXVIEW_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (or env SIXVIEW_API_KEY, kept out of `ps`).")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Allow this browser origin to call the API (repeatable; CORS is off without it).")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTTPS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTTPS private key (PEM).")
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per model call, gathered from concurrent requests.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a batch waits for requests still being decoded.")
@click.option("--queue", "max_queue", type=click.IntRange(min=1), default=32, show_default=True,
              help="Requests in flight at once; more are answered 503 with Retry-After.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=16.0, show_default=True,
              help="Largest request body (and stream frame); larger: 413.")
@click.option("--max-images", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images in one request.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Decoding threads.")
@click.option("--image-memory-mb", type=click.FloatRange(min=1), default=512.0, show_default=True,
              help="Memory the requests' images may hold at once (decoding, their views); more wait their turn.")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a client has to send a request's line and headers; later: 408, closed.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a request body may lag behind --min-upload-rate; more: 408, closed.")
@click.option("--min-upload-rate", type=click.FloatRange(min=0), default=16.0, show_default=True,
              help="KiB/s a request body must average (0: no minimum).")
@click.option("--max-receiving", type=click.IntRange(min=1), default=64, show_default=True,
              help="Request bodies received at once (a request takes a --queue place once its body is in).")
@click.option("--large-image-mp", type=click.FloatRange(min=0.01), default=24.0, show_default=True,
              help="Images declaring more megapixels are decoded in a lane of their own (one thread).")
@click.option("--large-queue", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests with such a large image in flight at once; more: 503.")
@click.option("--log-level", type=click.Choice(("critical", "error", "warning", "info", "debug")), default="info",
              show_default=True)
@engine_options
def serve(host: str, port: int, api_key: str | None, cors_origins: tuple[str, ...], ssl_certfile: Path | None,
          ssl_keyfile: Path | None, max_batch: int, max_wait_ms: float, max_queue: int, max_body_mb: float,
          max_images: int, workers: int, image_memory_mb: float, header_timeout: float, body_timeout: float,
          min_upload_rate: float, max_receiving: int, large_image_mp: float, large_queue: int, log_level: str,
          **engine_opts) -> None:
    """Serve the HTTP API (/v1/classify, /v1/models, /v1/stream, /healthz, /readyz, /metrics)
    and the web page (upload, live camera) at /.

    Listens on 127.0.0.1 unless --host. The models load and are checked before
    the server listens (a model error: one line, exit code 2); /readyz answers
    200 once both are warmed.
    """
    check_tls(ssl_certfile, ssl_keyfile)
    engine = make_engine(**engine_opts)
    try:
        open_models(engine)
    except SETUP_ERRORS as e:
        raise setup_error(e) from None
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             max_body=int(max_body_mb * 2**20), max_images=max_images, decode_workers=workers,
                             image_memory=int(image_memory_mb * 2**20),
                             api_key=api_key or None, cors_origins=cors_origins,
                             limits=Limits(header_timeout=header_timeout, body_timeout=body_timeout,
                                           min_upload_rate=int(min_upload_rate * 1024), max_receiving=max_receiving,
                                           large_pixels=int(large_image_mp * 1e6), large_queue=large_queue))
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"sixview serve: {scheme}://{shown}:{bound}/ (page), {scheme}://{shown}:{bound}/v1/classify (API); "
               f"models {engine.models_dir}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        click.echo("warning: listening beyond this machine without --api-key: anyone who can reach it may use it",
                   err=True)
    app = create_app(engine, settings)
    config = uvicorn.Config(app, **uvicorn_options(app), log_level=log_level, ws_max_size=settings.max_body,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=5,
                            server_header=False)
    logging.getLogger("sixview.serve").setLevel(log_level.upper())
    server = Server(config)
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 1)
