"""`sixview scan --ray` against the local scan, and a cost model of the scan on N Ray workers.

Measured here, on the same images (default: the voc07_val photos, --limit), in rounds that alternate
the two (median round reported; goal: --ray at 0.8x the local scan's images/s or better, its steady
rate; the whole call, actors starting included, is reported beside it):

- the local scan (`edge.scan.scan`: decoding threads + one engine; models loaded beforehand);
- `--ray` on a local Ray with every core (`edge.ray_scan.run`; Ray started once, beforehand): its
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
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_MODELS,
    VOC_IMAGES,
    encode_jpeg,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    synthetic_photo,
    toy_models,
    write_results,
)
from edge import MAX_PIXELS
from edge.engine import Engine
from edge.inputs import collect, collect_keyed
from edge.scan import Summary, scan
from edge.stats import machine_info

GOAL = 0.8
WORKERS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
HEADLINE = (100_000_000, 100)  # images, workers: the figure the README quotes


def cpu_s() -> float:
    """This process's CPU time so far (every thread: Ray's core worker and Ray Data's executor too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def local_round(paths: list[str], engine: Engine, batch: int, workers: int) -> dict[str, Any]:
    """One local scan (records dropped)."""
    s: Summary = scan(paths, engine, lambda rec: None, batch_images=batch, workers=workers)
    return {"images": s.images, "errors": s.errors, "seconds": s.seconds, "images_per_s": s.images / s.seconds}


