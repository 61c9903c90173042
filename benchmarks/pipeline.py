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

from benchmarks._common import (
    DEFAULT_MODELS,
    VOC_IMAGES,
    bench_frames,
    encode_jpeg,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    synthetic_photo,
    time_interleaved,
    toy_models,
    write_results,
)
from edge.decode import reduction_factor
from edge.engine import Engine
from edge.errors import SETUP_ERRORS
from edge.inputs import collect
from edge.scan import scan
from edge.stats import machine_info, pipeline_efficiency, scan_efficiency, summarize

STAGES = ("decode", "preprocess", "batch", "infer", "merge", "total")
GOALS = {"voc": 0.90, "1080p": 0.85}
SCAN_GOAL = 0.90


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
        model = engine.model(role)
        h, w = model.meta.input_size
        x = np.random.default_rng(0).uniform(0, 255, (6 * images, h, w, 3)).astype(np.float32)
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
    errors = []
    summary = scan(paths, engine, lambda rec: rec["error"] and errors.append(rec["error"]),
                   workers=workers, batch_images=batch_images)
    ok = summary.images - summary.errors
    per_image = {k: v / ok for k, v in summary.stage_ms.items()} if ok else {}
    return {"images": summary.images, "errors": summary.errors, "seconds": summary.seconds,
            "images_per_s": summary.images / summary.seconds if summary.seconds else 0.0,
            "mean_ms_per_image": per_image, "workers": workers, "batch_images": batch_images,
            "first_errors": errors[:3]}


def backend_md(b: dict[str, Any], quick: bool) -> str:
    """One backend's per-stage table, its model alone, and its scan."""
    rows = []
    for f in b["frames"]:
        st = f["stages_ms"]
        goal = f["goal"]
        met = "" if goal is None or quick else ("yes" if f["efficiency"] >= goal else "NO")
        rows.append([f"{f['frame']} {f['width']}x{f['height']}",
                     f"{f['decoded'][0]}x{f['decoded'][1]}",
                     *(f"{st[k]['mean']:.2f} ({st[k]['p95']:.2f})" for k in STAGES),
                     f["efficiency"], goal, met])
    text = [f"\n## {b['label']} ({b['provider']}, {b['precision']}; opened in {b['session_ms']:.0f} ms)\n\n",
            md_table(["frame", "decoded at", *STAGES, "efficiency", "goal", "met"], rows)]
    a = b["infer_alone_ms"]
    text.append(f"\nModel alone, one six-view batch: mean {a['mean']:.2f} ms, p50 {a['p50']:.2f}, "
                f"p95 {a['p95']:.2f} ms.\n")
    sc = b.get("scan")
    if sc:
        per = ", ".join(f"{k} {v:.2f}" for k, v in sc["mean_ms_per_image"].items())
        text.append(f"\nScan of `{sc['folder']}`: {sc['images']} images ({sc['errors']} errors) in "
                    f"{sc['seconds']:.2f} s = **{sc['images_per_s']:.1f} images/s** with {sc['workers']} decode "
                    f"workers, {sc['batch_images']} image(s) per batch. Ideal (the model alone on batches of that "
                    f"shape, measured just before) "
                    f"{sc['ideal_images_per_s']:.1f} images/s: efficiency **{sc['efficiency']:.3f}** "
                    f"(goal {SCAN_GOAL}). Mean ms per image inside the scan: {per}.\n")
    return "".join(text)


def side_by_side_md(result: dict[str, Any]) -> str:
    """Frame totals, the model alone and scan throughput per backend, with ratios to the first."""
    bs = result["backends"]
    if len(bs) < 2:
        return ""
    ref = bs[0]

    def cell(v: float, r: float, fmt: str = "{:.2f}") -> str:
        return fmt.format(v) + ("" if r == v else f" (x{r / v:.2f})")

    rows = []
    for i, f in enumerate(ref["frames"]):
        rows.append([f"{f['frame']} total p50 ms",
                     *(cell(b["frames"][i]["stages_ms"]["total"]["p50"], f["stages_ms"]["total"]["p50"]) for b in bs)])
    rows.append(["model alone, batch 6, p50 ms",
                 *(cell(b["infer_alone_ms"]["p50"], ref["infer_alone_ms"]["p50"]) for b in bs)])
    if all(b.get("scan") for b in bs):
        rate = [b["scan"]["images_per_s"] for b in bs]
        rows.append(["scan images/s", *(f"{r:.1f} (x{r / rate[0]:.2f})" for r in rate)])
    return ("\n## Side by side (frames and model alone interleaved in one run; xN: the first backend's time / "
            "this one's; scan: this one's rate / the first's, the median of rounds that alternate the backends)\n\n"
            + md_table(["measure", *(b["label"] for b in bs)], rows))


