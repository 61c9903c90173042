"""Model latency: what each model file, precision, provider, thread count and batch costs.

For every ONNX file in --models (FP32, FP16, INT8: whatever exists), every
provider that starts here (cpu; cuda and tensorrt when this onnxruntime has
them) and every --threads value, it reports the session creation time and the
first inference apart, then for each --batches size (1, 6 = one frame's views,
N x 6) runs --warmup untimed and --runs timed inferences (or as many as fit in
--budget-s) and reports mean, std, p50, p90, p95, p99 (no outlier dropped) and
throughput in views/s and six-view frames/s. On GPU providers it measures with
the input already on the device through I/O binding, and without it.

Writes latency.json, latency.md and latency.png to --out (default
benchmarks/results/<machine>/), and every raw sample to <out>/raw/.

    python -m benchmarks.latency                      # the shipped models/
    python -m benchmarks.latency --models DIR --threads 1,2 --batches 1,6,24
    python -m benchmarks.latency --quick              # smoke run on a toy model
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnxruntime as ort

from benchmarks._common import (
    DEFAULT_MODELS,
    machine_md,
    md_table,
    out_dir,
    parse_ints,
    toy_models,
    write_json,
    write_results,
)
from edge.metadata import MetadataError
from edge.model import PRECISION_SUFFIX, ModelError, open_model
from edge.providers import PROVIDER, ProviderError
from edge.stats import machine_info, summarize, usable_cores

VIEWS = 6
MIN_BUDGET_RUNS = 10


def available_devices() -> list[str]:
    """cpu, plus cuda and tensorrt when this onnxruntime build lists them."""
    have = set(ort.get_available_providers())
    return [d for d in ("cpu", "cuda", "tensorrt") if PROVIDER[d] in have]


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, budget_s: float | None = None) -> list[float]:
    """Call `fn` `warmup` times untimed, then time it (ms, monotonic clock): `runs` times,
    or with a budget as often as fits in `budget_s` seconds (at least 10 times)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s if budget_s else None
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if deadline is None:
            if len(samples) >= runs:
                return samples
        elif time.perf_counter() >= deadline and len(samples) >= MIN_BUDGET_RUNS:
            return samples


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


def _input(session: ort.InferenceSession, batch: int, rng: np.random.Generator) -> np.ndarray | None:
    """A random 0..255 batch of the model's input shape; None if its batch size is fixed otherwise."""
    inp = session.get_inputs()[0]
    n = inp.shape[0]
    if isinstance(n, int) and n != batch:
        return None
    shape = [batch, *(d if isinstance(d, int) else 1 for d in inp.shape[1:])]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return rng.uniform(0, 255, shape).astype(dtype)


def _precision(path: Path) -> str:
    """A file's precision from its name (`<role>.onnx`, `.fp16.onnx`, `.int8.onnx`), as the runtime finds it."""
    for precision, suffix in PRECISION_SUFFIX.items():
        if precision != "fp32" and path.name.endswith(suffix):
            return precision
    return "fp32"


