"""Model latency: what each model file, precision, provider, thread count and batch costs.

For every ONNX file in --models (FP32, FP16, INT8: whatever exists), every
backend that starts here (ONNX Runtime's cpu provider; OpenVINO at FP32, on
CPUs with native BF16 BF16, and INT8 where the file has an INT8 IR; cuda and tensorrt when this onnxruntime has
them) and every --threads value, it reports the session creation (OpenVINO:
compile) time and the first inference apart, then for each --batches size (1,
6 = one frame's views, N x 6) runs --warmup untimed and --runs timed
inferences (or as many as fit in --budget-s) and reports mean, std, p50, p90,
p95, p99 (no outlier dropped) and throughput in views/s and six-view frames/s.
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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnxruntime as ort

from benchmarks._common import (  # noqa: F401 (time_calls: imported from here by callers)
    DEFAULT_MODELS,
    machine_md,
    md_table,
    out_dir,
    parse_ints,
    time_calls,
    time_interleaved,
    toy_models,
    write_json,
    write_results,
)
from edge.metadata import MetadataError
from edge.model import PRECISION_SUFFIX, Model, ModelError, open_model
from edge.openvino_backend import native_bf16
from edge.providers import PROVIDER, ProviderError
from edge.stats import machine_info, summarize, usable_cores

VIEWS = 6


CPU_DEVICES = ("cpu", "openvino")  # timed interleaved, in one group per file and thread count


def available_devices() -> list[str]:
    """cpu, openvino when it is installed, plus cuda and tensorrt when this onnxruntime build lists them."""
    import importlib.util

    have = set(ort.get_available_providers())
    ov = ["openvino"] if importlib.util.find_spec("openvino") is not None else []
    return ["cpu", *ov] + [d for d in ("cuda", "tensorrt") if PROVIDER[d] in have]


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
    return {"file": path.name, "role": model.meta.role, "precision": model.precision,
            "file_precision": model.meta.precision, "input_size": list(model.meta.input_size),
            "provider": model.provider, "threads": threads, "batch": batch, "io_binding": iob, **opened,
            "warmup": args.warmup, "stats_ms": s,
            "ms_per_view": s["mean"] / batch, "ms_per_frame": s["mean"] * VIEWS / batch,
            "views_per_s": batch * 1e3 / s["mean"], "frames_per_s": batch * 1e3 / s["mean"] / VIEWS}


def _log(row: dict[str, Any]) -> None:
    s = row["stats_ms"]
    name = f"{row['provider']} {row['precision']}"
    print(f"  {row['file']:<22} {name:<14} t={row['threads']} b={row['batch']:<3}{' iob' if row['io_binding'] else ''}"
          f"  mean {s['mean']:8.2f} ms  p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f}"
          f"  {row['views_per_s']:8.1f} views/s" + (f"  x{row['speedup']:.2f}" if row.get("speedup") else ""),
          file=sys.stderr)


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
            print(f"  {path.name}: input batch is fixed at {model.session.get_inputs()[0].shape[0]}, "
                  f"skipping batch {batch}", file=sys.stderr)
            continue
        for iob in io_bindings:
            samples = time_calls(_runner(model.session, x, device, iob), args.warmup, args.runs, args.budget_s)
            row = _row(path, model, threads, batch, iob, opened, samples, args)
            rows.append(row)
            raw.append({k: row[k] for k in ("file", "provider", "precision", "threads", "batch", "io_binding")}
                       | {"samples_ms": samples})
            _log(row)
    return rows, raw


def cpu_configs(devices: list[str], ov_precisions: list[str]) -> list[tuple[str, str]]:
    """(device, precision) of the CPU backends to time side by side: ONNX Runtime (the file's
    precision), then OpenVINO at each precision (bf16 only where the CPU has it natively)."""
    out = [("cpu", "auto")] if "cpu" in devices else []
    if "openvino" in devices:
        out += [("openvino", p) for p in ov_precisions if p != "bf16" or native_bf16()]
    return out


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
            skipped.append({"file": path.name, "device": label, "reason": str(e)})
            print(f"  skipped {path.name} on {label}: {e}", file=sys.stderr)
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
            rows.append(row)
            raw.append({k2: row[k2] for k2 in ("file", "provider", "precision", "threads", "batch", "io_binding")}
                       | {"samples_ms": ms})
            _log(row)
    return rows, raw


def side_by_side(result: dict[str, Any]) -> str:
    """ONNX Runtime and OpenVINO p50 per file, threads and batch, with OpenVINO's speedups."""
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in result["results"]:
        if r.get("interleaved"):
            groups.setdefault((r["file"], r["threads"], r["batch"]), {})[f"{r['provider']} {r['precision']}"] = r
    cols = sorted({c for g in groups.values() for c in g},
                  key=lambda c: (not c.startswith("cpu"), c != "openvino fp32", c))
    if len(cols) < 2:
        return ""
    rows = []
    for (file, threads, batch), g in sorted(groups.items()):
        cells = []
        for c in cols:
            r = g.get(c)
            if r is None:
                cells.append("")
            elif r["provider"] == "cpu":
                cells.append(f"{r['stats_ms']['p50']:.2f}")
            else:
                cells.append(f"{r['stats_ms']['p50']:.2f} (x{r.get('speedup', 0):.2f}, paired x"
                             f"{r.get('speedup_paired', 0):.2f})")
        rows.append([file, threads, batch, *cells])
    names = [c.replace("cpu ", "ONNX Runtime ").replace("openvino ", "OpenVINO ") for c in cols]
    return ("\n## Side by side (interleaved in one run; p50 ms per batch; xN: ONNX Runtime's p50 / this p50, "
            "paired: median of the per-round ratios)\n\n" + md_table(["model", "threads", "batch", *names], rows))


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
            " session = session creation (OpenVINO: compile, from its cache when it holds the model),"
            " first = first inference (batch 6). frames/s counts six-view frames.\n\n",
            md_table(["model", "precision", "provider", "threads", "batch", "session", "first", "mean", "std",
                      "p50", "p90", "p95", "p99", "n", "views/s", "frames/s"], rows)]
    if result["skipped"]:
        text.append("\nSkipped:\n\n" + "".join(f"- {k['file']} on {k['device']}: {k['reason']}\n"
                                                for k in result["skipped"]))
    text.append(side_by_side(result))
    return "".join(text)


def plot(result: dict[str, Any], path: Path) -> Path:
    """ms per six-view frame and views/s against batch size, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in result["results"]:
        key = f"{r['file']} {r['provider']} {r['precision']}{' iob' if r['io_binding'] else ''} t{r['threads']}"
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
    configs = cpu_configs(devices, [p.strip() for p in args.ov_precisions.split(",") if p.strip()])
    for path in files:
        if _precision(path) not in wanted:
            continue
        for t in threads if configs else []:
            rows, samples = bench_cpu(path, configs, t, batches, args, skipped)
            results += rows
            raw += samples
        for device in (d for d in devices if d not in CPU_DEVICES):
            iobs = {"both": [False, True], "on": [True], "off": [False]}[args.io_binding]
            for t in threads[-1:]:
                try:
                    rows, samples = bench_file(path, device, t, batches, args, iobs)
                except (ModelError, MetadataError, ProviderError) as e:
                    skipped.append({"file": path.name, "device": device, "reason": str(e)})
                    print(f"  skipped {path.name} on {device}: {e}", file=sys.stderr)
                    break
                results += rows
                raw += samples
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
            print("  no matplotlib: latency.png skipped", file=sys.stderr)
    print(f"wrote {out / 'latency.json'}, latency.md{png}", file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
