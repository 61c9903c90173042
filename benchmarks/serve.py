"""`sixview serve` against the engine in-process and against `sixview scan`.

The server runs as `sixview serve` in a child process on 127.0.0.1 (the same
models, device and threads as the in-process engine); the clients are lean
keep-alive HTTP clients (the standard library's `http.client`) in this process,
so on a small machine they still take some CPU from the server: the figures are
what one machine serving itself gets, a pessimistic bound.

1. Latency: one 640x480 JPEG (a VOC photo cropped and resized, or a synthetic
   photo), one request at a time: the round trip over HTTP (multipart upload
   as `curl -F` and the page send it, and a raw image/jpeg body) against the
   same frame through the engine in-process (`Engine.load` + `Engine.classify`),
   interleaved in blocks of 10 so both see the same load. Goal: p50 ratio <= 1.15.
2. Throughput: --clients concurrent clients (default 8), each sending raw
   640x480 JPEGs from a folder (VOC photos resized, or synthetic ones) one
   after another, against `edge.scan.scan` (`sixview scan`: 2 decoding
   threads, 8 images per model call) over the same images in this process
   while the server idles. Goal: images/s ratio >= 0.85; p95 latency reported.
   --rounds short rounds, scan then server (so both see the same load), each
   round's ratio reported, and their median.

Writes serve.json and serve.md to --out (default benchmarks/results/<machine>/).

    python -m benchmarks.serve                    # shipped models, CPU
    python -m benchmarks.serve --quick            # smoke run on toy models
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from benchmarks._cli import SetupError, add_models, add_out_quick, failed, log, parser
from benchmarks._common import (
    REPO,
    VOC_IMAGES,
    encode_jpeg,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    shown,
    synthetic_photo,
    timed_scan,
    upscaled_frame,
    voc_photo,
    write_results,
    write_synthetic,
    wrote,
)
from benchmarks.serve_http import Client, Server
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.stats import machine_info, summarize

LATENCY_GOAL = 1.15  # p50 over HTTP / p50 in-process, at most
THROUGHPUT_GOAL = 0.85  # server images/s / scan images/s, at least
SIZE = (640, 480)


def frame_640(photo: str | None) -> tuple[bytes, str]:
    """The 640x480 JPEG of the latency test, and where it came from."""
    data, source = voc_photo(photo)
    if data is None:
        return encode_jpeg(synthetic_photo(*SIZE)), "synthetic"
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    with contextlib.suppress(ValueError):  # ../shared/data/... rather than this machine's absolute path
        source = str(Path("..") / Path(source).resolve().relative_to(REPO.parent))
    return encode_jpeg(upscaled_frame(bgr, *SIZE)), f"`{source}` cropped to 4:3 and resized to 640x480"


def image_folder(limit: int) -> tuple[list[str], str]:
    """`limit` 640x480 JPEGs in a temporary folder: VOC photos resized, or synthetic photos."""
    d = scratch_dir("sixview-serve-bench-")
    sources = sorted(VOC_IMAGES.glob("*.jpg"))[:limit] if VOC_IMAGES.is_dir() else []
    for i, src in enumerate(sources):
        bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
        (d / f"voc_{i:03d}.jpg").write_bytes(encode_jpeg(upscaled_frame(bgr, *SIZE)))
    write_synthetic(d, range(len(sources), limit), "synthetic_{i:03d}.jpg", SIZE)
    origin = f"{len(sources)} voc07_val photos" if sources else "synthetic photos"
    return sorted(str(p) for p in d.iterdir()), f"{origin} resized to 640x480"


def latency(server: Server, engine: Engine, data: bytes, runs: int, warmup: int) -> dict[str, Any]:
    """HTTP round trips (multipart, raw) and in-process frames, interleaved in blocks of 10."""
    samples: dict[str, list[float]] = {"http_multipart": [], "http_raw": [], "in_process": []}
    client = Client(server.url)
    form = Client.multipart(data)
    form_type = f"multipart/form-data; boundary={Client.BOUNDARY}"

    def multipart() -> None:
        status, body = client.post(form, form_type)
        assert status == 200, body

    def raw() -> None:
        status, body = client.post(data)
        assert status == 200, body

    def local() -> None:
        engine.classify([engine.load(data)])

    steps = {"http_multipart": multipart, "http_raw": raw, "in_process": local}
    for step in steps.values():
        for _ in range(warmup):
            step()
    done = 0
    while done < runs:
        block = min(10, runs - done)
        for name, step in steps.items():
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        done += block
    client.close()
    stats = {k: summarize(v) for k, v in samples.items()}
    ratio = {k: stats[k]["p50"] / stats["in_process"]["p50"] for k in ("http_multipart", "http_raw")}
    log(f"  latency p50: in-process {stats['in_process']['p50']:.2f} ms, HTTP multipart "
        f"{stats['http_multipart']['p50']:.2f} ms ({ratio['http_multipart']:.2f}x), raw "
        f"{stats['http_raw']['p50']:.2f} ms ({ratio['http_raw']:.2f}x)")
    return {"stages_ms": stats, "ratio_p50": ratio, "goal": LATENCY_GOAL}


def clients_run(server: Server, paths: list[str], clients: int) -> dict[str, Any]:
    """`clients` threads sending `paths` (split among them) as raw bodies, one request at a time each."""
    blobs = {p: Path(p).read_bytes() for p in set(paths)}
    shares = [paths[i::clients] for i in range(clients)]
    lat: list[float] = []
    errors: list[str] = []
    calls0 = server.metric("sixview_batch_images_count", engine="hd")
    images0 = server.metric("sixview_batch_images_sum", engine="hd")

    def client(share: list[str]) -> None:
        c = Client(server.url)
        for p in share:
            t0 = time.perf_counter()
            status, body = c.post(blobs[p])
            lat.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                errors.append(f"{status}: {str(body)[:200]}")
        c.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    seconds = time.perf_counter() - t0
    calls = server.metric("sixview_batch_images_count", engine="hd") - calls0
    images = server.metric("sixview_batch_images_sum", engine="hd") - images0
    return {"requests": len(lat), "errors": len(errors), "error_samples": errors[:3], "seconds": seconds,
            "images_per_s": len(lat) / seconds, "latency_ms": summarize(lat),
            "images_per_model_call": images / calls if calls else None}


def markdown(r: dict[str, Any]) -> str:
    s, lat = r["settings"], r["latency"]
    st = lat["stages_ms"]
    text = [f"# Serving benchmark{' (quick smoke run: toy models)' if r['quick'] else ''}\n\n",
            machine_md(r["machine"]),
            f"\nModels `{s['models']}` (HD {s['precision']}, provider {r['provider']}), {s['threads'] or 'default'} "
            f"ONNX Runtime threads; `sixview serve` in a child process on 127.0.0.1, clients (`http.client`, "
            f"keep-alive) in the benchmark's process on the same {r['machine']['cores']} cores. {r.get('note', '')}\n",
            f"\n## One 640x480 JPEG, one request at a time\n\n{lat['source']}; {s['runs']} timed runs each after "
            f"{s['warmup']} warm-up runs, interleaved in blocks of 10.\n\n",
            md_table(["path", "mean ms", "p50 ms", "p95 ms", "p99 ms", "p50 / in-process"],
                     [[k, st[k]["mean"], st[k]["p50"], st[k]["p95"], st[k]["p99"],
                       lat["ratio_p50"].get(k, 1.0)] for k in ("in_process", "http_multipart", "http_raw")]),
            f"\nGoal: p50 over HTTP <= {LATENCY_GOAL}x in-process: multipart "
            f"**{lat['ratio_p50']['http_multipart']:.2f}x**, raw body **{lat['ratio_p50']['http_raw']:.2f}x**.\n",
            f"\n## {s['clients']} concurrent clients against `sixview scan`\n\n{r['images']}; "
            f"{s['requests']} requests (raw image/jpeg bodies) per round.\n\n"]
    rows = []
    for i, rd in enumerate(r["rounds"]):
        c, sc = rd["server"], rd["scan"]
        rows.append([i + 1, sc["images_per_s"], c["images_per_s"], rd["ratio"], c["latency_ms"]["p50"],
                     c["latency_ms"]["p95"], c["images_per_model_call"], c["errors"], rd.get("server_rss_mb")])
    text.append(md_table(["round", "scan images/s", "server images/s", "server / scan", "p50 ms", "p95 ms",
                          "images per model call", "errors", "server RSS MB after"], rows))
    text.append(f"\nGoal: server throughput >= {THROUGHPUT_GOAL}x the scan's: median ratio "
                f"**{r['throughput_ratio']:.2f}x**."
                f" Server memory (RSS) {r['rss_mb']['start']:.0f} MB after the latency test, "
                f"{r['rss_mb']['end']:.0f} MB at the end: it grows until the largest batch (--max-batch images) has "
                f"run (ONNX Runtime keeps the memory of its largest run), then stays flat whatever the load.\n")
    return "".join(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.serve", __doc__)
    add_models(p)
    p.add_argument("--device", default="cpu", help="auto|cpu|openvino|cuda|tensorrt (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--photo", default=None, help="the latency test's photo (default: first of voc07_val)")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests and frames (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed requests and frames (default 100)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--images", type=int, default=48, help="distinct images in the throughput test (default 48)")
    p.add_argument("--requests", type=int, default=120, help="requests per throughput round (default 120)")
    p.add_argument("--rounds", type=int, default=5,
                   help="throughput rounds, scan then server; the median ratio is reported (default 5)")
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else loads the machine)")
    add_out_quick(p, "smoke run: toy models, few runs")
    args = p.parse_args(argv)
    if args.quick:  # smaller defaults; values given on the command line stay
        for name, value in {"warmup": 2, "runs": 10, "images": 8, "requests": 32, "rounds": 1}.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    return args


def open_models(args: argparse.Namespace) -> tuple[Path, Engine]:
    """The models folder (--quick: toy models) and an engine on it, checked; SetupError where that fails."""
    try:
        import edge.serve.cli  # noqa: F401
    except ModuleNotFoundError as e:
        raise SetupError(f"the serving benchmark needs the 'serve' extra ({e.name} is missing): "
                         "pip install '.[serve]'") from e
    if args.quick:
        from convert.toy import save_colour_model

        models = scratch_dir("sixview-serve-toy-")
        save_colour_model(models / "standard.onnx", role="standard", input_size=(32, 32))
        save_colour_model(models / "hd.onnx", role="hd", input_size=(128, 128))
    else:
        models = args.models
    engine = Engine(models, device=args.device, threads=args.threads)
    try:
        engine.check()
        engine.model("hd")
    except SETUP_ERRORS as e:
        raise SetupError(e) from e
    return models, engine


def throughput(server: Server, engine: Engine, sequence: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """--rounds rounds over the same images: `sixview scan`'s loop (2 decoding threads, 8 images per model
    call), then the server with --clients clients."""
    rounds = []
    for i in range(args.rounds):
        sc = timed_scan(engine, sequence, workers=2, batch_images=8)[0]  # as `sixview scan` runs
        cl = clients_run(server, sequence, args.clients)
        ratio = cl["images_per_s"] / sc["images_per_s"]
        rounds.append({"scan": sc, "server": cl, "ratio": ratio, "server_rss_mb": server.rss_mb()})
        log(f"  round {i + 1}: scan {sc['images_per_s']:.1f} images/s, server {cl['images_per_s']:.1f} images/s "
            f"({ratio:.2f}x), p95 {cl['latency_ms']['p95']:.1f} ms, "
            f"{cl['images_per_model_call'] or 0:.1f} images per call, {cl['errors']} errors")
    return rounds


def main(argv: list[str] | None = None) -> int:
    """Run the serving benchmark; return the exit code."""
    args = parse_args(argv)
    try:
        models, engine = open_models(args)
    except SetupError as e:
        return failed(e)
    model = engine.model("hd")
    out = out_dir(args.out, args.quick)
    data, source = frame_640(args.photo)
    paths, origin = image_folder(args.images)
    sequence = [paths[i % len(paths)] for i in range(args.requests)]
    server = Server(["--models", str(models), "--device", args.device, "--threads", str(args.threads)])
    try:
        server.wait_ready()
        log(f"serve: {model.path.name} ({model.meta.precision}, {model.provider}) at {server.url}")
        lat = latency(server, engine, data, args.runs, args.warmup) | {"source": source}
        rss_start = server.rss_mb()
        rounds = throughput(server, engine, sequence, args)
        rss_end = server.rss_mb()
    finally:
        server.stop()
    result: dict[str, Any] = {
        "benchmark": "serve", "quick": args.quick, "machine": machine_info(), "provider": model.provider,
        "note": args.note,
        "settings": {"models": shown(models), "precision": model.meta.precision, "device": args.device,
                     "threads": args.threads, "warmup": args.warmup, "runs": args.runs, "clients": args.clients,
                     "requests": args.requests, "images": args.images, "pid_cores": os.cpu_count()},
        "latency": lat, "images": origin, "rounds": rounds,
        "throughput_ratio": float(np.median([r["ratio"] for r in rounds])), "throughput_goal": THROUGHPUT_GOAL,
        "rss_mb": {"start": rss_start or 0.0, "end": rss_end or 0.0}}
    write_results(out, "serve", result, markdown(result))
    log(wrote(out, "serve"))
    errors = sum(r["server"]["errors"] for r in rounds)
    return 1 if errors else 0

if __name__ == "__main__":
    sys.exit(main())
