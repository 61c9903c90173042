"""`sixview serve`: the HTTP API, the live stream and the installable web page (extra `serve`).

- `app.py`: the FastAPI app factory and the HTTP routes;
- `runtime.py`: what the routes share: the engine, decoding threads, the batcher, readiness;
- `batcher.py`: micro-batching of concurrent requests into one `Engine.classify` call;
- `admission.py`: the bytes the requests' images hold at once (`--image-memory-mb`);
- `engines.py`: the model calls of a batch, per-request thresholds;
- `uploads.py`: reading a request's images and options;
- `stream.py`: the WebSocket live stream (newest frame only);
- `http_errors.py`: JSON errors and the request body limit;
- `guard.py`: uvicorn's protocol with header and body timeouts (a minimum upload rate), JSON answers;
- `lanes.py`: admission places (bodies being received, large images) and the decoding lanes;
- `metrics.py`: Prometheus metrics;
- `cli.py`: the click command; `static/`: the page.

Only `cli.py` is imported by `edge.cli`, and only when `sixview serve` runs.
"""