def bench_file(path: Path, device: str, threads: int, batches: list[int], args: argparse.Namespace,
               io_bindings: list[bool]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All batch sizes for one (file, provider, threads): result rows and raw samples."""
    t0 = time.perf_counter()
    model = open_model(path, device, threads)
    session_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(0)
    first_batch = VIEWS if VIEWS in batches else batches[0]
    x = _input(model.session, first_batch, rng)
    first_ms = None
    if x is not None:
        t0 = time.perf_counter()
        _runner(model.session, x, device, False)()
        first_ms = (time.perf_counter() - t0) * 1e3
    rows, raw = [], []
    for batch in batches:
        x = _input(model.session, batch, rng)
        if x is None:
            print(f"  {path.name}: input batch is fixed at {model.session.get_inputs()[0].shape[0]}, "
                  f"skipping batch {batch}", file=sys.stderr)
            continue
        for iob in io_bindings:
            samples = time_calls(_runner(model.session, x, device, iob), args.warmup, args.runs, args.budget_s)
            s = summarize(samples)
            row = {"file": path.name, "role": model.meta.role, "precision": model.meta.precision,
                   "input_size": list(model.meta.input_size), "provider": model.provider,
                   "threads": threads, "batch": batch, "io_binding": iob,
                   "session_ms": session_ms, "first_infer_ms": first_ms, "first_infer_batch": first_batch,
                   "warmup": args.warmup, "stats_ms": s,
                   "ms_per_view": s["mean"] / batch, "ms_per_frame": s["mean"] * VIEWS / batch,
                   "views_per_s": batch * 1e3 / s["mean"], "frames_per_s": batch * 1e3 / s["mean"] / VIEWS}
            rows.append(row)
            raw.append({k: row[k] for k in ("file", "provider", "threads", "batch", "io_binding")}
                       | {"samples_ms": samples})
            print(f"  {path.name:<22} {model.provider:<8} t={threads} b={batch:<3}{' iob' if iob else ''}"
                  f"  mean {s['mean']:8.2f} ms  p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f}"
                  f"  {row['views_per_s']:8.1f} views/s", file=sys.stderr)
    return rows, raw


def markdown(result: dict[str, Any]) -> str:
    """The report: machine, settings, one row per configuration, skipped configurations."""
    rows = [[r["file"], r["precision"], r["provider"] + (" +iob" if r["io_binding"] else ""), r["threads"],
             r["batch"], r["session_ms"], r["first_infer_ms"], r["stats_ms"]["mean"], r["stats_ms"]["std"],
             r["stats_ms"]["p50"], r["stats_ms"]["p90"], r["stats_ms"]["p95"], r["stats_ms"]["p99"],
             r["stats_ms"]["n"], r["views_per_s"], r["frames_per_s"]] for r in result["results"]]
    s = result["settings"]
    timed = f"{s['budget_s']} s of timed runs" if s["budget_s"] else f"{s['runs']} timed runs"
    text = ["# Model latency\n", machine_md(result["machine"]),
            f"\n{s['warmup']} warm-up runs, then {timed} per configuration; times in ms per batch;"
            " session = session creation, first = first inference (batch 6). frames/s counts six-view frames.\n\n",
            md_table(["model", "precision", "provider", "threads", "batch", "session", "first", "mean", "std",
                      "p50", "p90", "p95", "p99", "n", "views/s", "frames/s"], rows)]
    if result["skipped"]:
        text.append("\nSkipped:\n\n" + "".join(f"- {k['file']} on {k['device']}: {k['reason']}\n"
                                                for k in result["skipped"]))
    return "".join(text)


def plot(result: dict[str, Any], path: Path) -> Path:
    """ms per six-view frame and views/s against batch size, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in result["results"]:
        key = f"{r['file']} {r['provider']}{' iob' if r['io_binding'] else ''} t{r['threads']}"
        series.setdefault(key, []).append(r)
    for key, rs in series.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        b = [r["batch"] for r in rs]
        per_frame = np.array([r["ms_per_frame"] for r in rs])
        p90 = np.array([r["stats_ms"]["p90"] * VIEWS / r["batch"] for r in rs])
        ax1.errorbar(b, per_frame, yerr=[np.zeros_like(p90), np.maximum(p90 - per_frame, 0)],
                     marker="o", capsize=3, label=key)
        ax2.plot(b, [r["views_per_s"] for r in rs], marker="o", label=key)
    batches = sorted({r["batch"] for r in result["results"]})
    for ax, title in ((ax1, "ms per six-view frame (mean, bar to p90)"), (ax2, "views / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch (views)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax1.set_ylim(bottom=0)
    ax2.legend(fontsize=7, loc="best")
    m = result["machine"]
    fig.suptitle(f"sixview latency on {m['cpu']} ({m['cores']} cores), ORT {m['onnxruntime']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="folder of .onnx files (default: models/)")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="which files, by name (<role>.onnx, .fp16.onnx, .int8.onnx; default: all that exist)")
    p.add_argument("--devices", default=None,
                   help="comma-separated providers: cpu,cuda,tensorrt (default: all that this onnxruntime has)")
    p.add_argument("--threads", default=None,
                   help="comma-separated intra-op thread counts (default: 1 and the usable cores)")
    p.add_argument("--batches", default="1,6,24", help="comma-separated batch sizes (default 1,6,24)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per configuration (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per configuration (default 100)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="instead of --runs: time each configuration for this many seconds (>= 10 runs)")
    p.add_argument("--io-binding", choices=("both", "on", "off"), default="both",
                   help="GPU providers: input bound on the device, plain run, or both (default)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<machine>/)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny toy model, 1 thread, batches 1,6, 3 warm-up and 10 timed runs")
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
        print(f"error: {e}", file=sys.stderr)
        return 2
    models_dir = toy_models("hd", (64, 64)) if args.quick else args.models
    files = sorted(models_dir.glob("*.onnx"))
    if not files:
        print(f"error: no .onnx files in {models_dir} (train and convert models first, or use --quick)",
              file=sys.stderr)
        return 2
    devices = args.devices.split(",") if args.devices else available_devices()
    out = out_dir(args.out, args.quick)
    machine = machine_info()
    print(f"latency on {machine['cpu']} ({machine['cores']} cores), ORT {machine['onnxruntime']}", file=sys.stderr)
    results, raw, skipped = [], [], []
    wanted = {w.strip() for w in args.precisions.split(",")}
    for path in files:
        if _precision(path) not in wanted:
            continue
        for device in devices:
            gpu = device != "cpu"
            iobs = {"both": [False, True], "on": [True], "off": [False]}[args.io_binding] if gpu else [False]
            for t in (threads[-1:] if gpu else threads):
                try:
                    rows, samples = bench_file(path, device, t, batches, args, iobs)
                except (ModelError, MetadataError, ProviderError) as e:
                    skipped.append({"file": path.name, "device": device, "reason": str(e)})
                    print(f"  skipped {path.name} on {device}: {e}", file=sys.stderr)
                    break
                results += rows
                raw += samples
    result = {"benchmark": "latency", "quick": args.quick, "machine": machine,
              "settings": {"models": str(models_dir), "devices": devices, "threads": threads, "batches": batches,
                           "warmup": args.warmup, "runs": args.runs, "budget_s": args.budget_s},
              "results": results, "skipped": skipped}
    write_results(out, "latency", result, markdown(result))
    (out / "raw").mkdir(exist_ok=True)
    write_json(out / "raw" / "latency_samples.json", {"machine": machine, "samples": raw})
    if results:
        plot(result, out / "latency.png")
    print(f"wrote {out / 'latency.json'}, latency.md, latency.png", file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
