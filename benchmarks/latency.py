"""Model latency: what each model file, precision, provider, thread count and batch costs.

For every ONNX file in --models (FP32, FP16, INT8: whatever exists), every
backend that starts here (ONNX Runtime's cpu provider; OpenVINO at FP32, on
CPUs with native BF16 BF16, and INT8 where the file has an INT8 IR; cuda and tensorrt when this onnxruntime has
them) and every --threads value, it reports the session creation (OpenVINO:
compile) time and the first inference apart, then for each --batches size (1,
6 = one frame's views, N x 6) runs --warmup untimed and --runs timed
inferences (or as many as fit in --budget-s) and reports mean, std, p50, p90,
p95, p99 (no outlier dropped) and throughput in views/s and six-view frames/s,
beside the work of a six-view frame (GMAC: multiply-adds, `convert.macs`; an INT8 IR
has its ONNX file's). The JSON records the machine's CPU class (`edge.providers.cpu_class`).
The CPU backends of one file are timed interleaved (one call each, in turn, in
a rotating order), so their ratios (`speedup`: ONNX Runtime's p50 / this p50,
and the median of the per-round ratios) are measured under the same load. On
GPU providers it measures with the input already on the device through I/O
binding, and without it.

Writes latency.json, latency.md and latency.png to --out (default
benchmarks/results/<machine>/), and every raw sample to <out>/raw/.

    python -m benchmarks.latency                      # the shipped models/
    python -m benchmarks.latency --models DIR --threads 1,2 --batches 1,6,24
    python -m benchmarks.latency --precisions fp32 --devices cpu,openvino --threads 2 --batches 6,48
    python -m benchmarks.latency --quick              # smoke run on a toy model
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnxruntime as ort

from benchmarks._backends import available_devices, cpu_configs
from benchmarks._cli import add_models, add_out_quick, failed, log, parser
from benchmarks._common import (
    out_dir,
    parse_ints,
    time_calls,
    time_interleaved,
    toy_models,
    write_json,
    write_results,
    wrote,
)
from benchmarks.latency_report import VIEWS, frame_gmac, markdown, plot
from edge.metadata import MetadataError
from edge.model import PRECISION_SUFFIX, Model, ModelError, open_model
from edge.providers import ProviderError, cpu_class
from edge.stats import machine_info, summarize, usable_cores

__all__ = ["available_devices", "cpu_configs", "main", "time_calls"]  # time_calls: imported from here by callers

CPU_DEVICES = ("cpu", "openvino")  # timed interleaved, in one group per file and thread count


def _runner(session: ort.InferenceSession, x: np.ndarray, device: str, io_binding: bool) -> Callable[[], Any]:
    """One inference on `x`; with I/O binding the input lives on the GPU and outputs stay there."""
    name = session.get_inputs()[0].name
    if not io_binding:
        return lambda: session.run(None, {name: x})
    binding = session.io_binding()
    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda")

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def _input(model: Model, batch: int, rng: np.random.Generator) -> np.ndarray | None:
    """A random 0..255 batch of the model's input shape; None if its batch size is fixed otherwise."""
    if model.provider == "openvino":
        shape, dtype = list(model.session.input_shape), np.float32
    else:
        inp = model.session.get_inputs()[0]
        shape = list(inp.shape)
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    n = shape[0]
    if isinstance(n, int) and n != batch:
        return None
    return rng.uniform(0, 255, [batch, *(d if isinstance(d, int) else 1 for d in shape[1:])]).astype(dtype)


def _precision(path: Path) -> str:
    """A file's precision from its name (`<role>.onnx`, `.fp16.onnx`, `.int8.onnx`), as the runtime finds it."""
    for precision, suffix in PRECISION_SUFFIX.items():
        if precision != "fp32" and path.name.endswith(suffix):
            return precision
    return "fp32"


def _row(path: Path, model: Model, threads: int, batch: int, iob: bool, opened: dict[str, Any],
         samples: list[float], args: argparse.Namespace) -> dict[str, Any]:
    s = summarize(samples)
    views = batch * model.meta.rows_per_input  # a one-pass graph's input is a frame of six views
    return {"file": path.name, "role": model.meta.role, "precision": model.precision,
            "file_precision": model.meta.precision, "input_size": list(model.meta.input_size),
            "provider": model.provider, "threads": threads, "batch": batch, "io_binding": iob, **opened,
            "warmup": args.warmup, "stats_ms": s,
            "ms_per_view": s["mean"] / views, "ms_per_frame": s["mean"] * VIEWS / views,
            "views_per_s": views * 1e3 / s["mean"], "frames_per_s": views * 1e3 / s["mean"] / VIEWS}