def ray_round(paths: list[str], engine_opts: dict[str, Any], batch: int, actors: int | None, block_size: int,
              scratch: Path, images: int | None = None) -> dict[str, Any]:
    """One `--ray` scan into a scratch folder; wall, steady rate and driver CPU."""
    from edge import ray_scan

    stamps: list[tuple[float, int]] = []
    c0, t0 = cpu_s(), time.perf_counter()
    code = ray_scan.run(tuple(paths), out=scratch / "ray.jsonl", csv_path=None, resume=False, overwrite=True,
                        shard=None, batch_images=batch, address="local", actors=actors, ray_dir=scratch / "blocks",
                        block_size=block_size, engine_opts=engine_opts,
                        on_records=lambda n, folder: stamps.append((time.perf_counter(), cpu_s(), n)))
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = images or len(paths)
    (t_first, c_first, n_first), (t_last, c_last, n_last) = stamps[0], stamps[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else n / wall
    # the driver's CPU while records flow (not its one-off start: planning, imports, actors starting)
    driver = (c_last - c_first) / (n_last - n_first) if n_last > n_first else cpu / n
    return {"exit_code": code, "images": n, "seconds": wall, "images_per_s": n / wall, "steady_images_per_s": steady,
            "first_record_s": t_first - t0, "driver_cpu_s": cpu, "driver_cpu_ms_per_image": driver * 1e3}


def fake_decode(batch: Any, metas: Any, options: Any) -> Any:
    """`decode_rows` without reading or decoding: what the driver sees, at no cost on the workers."""
    import pyarrow as pa

    return pa.table({"index": batch["index"], "path": batch["path"],
                     "item": pa.array([b"x"] * batch.num_rows, pa.large_binary())})


def sample_line() -> bytes:
    """A record line the size of a real one (an HD verdict over CIFAR-10's ten classes)."""
    from edge.records import FIELDS
    from edge.sinks import json_line

    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    values = {"path": "/data/photos/2026/11/29/camera-07/img_000123456.jpg", "width": 500, "height": 375,
              "engine": "hd", "provider": "cpu", "precision": "fp32", "tiling": True, "labels": ["dog"],
              "guess": None, "presence": 0.912345, "scores": {c: 0.123456 for c in classes},
              "views": {c: "bottom_right" for c in classes}, "thresholds": {c: 0.3 for c in classes},
              "timings_ms": {"decode": 2.1, "preprocess": 1.0, "infer": 11.8, "postprocess": 0.1, "total": 15.0},
              "error": None}
    return json_line({k: values[k] for k in FIELDS})


class FakeClassifier:
    """`Classifier` without a model: each row becomes a record line of the usual size."""

    def __init__(self, models: Any, options: dict[str, Any]):
        self.line = sample_line()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        return pa.table({"index": batch["index"], "line": pa.array([self.line] * batch.num_rows, pa.large_binary())})


def driver_ceiling(images: int, engine_opts: dict[str, Any], block_size: int, scratch: Path) -> dict[str, Any]:
    """The real driver (`edge.ray_scan.run`: listing, Ray Data, records, blocks, merge) over `images`
    empty files, with workers that do nothing: its CPU per image when nothing else limits it."""
    from edge import ray_scan

    folder = scratch / "empty"
    folder.mkdir(exist_ok=True)
    for i in range(images):
        (folder / f"{i:08d}.jpg").touch()
    saved = ray_scan.decode_rows, ray_scan.Classifier
    ray_scan.decode_rows, ray_scan.Classifier = fake_decode, FakeClassifier
    try:
        return ray_round([str(folder)], engine_opts, 8, None, block_size, scratch, images)
    finally:
        ray_scan.decode_rows, ray_scan.Classifier = saved


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
    from edge.ray_blocks import RunFolder

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


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _paths(args: argparse.Namespace) -> tuple[list[str], str]:
    folder = Path(args.scan_dir) if args.scan_dir else VOC_IMAGES
    if folder.is_dir() and not args.quick:
        return collect([str(folder)])[: args.limit], str(folder)
    tmp = scratch_dir("sixview-rayscan-")
    for i in range(args.limit):
        (tmp / f"synthetic_{i:03d}.jpg").write_bytes(encode_jpeg(synthetic_photo(seed=i)))
    return collect([str(tmp)]), f"{tmp} (synthetic)"


def markdown(r: dict[str, Any]) -> str:
    loc, ray_, m = r["local"], r["ray"], r["model"]
    rows = [["local scan", loc["images_per_s"], None, None, ", ".join(f"{x:.1f}" for x in loc["rounds"])],
            ["--ray (wall, actors starting)", ray_["images_per_s"], None, ray_["driver_cpu_ms_per_image"],
             ", ".join(f"{x:.1f}" for x in ray_["rounds"])],
            ["--ray (steady)", ray_["steady_images_per_s"], None, None,
             ", ".join(f"{x:.1f}" for x in ray_["steady_rounds"])]]
    rows[1][2], rows[2][2] = r["ratio_wall"], r["ratio_steady"]
    steady_met, wall_met = r["ratio_steady"] >= GOAL, r["ratio_wall"] >= GOAL
    met = "" if r["quick"] else (f" Goal {GOAL}x: steady rate {'met' if steady_met else 'NOT met'} "
                                 f"({r['ratio_steady']:.2f}x); the whole call {'met' if wall_met else 'not'} "
                                 f"({r['ratio_wall']:.2f}x: the actors' start counts in it).")
    curve = [[c["workers"], c["images_per_s"], hours(c["seconds"]), c["bound"], s3["images_per_s"],
              hours(s3["seconds"]), s3["bound"]] for c, s3 in zip(m["curve_local"], m["curve_s3"], strict=True)]
    head, h3 = m["headline_local"], m["headline_s3"]
    return (f"# `sixview scan --ray` against the local scan\n\n{machine_md(r['machine'])}\n"
            f"The machine was shared with other work during the run (load average {r['load_average']}): "
            "absolute rates are indicative; the ratios are measured in alternating rounds.\n\n"
            f"{r['images']} images from `{r['folder']}`, model `{r['settings']['models']}` on "
            f"{r['settings']['device']}, batch {r['settings']['batch']}; Ray {r['ray_version']} with "
            f"{r['settings']['actors']} actors, block size {r['settings']['block_size']}; median of "
            f"{r['settings']['rounds']} rounds.{met}\n\n"
            + md_table(["run", "images/s", "x local", "driver CPU ms/image", "rounds (images/s)"], rows) +
            f"\nRay steady rate from the first record to the last; the first record came "
            f"{ray_['first_record_s']:.1f} s after the call (actors starting, models loading).\n\n"
            f"## Cost model: N images on W workers like this machine\n\n"
            f"Per-worker rate {m['per_worker']:.1f} images/s (the steady `--ray` rate here). Driver: "
            f"{m['driver_ms']:.3f} CPU ms per image, measured with the real driver and workers that do nothing "
            f"({r['driver_alone']['images']:,} empty files: {r['driver_alone']['steady_images_per_s']:,.0f} "
            f"images/s on this machine, sharing its {r['machine']['cores']} cores with the workers), so one core "
            f"of driver tops out at {1e3 / m['driver_ms']:,.0f} images/s; "
            f"listing {m['list_rate_local']:,.0f} files/s (local, measured; pyarrow.fs "
            f"{m['list_rate_pyarrow']:,.0f}) or {m['list_rate_s3']:,.0f} keys/s (S3, assumed); block write "
            f"{m['block_ms']:.2f} ms per {r['settings']['block_size']} images (inside the driver's CPU); startup "
            f"{m['startup_s']:.0f} s.\n\n" +
            md_table(["workers", "images/s (local listing)", f"{m['images']:,} images", "bound",
                      "images/s (S3 listing)", f"{m['images']:,} images", "bound"], curve) +
            f"\n**{HEADLINE[0]:,} images on {HEADLINE[1]} workers**: {hours(head['seconds'])} with a local "
            f"listing ({head['bound']}-bound: listing {hours(head['listing_s'])}, processing "
            f"{hours(head['process_s'])}), {hours(h3['seconds'])} listing from S3 ({h3['bound']}-bound).\n")


def plot(r: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    m = r["model"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ws = [c["workers"] for c in m["curve_local"]]
    ax.plot(ws, [c["images_per_s"] for c in m["curve_local"]], "o-", label=f"{m['images']:,} images, local listing")
    ax.plot(ws, [c["images_per_s"] for c in m["curve_s3"]], "s-", label=f"{m['images']:,} images, S3 listing")
    ax.plot(ws, [w * m["per_worker"] for w in ws], ":", label="workers alone")
    ax.axhline(1e3 / m["driver_ms"], ls="--", c="grey", label="driver ceiling")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("workers (each like this machine)")
    ax.set_ylabel("images/s over the whole scan")
    ax.set_title(f"sixview scan --ray cost model ({r['machine']['name']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_scan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
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
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<machine>/)")
    p.add_argument("--quick", action="store_true", help="smoke run: toy model, 12 synthetic photos, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.rounds, args.block_size, args.driver_images = 12, 1, 4, 200
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        import ray

        from edge import ray_scan
    except ModuleNotFoundError as e:
        log(f"error: this benchmark needs Ray ({e.name} is missing): pip install 'sixview[ray]'")
        return 2
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
    scratch = scratch_dir("sixview-rayscan-out-")
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
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    lrate, rrate, rsteady = med(local, "images_per_s"), med(remote, "images_per_s"), med(remote, "steady_images_per_s")
    driver_ms = ceiling["driver_cpu_ms_per_image"]  # the driver's own cost, workers not limiting it
    lists = listing_rate(folder.split(" (")[0])
    line = (scratch / "ray.jsonl").read_bytes().splitlines(keepends=True)[0]
    block_ms = block_write_ms(line, args.block_size, scratch)
    start_s = startup + med(remote, "first_record_s")
    model: dict[str, Any] = {"images": args.images, "per_worker": rsteady, "driver_ms": driver_ms,
                             "list_rate_local": lists["local"], "list_rate_pyarrow": lists["pyarrow_fs"],
                             "list_rate_s3": args.s3_list_rate, "block_ms": block_ms, "startup_s": start_s}
    for name, rate in (("local", lists["local"]), ("s3", args.s3_list_rate)):
        model[f"curve_{name}"] = [simulate(args.images, w, rsteady, driver_ms, rate, start_s) for w in WORKERS]
        model[f"headline_{name}"] = simulate(HEADLINE[0], HEADLINE[1], rsteady, driver_ms, rate, start_s)
    import os

    result = {"benchmark": "ray_scan", "quick": args.quick, "machine": machine_info(), "ray_version": ray.__version__,
              "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg()), "folder": folder, "images": len(paths),
              "settings": {"models": str(models), "device": args.device, "batch": args.batch, "actors": actors,
                           "block_size": args.block_size, "rounds": args.rounds, "local_workers": args.workers},
              "ray_start_s": startup,
              "local": {"images_per_s": lrate, "rounds": [r["images_per_s"] for r in local], "runs": local},
              "driver_alone": ceiling,
              "ray": {"images_per_s": rrate, "steady_images_per_s": rsteady,
                      "driver_cpu_ms_per_image": med(remote, "driver_cpu_ms_per_image"),
                      "first_record_s": med(remote, "first_record_s"), "rounds": [r["images_per_s"] for r in remote],
                      "steady_rounds": [r["steady_images_per_s"] for r in remote], "runs": remote},
              "ratio_wall": rrate / lrate, "ratio_steady": rsteady / lrate, "goal": GOAL, "model": model}
    out = out_dir(args.out, args.quick)
    write_results(out, "ray_scan", result, markdown(result))
    png = plot(result, out / "ray_scan.png")
    log(f"--ray at {result['ratio_wall']:.2f}x the local scan (steady {result['ratio_steady']:.2f}x); "
        f"wrote {out / 'ray_scan.json'}, ray_scan.md" + (", ray_scan.png" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