def markdown(result: dict[str, Any]) -> str:
    """The report: per backend the per-stage table, efficiency against the goals, scan throughput;
    then the backends side by side."""
    s = result["settings"]
    text = ["# Six-view pipeline\n", machine_md(result["machine"]),
            f"\nModel `{s['model']}` (threads {s['threads'] or 'default'},"
            f" input {s['input_size'][0]}x{s['input_size'][1]}); {s['warmup']} warm-up and {s['runs']} timed"
            " frames each. Stage times: mean ms (p95). `preprocess` = six views rendered and converted to float RGB;"
            " `batch` = the rest of classify outside the model and the merge (batch packing, verdict)."
            " Efficiency = infer / (total - decode), from the means.\n"]
    text += [backend_md(b, result["quick"]) for b in result["backends"]]
    if result.get("scan_skipped"):
        text.append(f"\nScan skipped: {result['scan_skipped']}\n")
    text.append(side_by_side_md(result))
    return "".join(text)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Stacked bars: where a frame's time goes, per frame size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{f['frame']}\n{b['label']}" if len(result["backends"]) > 1 else f["frame"], f)
            for f_i in range(len(result["frames"])) for b in result["backends"] for f in [b["frames"][f_i]]]
    frames = [f for _, f in bars]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(bars)), 3.8))
    bottom = np.zeros(len(frames))
    for k in ("decode", "preprocess", "batch", "infer", "merge"):
        v = np.array([f["stages_ms"][k]["mean"] for f in frames])
        ax.bar([name for name, _ in bars], v, bottom=bottom, label=k)
        bottom += v
    for i, f in enumerate(frames):
        ax.text(i, bottom[i], f"eff {f['efficiency']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("ms per frame (mean)")
    ax.set_title(f"sixview frame stages, {result['settings']['model']} on {result['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scan_paths(args: argparse.Namespace, log) -> tuple[list[str], str]:
    folder = Path(args.scan_dir) if args.scan_dir else VOC_IMAGES
    if folder.is_dir():
        return collect([str(folder)])[: args.limit], str(folder)
    if args.scan_dir:
        raise FileNotFoundError(f"scan folder not found: {folder}")
    # No VOC folder (e.g. CI): a few synthetic photos in a temporary folder, never in the repository.
    tmp = scratch_dir("sixview-scan-")
    for i in range(min(args.limit, 8)):
        (tmp / f"synthetic_{i}.jpg").write_bytes(encode_jpeg(synthetic_photo(seed=i)))
    log(f"{folder} is absent: scanning {min(args.limit, 8)} synthetic photos instead")
    return collect([str(tmp)]), f"{tmp} (synthetic)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="models folder (default: models/)")
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
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<machine>/)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: toy model, 2 warm-up and 5 timed frames, scan of 8 images")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.runs, args.limit = 2, 5, min(args.limit, 8)
    return args


def scan_run(engine: Engine, label: str, role: str, paths: list[str], folder: str, args: argparse.Namespace,
             log) -> dict[str, Any]:
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


def backend_specs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(label, device, precision) per backend to run side by side."""
    import importlib.util

    from edge.openvino_backend import native_bf16

    if args.backends:
        specs = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        specs = [args.device]
        if args.device == "cpu" and args.precision == "fp32" and importlib.util.find_spec("openvino") is not None:
            specs += ["openvino:fp32"] + (["openvino:bf16"] if native_bf16() else [])
    out = []
    for spec in specs:
        device, _, precision = spec.partition(":")
        precision = precision or ("fp32" if device == "openvino" else args.precision)
        name = {"cpu": "ONNX Runtime", "openvino": "OpenVINO"}.get(device, device)
        out.append((f"{name} {precision}", device, precision))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline benchmark; return the exit code."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    models_dir = toy_models(args.engine, (128, 128)) if args.quick else args.models
    role = args.engine
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
        log(f"error: {e}")
        return 2
    model = next(iter(engines.values())).model(role)
    out = out_dir(args.out, args.quick)
    machine = machine_info()
    frames = bench_frames(args.photo, [f.strip() for f in args.frames.split(",")], log)
    log(f"pipeline: {model.path.name} on {', '.join(engines)} ({machine['cpu']})")
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
            paths, folder = _scan_paths(args, log)
        except FileNotFoundError as e:
            log(f"error: {e}")
            return 2
        runs: dict[str, list[dict[str, Any]]] = {b["label"]: [] for b in backends}
        for _ in range(args.scan_rounds):  # rounds alternate the backends, so load changes hit each alike
            for b in backends:
                runs[b["label"]].append(scan_run(engines[b["label"]], b["label"], role, paths, folder, args, log))
        for b in backends:
            rs = sorted(runs[b["label"]], key=lambda sc: sc["images_per_s"])
            b["scan"] = rs[len(rs) // 2] | {"rounds_images_per_s": [sc["images_per_s"] for sc in runs[b["label"]]]}
        result["scan"] = backends[0]["scan"]
    write_results(out, "pipeline", result, markdown(result))
    if frames:
        plot(result, out / "pipeline.png")
    log(f"wrote {out / 'pipeline.json'}, pipeline.md, pipeline.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
