"""`sixview scan --ray` against the local scan, and a cost model of the scan on N Ray workers.

Measured here, on the same images (default: the voc07_val photos, --limit), in rounds that alternate
the two (median round reported; goal: --ray at 0.8x the local scan's images/s or better, its steady
rate; the whole call, actors starting included, is reported beside it):

- the local scan (`edge.scan.scan`: decoding threads + one engine; models loaded beforehand);
- `--ray` on a local Ray with every core (`edge.ray.scan.run`; Ray started once, beforehand): its
  wall time (actors starting included), its steady rate (first record to last) and the driver
  process's CPU time per image (Ray Data's scheduling, the records, the block files);
- the listing rate (`edge.inputs.collect_keyed`, and `pyarrow.fs` on a file:// URI) and the cost of
  writing one block (file + manifest line).

The cost model: a scan of N images on W workers (each like this machine) takes
    listing (N / listing rate, on the driver, before anything runs) + startup
    + N / min(W x per-worker rate, 1 / driver CPU s per image)
so the curve shows where adding workers stops paying: the driver (one process) or the listing. S3
listing is not measured here: --s3-list-rate (keys/s; LIST returns 1000 keys a request) stands in.

    python -m benchmarks.ray_scan                 # shipped models, CPU -> benchmarks/results/<machine>/
    python -m benchmarks.ray_scan --quick         # smoke run: toy model, a few synthetic photos
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cli import SetupError, add_models, add_out_quick, failed, log, parser
from benchmarks._common import (
    VOC_IMAGES,
    out_dir,
    scratch_dir,
    timed_scan,
    toy_models,
    write_results,
    write_synthetic,
    wrote,
)
from benchmarks.ray_scan_driver import driver_ceiling, ray_round
from benchmarks.ray_scan_report import GOAL, HEADLINE, markdown, plot
from edge import MAX_PIXELS
from edge.engine import Engine
from edge.inputs import collect, collect_keyed
from edge.stats import machine_info

WORKERS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def local_round(paths: list[str], engine: Engine, batch: int, workers: int) -> dict[str, Any]:
    """One local scan (records dropped)."""
    return timed_scan(engine, paths, workers, batch)[0]


def listing_rate(folder: str) -> dict[str, float]:
    """Files per second listing `folder`: os.walk (collect_keyed) and pyarrow.fs (file:// URI), warm."""
    from edge.uris import collect_uris

    out = {}
    for name, fn in (("local", lambda: collect_keyed([folder])), ("pyarrow_fs", lambda: collect_uris(
            [Path(folder).resolve().as_uri()]))):
        n, t0, runs = 0, time.perf_counter(), 0
        while runs < 3 or time.perf_counter() - t0 < 0.5:
            n += len(fn())
            runs += 1
        out[name] = n / (time.perf_counter() - t0)
    return out


def block_write_ms(line: bytes, block_size: int, scratch: Path, blocks: int = 5) -> float:
    """Milliseconds to write one block of `block_size` records (file, fsync, manifest line)."""
    from edge.ray.blocks import RunFolder

    lines = [line] * block_size
    with RunFolder(scratch / "bench-blocks", {"images": blocks * block_size}, overwrite=True) as folder:
        t0 = time.perf_counter()
        for b in range(blocks):
            folder.write_block(b, lines, 0)
        return (time.perf_counter() - t0) * 1e3 / blocks


def simulate(images: int, workers: int, per_worker: float, driver_ms: float, list_rate: float,
             startup_s: float) -> dict[str, Any]:
    """The cost model: seconds and images/s for `images` on `workers`, and what bounds it."""
    listing = images / list_rate
    worker_cap, driver_cap = workers * per_worker, 1e3 / driver_ms
    process = images / min(worker_cap, driver_cap)
    bound = "listing" if listing > process else "driver" if driver_cap < worker_cap else "workers"
    total = listing + startup_s + process
    return {"workers": workers, "seconds": total, "images_per_s": images / total, "listing_s": listing,
            "process_s": process, "bound": bound}


def _paths(args: argparse.Namespace) -> tuple[list[str], str]:
    """The images to scan and where they are from: --scan-dir or the VOC photos, else (and with --quick)
    synthetic photos."""
    folder = Path(args.scan_dir) if args.scan_dir else VOC_IMAGES
    if folder.is_dir() and not args.quick:
        return collect([str(folder)])[: args.limit], str(folder)
    tmp = scratch_dir("sixview-rayscan-")
    write_synthetic(tmp, range(args.limit), "synthetic_{i:03d}.jpg")
    return collect([str(tmp)]), f"{tmp} (synthetic)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.ray_scan", __doc__)
    add_models(p)
    p.add_argument("--device", default="cpu", help="device of both scans (default cpu)")
    p.add_argument("--scan-dir", default=None, help="folder to scan (default ../shared/data/voc07_val/images)")
    p.add_argument("--limit", type=int, default=1000, help="images at most (default 1000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of local + ray scans (default 2)")
    p.add_argument("--batch", type=int, default=8, help="images per model call (default 8, as sixview scan)")
    p.add_argument("--workers", type=int, default=2, help="the local scan's decoding threads (default 2)")
    p.add_argument("--actors", type=int, default=None, help="Ray actors (default: the scan's own choice)")
    p.add_argument("--block-size", type=int, default=1000, help="images per block (default 1000)")
    p.add_argument("--driver-images", type=int, default=20_000,
                   help="images through the driver with workers that do nothing (default 20000)")
    p.add_argument("--images", type=int, default=HEADLINE[0], help="images in the modelled scan")
    p.add_argument("--s3-list-rate", type=float, default=10_000.0, help="assumed S3 listing rate, keys/s")
    add_out_quick(p, "smoke run: toy model, 12 synthetic photos, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.rounds, args.block_size, args.driver_images = 12, 1, 4, 200
    return args


@dataclass
class Rounds:
    """What the rounds measured: Ray's start, the local and `--ray` scans, the actors, the driver alone."""

    startup_s: float
    local: list[dict[str, Any]]
    remote: list[dict[str, Any]]
    actors: int
    ceiling: dict[str, Any]


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run_rounds(paths: list[str], engine: Engine, engine_opts: dict[str, Any], scratch: Path,
               args: argparse.Namespace) -> Rounds:
    """Ray started once, then --rounds rounds of the local scan and `--ray`, then the driver alone."""
    import ray

    from edge.ray import scan as ray_scan

    logging.getLogger("ray").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    started = ray_scan._connect("local")
    startup = time.perf_counter() - t0
    local, remote = [], []
    try:
        for i in range(args.rounds):
            local.append(local_round(paths, engine, args.batch, args.workers))
            remote.append(ray_round(paths, engine_opts, args.batch, args.actors, args.block_size, scratch))
            log(f"round {i + 1}: local {local[-1]['images_per_s']:.1f} images/s, ray {remote[-1]['images_per_s']:.1f} "
                f"(steady {remote[-1]['steady_images_per_s']:.1f})")
        res = ray.cluster_resources()
        actors = ray_scan._pool(args.actors, args.device, res.get("CPU", 0.0), res.get("GPU", 0.0), True)[0]
        ceiling = driver_ceiling(args.driver_images, engine_opts, args.block_size, scratch)
        log(f"driver alone: {ceiling['steady_images_per_s']:.0f} images/s, "
            f"{ceiling['driver_cpu_ms_per_image']:.3f} CPU ms per image")
    finally:
        if started:
            ray.shutdown()
    return Rounds(startup, local, remote, actors, ceiling)


def cost_model(rounds: Rounds, folder: str, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The inputs of the cost model (measured here, S3 listing assumed) and its curves and headline."""
    rsteady = _median(rounds.remote, "steady_images_per_s")
    driver_ms = rounds.ceiling["driver_cpu_ms_per_image"]  # the driver's own cost, workers not limiting it
    lists = listing_rate(folder.split(" (")[0])
    line = (scratch / "ray.jsonl").read_bytes().splitlines(keepends=True)[0]
    block_ms = block_write_ms(line, args.block_size, scratch)
    start_s = rounds.startup_s + _median(rounds.remote, "first_record_s")
    model: dict[str, Any] = {"images": args.images, "per_worker": rsteady, "driver_ms": driver_ms,
                             "list_rate_local": lists["local"], "list_rate_pyarrow": lists["pyarrow_fs"],
                             "list_rate_s3": args.s3_list_rate, "block_ms": block_ms, "startup_s": start_s}
    for name, rate in (("local", lists["local"]), ("s3", args.s3_list_rate)):
        model[f"curve_{name}"] = [simulate(args.images, w, rsteady, driver_ms, rate, start_s) for w in WORKERS]
        model[f"headline_{name}"] = simulate(HEADLINE[0], HEADLINE[1], rsteady, driver_ms, rate, start_s)
    return model


def setup(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], str, Engine]:
    """The scan's engine options, the images (read once: the page cache warm for both scans) and a
    checked local engine; SetupError without Ray."""
    try:
        import ray  # noqa: F401

        from edge.ray import scan as ray_scan  # noqa: F401
    except ModuleNotFoundError as e:
        raise SetupError(f"this benchmark needs Ray ({e.name} is missing): pip install 'sixview[ray]'") from e
    models = toy_models("hd", (64, 64)) if args.quick else args.models
    routing = "hd" if args.quick else "auto"
    engine_opts = {"models_dir": models, "engine": routing, "device": args.device, "precision": "auto",
                   "threads": 0, "tiling": True, "threshold": None, "max_pixels": MAX_PIXELS,
                   "guess_in_labels": False}
    paths, folder = _paths(args)
    for p in paths:  # the page cache warm for both
        Path(p).read_bytes()
    engine = Engine(models, routing=routing, device=args.device)
    engine.check()
    return engine_opts, paths, folder, engine


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = parse_args(argv)
    try:
        engine_opts, paths, folder, engine = setup(args)
    except SetupError as e:
        return failed(e)
    import ray

    scratch = scratch_dir("sixview-rayscan-out-")
    rounds = run_rounds(paths, engine, engine_opts, scratch, args)
    local, remote = rounds.local, rounds.remote
    lrate, rrate = _median(local, "images_per_s"), _median(remote, "images_per_s")
    model = cost_model(rounds, folder, scratch, args)
    rsteady = model["per_worker"]
    result = {"benchmark": "ray_scan", "quick": args.quick, "machine": machine_info(), "ray_version": ray.__version__,
              "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg()), "folder": folder, "images": len(paths),
              "settings": {"models": str(engine_opts["models_dir"]), "device": args.device, "batch": args.batch,
                           "actors": rounds.actors, "block_size": args.block_size, "rounds": args.rounds,
                           "local_workers": args.workers},
              "ray_start_s": rounds.startup_s,
              "local": {"images_per_s": lrate, "rounds": [r["images_per_s"] for r in local], "runs": local},
              "driver_alone": rounds.ceiling,
              "ray": {"images_per_s": rrate, "steady_images_per_s": rsteady,
                      "driver_cpu_ms_per_image": _median(remote, "driver_cpu_ms_per_image"),
                      "first_record_s": _median(remote, "first_record_s"),
                      "rounds": [r["images_per_s"] for r in remote],
                      "steady_rounds": [r["steady_images_per_s"] for r in remote], "runs": remote},
              "ratio_wall": rrate / lrate, "ratio_steady": rsteady / lrate, "goal": GOAL, "model": model}
    out = out_dir(args.out, args.quick)
    write_results(out, "ray_scan", result, markdown(result))
    png = plot(result, out / "ray_scan.png")
    log(f"--ray at {result['ratio_wall']:.2f}x the local scan (steady {result['ratio_steady']:.2f}x); "
        + wrote(out, "ray_scan", *(["ray_scan.png"] if png else [])))
    return 0

if __name__ == "__main__":
    sys.exit(main())
