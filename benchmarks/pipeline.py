"""A six-view frame end to end, and a folder scan, against pure inference.

Frames: a VOC photo (about 500x375, from ../shared/data/voc07_val/images or
--photo) and the same photo upscaled to 1920x1080 and 3840x2160, all JPEG
bytes in memory. Each frame runs through the runtime's own calls (the same as
`sixview scan`): `Engine.load` (reduced JPEG decoding chosen from the
model's size, then six views rendered and converted to the model's float RGB
input) and `Engine.classify` (batch, inference, merge and decision), --warmup
untimed and --runs timed times. Per stage: mean, std,
p50..p99. Pipeline efficiency = inference / (total - decode), goals 0.90 (VOC)
and 0.85 (1080p).

Then `edge.scan.scan` over a folder (default the voc07_val photos, --limit)
with decoding in worker threads: images/s against the ideal, the model alone on
batches of the scan's shape (--scan-batch images x 6 views) measured just
before the scan, goal 0.9.

--backends runs the same frames on several CPU backends side by side, in one
run, interleaved (one frame each, in turn, in a rotating order): by default
ONNX Runtime's CPU provider and, when `openvino` is installed, OpenVINO FP32
and (on CPUs with native BF16) BF16; ratios are ONNX Runtime's p50 / each one's.
The first backend's tables are the main report; the others follow.

Writes pipeline.json and pipeline.md (and pipeline.png) to --out (default
benchmarks/results/<machine>/).

    python -m benchmarks.pipeline                    # shipped HD model, FP32, ONNX Runtime vs OpenVINO
    python -m benchmarks.pipeline --backends cpu     # ONNX Runtime alone
    python -m benchmarks.pipeline --models DIR --engine standard --limit 100
    python -m benchmarks.pipeline --quick            # smoke run on a toy model
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._backends import backend_specs
from benchmarks._cli import SetupError, add_models, add_out_quick, failed, log, parser
from benchmarks._common import (
    VOC_IMAGES,
    bench_frames,
    frame_input,
    out_dir,
    scratch_dir,
    time_interleaved,
    timed_scan,
    toy_models,
    write_results,
    write_synthetic,
    wrote,
)
from benchmarks.pipeline_report import GOALS, STAGES, markdown, plot
from edge.decode import reduction_factor
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.inputs import collect
from edge.stats import machine_info, pipeline_efficiency, scan_efficiency, summarize


def time_frame(engine: Engine, role: str, data: bytes) -> dict[str, float]:
    """One frame through the engine's per-frame path (load, classify); ms per stage. `batch` is
    what classify spends outside the model call and the merge (packing the batch, building the verdict)."""
    t0 = time.perf_counter()
    prepared = engine.load(data, routing=role)
    t1 = time.perf_counter()
    verdict = engine.classify([prepared])[0]
    t2 = time.perf_counter()
    t = verdict.timings_ms
    infer, merge = t["infer"], t["postprocess"]
    return {"decode": t["decode"], "preprocess": (t1 - t0) * 1e3 - t["decode"],
            "batch": (t2 - t1) * 1e3 - infer - merge, "infer": infer, "merge": merge, "total": (t2 - t0) * 1e3}


def infer_alone(engines: dict[str, Engine], role: str, runs: int, warmup: int,
                images: int = 1) -> dict[str, dict[str, float | int]]:
    """Each engine's model alone on `images` six-view frames in one batch (random pixels), interleaved:
    the ideal cost per call."""
    fns = {}
    for label, engine in engines.items():
        model, x = engine.model(role), frame_input(engine.model(role), images)
        fns[label] = lambda m=model, x=x: m(x)
    return {k: summarize(v) for k, v in time_interleaved(fns, warmup, runs).items()}


def frame_result(engine: Engine, role: str, name: str, data: bytes, source: str,
                 samples: list[dict[str, float]]) -> dict[str, Any]:
    """Stage timings and efficiency for one frame from its timed samples."""
    meta = engine.model(role).meta
    probe, _ = engine.decode(data, routing=role)
    stages = {k: summarize([s[k] for s in samples]) for k in STAGES}
    per_run = [pipeline_efficiency(s["infer"], s["total"], s["decode"]) for s in samples]
    mean = {k: stages[k]["mean"] for k in STAGES}
    eff = pipeline_efficiency(mean["infer"], mean["total"], mean["decode"])
    rest = mean["total"] - mean["decode"]
    return {"frame": name, "source": source, "width": probe.width, "height": probe.height,
            "jpeg_bytes": len(data), "decoded": [probe.bgr.shape[1], probe.bgr.shape[0]],
            "jpeg_reduction": reduction_factor(probe.width, probe.height, meta.view_fraction, meta.input_size),
            "stages_ms": stages, "efficiency": eff, "efficiency_p50": float(np.median(per_run)),
            "share_of_non_decode": {k: mean[k] / rest for k in ("preprocess", "batch", "infer", "merge")},
            "goal": GOALS.get(name)}


def bench_frame(engines: dict[str, Engine], role: str, name: str, data: bytes, source: str,
                runs: int, warmup: int) -> dict[str, dict[str, Any]]:
    """One frame through every engine, interleaved (one frame each per round, rotating order)."""
    for engine in engines.values():
        for _ in range(warmup):
            time_frame(engine, role, data)
    labels = list(engines)
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in labels}
    for i in range(runs):
        shift = i % len(labels)
        for k in labels[shift:] + labels[:shift]:
            samples[k].append(time_frame(engines[k], role, data))
    return {k: frame_result(engines[k], role, name, data, source, samples[k]) for k in labels}


def scan_folder(engine: Engine, paths: list[str], workers: int, batch_images: int) -> dict[str, Any]:
    """`edge.scan.scan` over paths (read once beforehand, so the page cache is warm)."""
    for p in paths:
        Path(p).read_bytes()
    errors: list[str] = []
    rate, summary = timed_scan(engine, paths, workers, batch_images, errors)
    ok = summary.images - summary.errors
    per_image = {k: v / ok for k, v in summary.stage_ms.items()} if ok else {}
    return rate | {"mean_ms_per_image": per_image, "workers": workers, "batch_images": batch_images,
                   "first_errors": errors[:3]}


def _scan_paths(args: argparse.Namespace) -> tuple[list[str], str]:
    """The images to scan and where they are from: --scan-dir, the VOC photos, or a few synthetic ones."""
    folder = Path(args.scan_dir) if args.scan_dir else VOC_IMAGES
    if folder.is_dir():
        return collect([str(folder)])[: args.limit], str(folder)
    if args.scan_dir:
        raise SetupError(f"scan folder not found: {folder}")
    # No VOC folder (e.g. CI): a few synthetic photos in a temporary folder, never in the repository.
    tmp = scratch_dir("sixview-scan-")
    write_synthetic(tmp, range(min(args.limit, 8)))
    log(f"{folder} is absent: scanning {min(args.limit, 8)} synthetic photos instead")
    return collect([str(tmp)]), f"{tmp} (synthetic)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.pipeline", __doc__)
    add_models(p)
    p.add_argument("--engine", choices=("standard", "hd"), default="hd", help="which model sees the frames")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="model file (default fp32)")
    p.add_argument("--device", default="cpu", help="auto|cpu|openvino|cuda|tensorrt (default cpu)")
    p.add_argument("--backends", default=None,
                   help="comma-separated DEVICE[:PRECISION] run side by side, e.g. cpu,openvino:fp32,openvino:bf16 "
                        "(default: --device, plus OpenVINO FP32 and native BF16 when --device is cpu and "
                        "openvino is installed)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    p.add_argument("--photo", default=None, help="the VOC-sized photo (default: first of voc07_val/images)")
    p.add_argument("--frames", default="voc,1080p,4k", help="which frames (default voc,1080p,4k)")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed frames per size (default 100)")
    p.add_argument("--scan-dir", default=None, help="folder to scan (default ../shared/data/voc07_val/images)")
    p.add_argument("--limit", type=int, default=300, help="images to scan at most (default 300)")
    p.add_argument("--workers", type=int, default=2, help="scan decode threads (default 2, as sixview scan)")
    p.add_argument("--scan-batch", type=int, default=8, help="images per model call in the scan (as sixview scan)")
    p.add_argument("--scan-rounds", type=int, default=1,
                   help="scans per backend, in rounds alternating the backends; the median-rate round is reported")
    p.add_argument("--no-scan", action="store_true", help="skip the scan throughput measurement")
    add_out_quick(p, "smoke run: toy model, 2 warm-up and 5 timed frames, scan of 8 images")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.runs, args.limit = 2, 5, min(args.limit, 8)
    return args


def scan_run(engine: Engine, label: str, role: str, paths: list[str], folder: str,
             args: argparse.Namespace) -> dict[str, Any]:
    """One scan with its ideal (the model alone on batches of the scan's shape, measured just before)."""
    per_call = infer_alone({label: engine}, role, max(10, args.runs // 4), args.warmup, args.scan_batch)[label]
    ideal_ms = per_call["mean"] / args.scan_batch
    sc = scan_folder(engine, paths, args.workers, args.scan_batch)
    sc["folder"] = folder
    sc["ideal_ms_per_image"] = ideal_ms
    sc["ideal_images_per_s"] = 1e3 / ideal_ms
    sc["efficiency"] = scan_efficiency(sc["images_per_s"], ideal_ms)
    in_scan = sc["mean_ms_per_image"].get("infer")
    sc["efficiency_vs_infer_in_scan"] = scan_efficiency(sc["images_per_s"], in_scan) if in_scan else None
    log(f"  scan {label} {sc['images']} images: {sc['images_per_s']:.1f} images/s, ideal "
        f"{sc['ideal_images_per_s']:.1f} (efficiency {sc['efficiency']:.3f})")
    return sc


def open_engines(models_dir: Path, role: str, args: argparse.Namespace
                 ) -> tuple[dict[str, Engine], dict[str, float]]:
    """One engine per backend with its model opened, and the ms each took to open; SetupError where one fails."""
    engines: dict[str, Engine] = {}
    session_ms: dict[str, float] = {}
    try:
        for label, device, precision in backend_specs(args):
            engines[label] = Engine(models_dir, routing=role, device=device, precision=precision,
                                    threads=args.threads)
            t0 = time.perf_counter()
            engines[label].model(role)
            session_ms[label] = (time.perf_counter() - t0) * 1e3
    except SETUP_ERRORS as e:
        raise SetupError(e) from e
    return engines, session_ms


def measure_frames(engines: dict[str, Engine], session_ms: dict[str, float], role: str,
                   frames: dict[str, tuple[bytes, str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per backend: its model alone, then each frame (every frame through every engine, interleaved)."""
    alone = infer_alone(engines, role, args.runs, args.warmup)
    backends = [{"label": k, "provider": e.model(role).provider, "precision": e.model(role).precision,
                 "session_ms": session_ms[k], "infer_alone_ms": alone[k], "frames": [], "scan": None}
                for k, e in engines.items()]
    for name, (data, source) in frames.items():
        per = bench_frame(engines, role, name, data, source, args.runs, args.warmup)
        for b in backends:
            r = per[b["label"]]
            st = r["stages_ms"]
            log(f"  {name:<6} {b['label']:<18} {r['width']}x{r['height']}: "
                + ", ".join(f"{k} {st[k]['mean']:.2f}" for k in STAGES) + f" ms; efficiency {r['efficiency']:.3f}")
            b["frames"].append(r)
    return backends


def measure_scans(engines: dict[str, Engine], backends: list[dict[str, Any]], role: str,
                  args: argparse.Namespace) -> None:
    """Each backend's `scan`: --scan-rounds rounds alternating the backends, so load changes hit each alike;
    the median-rate round is kept."""
    paths, folder = _scan_paths(args)
    runs: dict[str, list[dict[str, Any]]] = {b["label"]: [] for b in backends}
    for _ in range(args.scan_rounds):
        for b in backends:
            runs[b["label"]].append(scan_run(engines[b["label"]], b["label"], role, paths, folder, args))
    for b in backends:
        rs = sorted(runs[b["label"]], key=lambda sc: sc["images_per_s"])
        b["scan"] = rs[len(rs) // 2] | {"rounds_images_per_s": [sc["images_per_s"] for sc in runs[b["label"]]]}


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline benchmark; return the exit code."""
    args = parse_args(argv)
    models_dir = toy_models(args.engine, (128, 128)) if args.quick else args.models
    role = args.engine
    try:
        engines, session_ms = open_engines(models_dir, role, args)
    except SetupError as e:
        return failed(e)
    model = next(iter(engines.values())).model(role)
    out = out_dir(args.out, args.quick)
    machine = machine_info()
    frames = bench_frames(args.photo, [f.strip() for f in args.frames.split(",")], log)
    log(f"pipeline: {model.path.name} on {', '.join(engines)} ({machine['cpu']})")
    backends = measure_frames(engines, session_ms, role, frames, args)
    result: dict[str, Any] = {
        "benchmark": "pipeline", "quick": args.quick, "machine": machine, "provider": model.provider,
        "settings": {"model": model.path.name, "role": role, "precision": model.precision,
                     "input_size": list(model.meta.input_size), "view_fraction": model.meta.view_fraction,
                     "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
                     "backends": list(engines)},
        "session_ms": backends[0]["session_ms"], "infer_alone_ms": backends[0]["infer_alone_ms"],
        "frames": backends[0]["frames"], "scan": None, "backends": backends}
    if args.no_scan:
        result["scan_skipped"] = "--no-scan"
    else:
        try:
            measure_scans(engines, backends, role, args)
        except SetupError as e:
            return failed(e)
        result["scan"] = backends[0]["scan"]
    write_results(out, "pipeline", result, markdown(result))
    if frames:
        plot(result, out / "pipeline.png")
    log(wrote(out, "pipeline", "pipeline.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