def _keep(row: dict[str, Any], samples: list[float], rows: list[dict], raw: list[dict]) -> None:
    """Add a result row and its raw samples, and log it."""
    rows.append(row)
    raw.append({k: row[k] for k in ("file", "provider", "precision", "threads", "batch", "io_binding")}
               | {"samples_ms": samples})
    s = row["stats_ms"]
    name = f"{row['provider']} {row['precision']}"
    log(f"  {row['file']:<22} {name:<14} t={row['threads']} b={row['batch']:<3}{' iob' if row['io_binding'] else ''}"
        f"  mean {s['mean']:8.2f} ms  p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f}"
        f"  {row['views_per_s']:8.1f} views/s" + (f"  x{row['speedup']:.2f}" if row.get("speedup") else ""))


def _skip(skipped: list[dict[str, Any]], path: Path, device: str, e: Exception) -> None:
    """A configuration that did not open: kept for the report, and logged."""
    skipped.append({"file": path.name, "device": device, "reason": str(e)})
    log(f"  skipped {path.name} on {device}: {e}")


def _open(path: Path, device: str, threads: int, precision: str, batches: list[int]) -> tuple[Model, dict]:
    """Open a model; its session (OpenVINO: compile) time and its first inference (batch 6)."""
    t0 = time.perf_counter()
    model = open_model(path, device, threads, precision)
    opened: dict[str, Any] = {"session_ms": (time.perf_counter() - t0) * 1e3, "first_infer_ms": None,
                              "first_infer_batch": VIEWS if VIEWS in batches else batches[0]}
    if model.provider == "openvino":
        opened["compile_from_cache"] = model.session.from_cache
    x = _input(model, opened["first_infer_batch"], np.random.default_rng(0))
    if x is not None:
        t0 = time.perf_counter()
        model(x)
        opened["first_infer_ms"] = (time.perf_counter() - t0) * 1e3
    return model, opened


def bench_file(path: Path, device: str, threads: int, batches: list[int], args: argparse.Namespace,
               io_bindings: list[bool]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All batch sizes for one (file, GPU provider, threads): result rows and raw samples."""
    model, opened = _open(path, device, threads, "auto", batches)
    rng = np.random.default_rng(0)
    rows, raw = [], []
    for batch in batches:
        x = _input(model, batch, rng)
        if x is None:
            log(f"  {path.name}: input batch is fixed at {model.session.get_inputs()[0].shape[0]}, "
                f"skipping batch {batch}")
            continue
        for iob in io_bindings:
            samples = time_calls(_runner(model.session, x, device, iob), args.warmup, args.runs, args.budget_s)
            _keep(_row(path, model, threads, batch, iob, opened, samples, args), samples, rows, raw)
    return rows, raw


def bench_cpu(path: Path, configs: list[tuple[str, str]], threads: int, batches: list[int],
              args: argparse.Namespace, skipped: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """The CPU backends of one file and thread count, interleaved per batch size; each row gets
    `speedup` (ONNX Runtime's p50 / its p50) and `speedup_paired` (median of the per-round ratios)."""
    models: dict[str, tuple[Model, dict]] = {}
    for device, precision in configs:
        label = device if device == "cpu" else f"{device} {precision}"
        try:
            models[label] = _open(path, device, threads, precision, batches)
        except (ModelError, MetadataError, ProviderError) as e:
            _skip(skipped, path, label, e)
    rng = np.random.default_rng(0)
    rows, raw = [], []
    for batch in batches:
        inputs = {k: _input(m, batch, rng) for k, (m, _) in models.items()}
        fns = {k: (lambda m=m, x=x: m(x)) for k, (m, _) in models.items() if (x := inputs[k]) is not None}
        if not fns:
            continue
        samples = time_interleaved(fns, args.warmup, args.runs, args.budget_s)
        ref = samples.get("cpu")
        for k, ms in samples.items():
            model, opened = models[k]
            row = _row(path, model, threads, batch, False, opened, ms, args) | {"interleaved": len(fns) > 1}
            if ref is not None:
                row["speedup"] = summarize(ref)["p50"] / row["stats_ms"]["p50"]
                row["speedup_paired"] = float(np.median(np.asarray(ref) / np.asarray(ms)))
            _keep(row, ms, rows, raw)
    return rows, raw


def bench_path(path: Path, devices: list[str], configs: list[tuple[str, str]], threads: list[int],
               batches: list[int], args: argparse.Namespace, into: tuple[list, list, list]) -> None:
    """One model file on the CPU backends (interleaved, every thread count) and on each GPU provider
    (the largest thread count); its rows, raw samples and skipped configurations go `into` those lists."""
    results, raw, skipped = into
    gmac = {"gmac_per_frame": frame_gmac(path)}  # the work of a six-view frame, whichever backend runs it
    for t in threads if configs else []:
        rows, samples = bench_cpu(path, configs, t, batches, args, skipped)
        results += [r | gmac for r in rows]
        raw += samples
    for device in (d for d in devices if d not in CPU_DEVICES):
        iobs = {"both": [False, True], "on": [True], "off": [False]}[args.io_binding]
        for t in threads[-1:]:
            try:
                rows, samples = bench_file(path, device, t, batches, args, iobs)
            except (ModelError, MetadataError, ProviderError) as e:
                _skip(skipped, path, device, e)
                break
            results += [r | gmac for r in rows]
            raw += samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.latency", __doc__)
    add_models(p, "folder of .onnx files (default: models/)")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="which files, by name (<role>.onnx, .fp16.onnx, .int8.onnx; default: all that exist)")
    p.add_argument("--devices", default=None,
                   help="comma-separated backends: cpu,openvino,cuda,tensorrt (default: all that are installed)")
    p.add_argument("--ov-precisions", default="fp32,bf16,int8",
                   help="OpenVINO compute precisions (default fp32,bf16,int8; bf16 only on CPUs with native "
                        "BF16; int8: the FP32 file's INT8 IR, <role>.int8-ov.xml, where there is one)")
    p.add_argument("--threads", default=None,
                   help="comma-separated intra-op thread counts (default: 1 and the usable cores)")
    p.add_argument("--batches", default="1,6,24", help="comma-separated batch sizes (default 1,6,24)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per configuration (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per configuration (default 100)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="instead of --runs: time each configuration for this many seconds (>= 10 runs)")
    p.add_argument("--io-binding", choices=("both", "on", "off"), default="both",
                   help="GPU providers: input bound on the device, plain run, or both (default)")
    add_out_quick(p, "smoke run: a tiny toy model, 1 thread, batches 1,6, 3 warm-up and 10 timed runs")
    args = p.parse_args(argv)
    if args.quick:
        args.threads = args.threads or "1"
        args.batches, args.warmup, args.runs, args.budget_s = "1,6", 3, 10, None
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the latency benchmark; return the exit code."""
    args = parse_args(argv)
    try:
        batches = parse_ints(args.batches)
        threads = parse_ints(args.threads) if args.threads else sorted({1, usable_cores()})
    except ValueError as e:
        return failed(e)
    models_dir = toy_models("hd", (64, 64)) if args.quick else args.models
    files = sorted(models_dir.glob("*.onnx"))
    if not files:
        return failed(f"no .onnx files in {models_dir} (train and convert models first, or use --quick)")
    devices = args.devices.split(",") if args.devices else available_devices()
    out = out_dir(args.out, args.quick)
    machine = machine_info() | {"cpu_class": cpu_class().name,  # the class `--device auto` chooses by
                                "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    log(f"latency on {machine['cpu']} ({machine['cores']} cores), ORT {machine['onnxruntime']}")
    results, raw, skipped = [], [], []
    wanted = {w.strip() for w in args.precisions.split(",")}
    configs = cpu_configs(devices, [p.strip() for p in args.ov_precisions.split(",") if p.strip()])
    for path in files:
        if _precision(path) in wanted:
            bench_path(path, devices, configs, threads, batches, args, (results, raw, skipped))
    result = {"benchmark": "latency", "quick": args.quick, "machine": machine,
              "settings": {"models": str(models_dir), "devices": devices, "cpu_backends": configs,
                           "threads": threads, "batches": batches,
                           "warmup": args.warmup, "runs": args.runs, "budget_s": args.budget_s},
              "results": results, "skipped": skipped}
    write_results(out, "latency", result, markdown(result))
    (out / "raw").mkdir(exist_ok=True)
    write_json(out / "raw" / "latency_samples.json", {"machine": machine, "samples": raw})
    png = ""
    if results:
        try:
            png = f", {plot(result, out / 'latency.png').name}"
        except ImportError:  # a runtime-only install (e.g. a GPU box): the tables are what matter
            log("  no matplotlib: latency.png skipped")
    log(wrote(out, "latency") + png)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
