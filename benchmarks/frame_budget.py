"""Frame budget: which EfficientNet-Lite backbone, at which input size, fits a per-frame time on this CPU.

One six-view frame is one batch of 6 views; --budget-ms (33 ms: 30 frames/s) is the time for that batch. Each
--archs x --sizes candidate is the real sixview graph, `training.models.factory.build_model(arch, 10 classes,
size, weights="none")` (the shipped HD model's head), exported to ONNX in a scratch folder by
`convert.export.export_onnx` (what `sixview convert` runs, without its parity check). Heads and backbones are
untrained (random weights): latency depends on the graph and input size, not on the weight values (an untrained
Lite0 at 192 px and the shipped, trained hd.onnx ran within 1% of each other, interleaved).

Every candidate on every backend (--backends: ONNX Runtime FP32 and OpenVINO FP32, opened as the runtime opens
them; --int8 adds OpenVINO INT8, NNCF-quantised by `convert.int8_ov.quantize` on synthetic six-view batches)
is timed in ONE run (`benchmarks._common.time_interleaved`): warm-up, then --runs rounds of one timed batch-6
run per cell, the order rotating every round, so load changes hit them alike. A cell fits when its p50 <= budget.
The machine may be shared (a training job): absolute times move with its load, so compare ratios.

Writes frame_budget.json and frame_budget.md to --out (default benchmarks/results/<machine>/).

    python -m benchmarks.frame_budget --out benchmarks/results/amd-epyc-avx512-bf16-2c
    python -m benchmarks.frame_budget --archs efficientnet-lite0 --sizes 160,192 --int8
    python -m benchmarks.frame_budget --quick     # smoke run: lite0 at 64 and 96 px, few runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # see convert/export.py

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import onnx

from benchmarks._cli import add_out_quick, command_line, failed, log, parser
from benchmarks._common import (
    machine_md,
    md_table,
    onnx_params,
    out_dir,
    parse_ints,
    scratch_dir,
    shown,
    synthetic_photo,
    time_interleaved,
    write_results,
)
from edge.openvino_backend import compile_int8_ir, compile_onnx
from edge.providers import ProviderError, create_session
from edge.stats import machine_info, summarize
from training.models.archs import EFFICIENTNETS

BATCH = 6  # one six-view frame
REFERENCE = ("efficientnet-lite0", 192)  # the shipped HD model's graph: the ratio column's base
CLASSES = 10  # the shipped models' class count (the head's size barely matters)
BACKENDS = {"ort-fp32": "ONNX Runtime FP32", "ov-fp32": "OpenVINO FP32", "ov-bf16": "OpenVINO BF16",
            "ov-int8": "OpenVINO INT8"}


def export(arch: str, size: int, folder: Path) -> tuple[Path, onnx.ModelProto, float]:
    """`arch` at `size` px with untrained weights, as `<folder>/<arch>-<size>.onnx`; (path, graph, seconds)."""
    import keras

    from convert.export import export_onnx
    from training.data.synthetic import randomize_constant_weights
    from training.models.factory import build_model

    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = randomize_constant_weights(build_model(arch, CLASSES, size, weights="none"))
    proto = export_onnx(model, (size, size))
    keras.backend.clear_session()
    path = folder / f"{arch}-{size}.onnx"
    onnx.save(proto, str(path))
    return path, proto, time.perf_counter() - t0


def synthetic_batches(size: int, n: int) -> list[np.ndarray]:
    """`n` six-view batches (float32 NHWC, 0..255 RGB) of synthetic photos resized to `size` (INT8 calibration)."""
    return [np.stack([cv2.resize(synthetic_photo(seed=i * BATCH + j), (size, size))[..., ::-1]
                      for j in range(BATCH)]).astype(np.float32) for i in range(n)]


def runner(backend: str, path: Path, size: int, args: argparse.Namespace, cache: Path) -> Callable[[np.ndarray], Any]:
    """One batch inference of the candidate on `backend`, opened as the runtime opens it (ProviderError when
    it cannot run here). ONNX Runtime: `create_session`, whose workers do not spin (on the loaded 2-core
    machine spinning workers ran a batch about 1.9x slower than with spinning off)."""
    if backend == "ort-fp32":
        s, _ = create_session(str(path), "cpu", args.threads)
        name = s.get_inputs()[0].name
        return lambda x: s.run(None, {name: x})
    if backend == "ov-int8":
        from convert.int8_ov import quantize

        quantize(path, synthetic_batches(size, args.calibration))  # the IR beside `path`, as the runtime finds it
        ov = compile_int8_ir(path, args.threads, cache)
    else:
        ov = compile_onnx(path, backend.split("-")[1], args.threads, cache)
    return lambda x: ov.run(None, {ov.input_name: x})


def int8_reference(out: Path, threads: int) -> str:
    """What `<out>/latency.json` measured for OpenVINO INT8 against ONNX Runtime FP32 (shipped hd.onnx, batch 6)."""
    f = out / "latency.json"
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))["results"]
        p50 = {(r["provider"], r["precision"]): r["stats_ms"]["p50"] for r in rows if r["file"] == "hd.onnx"
               and r["batch"] == BATCH and r["threads"] == threads and r.get("interleaved")}
        ort, int8 = p50[("cpu", "fp32")], p50[("openvino", "int8")]
    except (OSError, ValueError, KeyError, TypeError):
        return "OpenVINO INT8 not timed here (add --int8)."
    where = shown(f.with_suffix(".md"))
    return (f"OpenVINO INT8 not timed here (add --int8); for the shipped Lite0 HD model (hd.onnx) `{where}` has"
            f" INT8 at {int8 / ort:.2f}x ONNX Runtime FP32's p50 ({int8:.2f} / {ort:.2f} ms, batch {BATCH},"
            f" {threads} threads, interleaved).")


def markdown(r: dict[str, Any]) -> str:
    s, backends = r["settings"], r["settings"]["backends"]
    ref = next((c for c in r["candidates"] if (c["arch"], c["input_size"]) == REFERENCE), None)
    ratio = (lambda c: c["latency_ms"][backends[0]]["p50"] / ref["latency_ms"][backends[0]]["p50"]) if ref else None
    rows = [[c["arch"], f"{c['input_size']}x{c['input_size']}", c["params"] / 1e6, c["onnx_mb"],
             *(c["latency_ms"][b]["p50"] for b in backends), *([f"{ratio(c):.2f}x"] if ratio else []),
             ", ".join(BACKENDS[b] for b in backends if c["fits"][b]) or "none"] for c in r["candidates"]]
    best = []
    for arch in s["archs"]:
        cells = [f"{BACKENDS[b]} " + str(max((c["input_size"] for c in r["candidates"] if c["arch"] == arch
                                              and c["fits"][b]), default="none")) for b in backends]
        best.append(f"- {arch}: " + ", ".join(cells) + "\n")
    notes = [f"- skipped {k['what']}: {k['reason']}\n" for k in r["skipped"]]
    return "".join([
        "# Frame budget: EfficientNet-Lite backbone x input size\n\n", machine_md(r["machine"]),
        f"\nBudget {s['budget_ms']:g} ms per six-view frame (one batch of {BATCH} views, {1e3 / s['budget_ms']:.0f}"
        f" frames/s). Graphs: `build_model(arch, {CLASSES} classes, size, weights=\"none\")` exported by"
        " `export_onnx`, untrained (latency depends on the graph, not the weight values). Timing: one run,"
        f" {s['threads']} threads, {s['warmup']} warm-up runs, then {s['runs']} rounds of one timed run per cell,"
        f" interleaved over all {len(r['candidates']) * len(backends)} cells; input uniform noise;"
        " p50 ms per batch; backends opened as the runtime opens them. A cell fits when its p50 <= budget."
        + (f" OpenVINO INT8: NNCF on {s['calibration']} synthetic six-view batches." if "ov-int8" in backends
           else "") + "\n\n",
        md_table(["arch", "input", "params (M)", "ONNX MB", *(f"{BACKENDS[b]} p50" for b in backends),
                  *([f"{BACKENDS[backends[0]]} / {REFERENCE[0]} {REFERENCE[1]} px (the shipped HD graph)"]
                    if ratio else []), f"fits {s['budget_ms']:g} ms on"], rows),
        "\nOn a loaded machine the absolute times (and so the fits column) are high; the ratio to the shipped HD"
        " graph, measured in the same run, carries over to a quiet one.\n" if ratio else "",
        "\nLargest input that fits, per arch and backend:\n\n", *best, "\n",
        "" if "ov-int8" in backends else r["int8_note"] + "\n", "\n" if notes else "", *notes,
        f"\n`{r['command']}`\n"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.frame_budget", __doc__)
    p.add_argument("--archs", default=None, help=f"comma-separated (default {','.join(EFFICIENTNETS)})")
    p.add_argument("--sizes", type=parse_ints, default=None, help="input sides, px (128,160,192,224,256)")
    p.add_argument("--budget-ms", type=float, default=33.0, help="time for one six-view frame, batch 6 (33)")
    p.add_argument("--backends", default="ort-fp32,ov-fp32", help=f"some of {','.join(BACKENDS)} (ort-fp32,ov-fp32)")
    p.add_argument("--int8", action="store_true", help="add ov-int8 (NNCF on synthetic six-view batches)")
    p.add_argument("--calibration", type=int, default=8, help="six-view batches for --int8's NNCF (8)")
    p.add_argument("--threads", type=int, default=2, help="inference threads per backend (2)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per cell (5)")
    p.add_argument("--runs", type=int, default=60, help="timed runs per cell (60)")
    add_out_quick(p, "smoke run: efficientnet-lite0 at 64 and 96 px, 6 runs")
    args = p.parse_args(argv)
    if args.quick:
        args.archs, args.sizes = args.archs or "efficientnet-lite0", args.sizes or [64, 96]
        args.warmup, args.runs, args.calibration = 2, 6, 2
    args.sizes = args.sizes or [128, 160, 192, 224, 256]
    args.archs = [a.strip() for a in (args.archs or ",".join(EFFICIENTNETS)).split(",") if a.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.backends += ["ov-int8"] if args.int8 and "ov-int8" not in args.backends else []
    return args


def main(argv: list[str] | None = None) -> int:
    """Export, time and write; return the exit code."""
    args = parse_args(argv)
    bad = [f"unknown arch {a} (choose from {', '.join(EFFICIENTNETS)})" for a in args.archs if a not in EFFICIENTNETS]
    bad += [f"unknown backend {b} (choose from {', '.join(BACKENDS)})" for b in args.backends if b not in BACKENDS]
    bad += [f"--sizes {s} is below 32 px" for s in args.sizes if s < 32]
    if min(args.budget_ms, args.runs, args.threads) <= 0:
        bad.append("--budget-ms, --runs and --threads must be positive")
    if bad or not args.archs or not args.backends:
        return failed("; ".join(bad) or "give at least one arch and one backend")
    machine, t_start = machine_info(), time.perf_counter()
    log(f"frame budget on {machine['cpu']} ({machine['cores']} cores): {len(args.archs)} archs x"
        f" {len(args.sizes)} sizes on {', '.join(args.backends)}")
    folder, cache = scratch_dir("sixview-budget-"), scratch_dir("sixview-budget-ov-")
    cands, fns, skipped = [], {}, []
    x_by_size = {s: np.random.default_rng(0).uniform(0, 255, (BATCH, s, s, 3)).astype(np.float32) for s in args.sizes}
    for arch in args.archs:
        for size in args.sizes:
            path, proto, secs = export(arch, size, folder)
            params = onnx_params(proto)
            log(f"{arch} {size}px: exported in {secs:.0f} s, {params / 1e6:.2f} M parameters")
            cands.append({"arch": arch, "input_size": size, "params": params, "export_s": round(secs, 1),
                          "onnx_mb": round(path.stat().st_size / 1e6, 2)})
            for b in args.backends:
                try:
                    run = runner(b, path, size, args, cache)
                except (ProviderError, SystemExit) as e:  # SystemExit: convert.int8_ov without nncf
                    skipped.append({"what": f"{arch} {size}px on {BACKENDS[b]}", "reason": str(e)})
                    log(f"  skipped {b}: {e}")
                    continue
                fns[(arch, size, b)] = lambda run=run, x=x_by_size[size]: run(x)
    backends = [b for b in args.backends if all((c["arch"], c["input_size"], b) in fns for c in cands)]
    fns = {k: f for k, f in fns.items() if k[2] in backends}  # a backend that failed anywhere is left out
    if not fns:
        log("error: no backend ran every candidate")
        return 1
    log(f"timing {len(fns)} cells, batch {BATCH}, {args.runs} interleaved rounds")
    samples = time_interleaved(fns, args.warmup, args.runs)
    for c in cands:
        c["latency_ms"] = {b: {k: round(v, 3) for k, v in summarize(samples[(c["arch"], c["input_size"], b)]).items()}
                           for b in backends}
        c["fits"] = {b: c["latency_ms"][b]["p50"] <= args.budget_ms for b in backends}
        log(f"  {c['arch']} {c['input_size']}px: " + ", ".join(
            f"{b} p50 {c['latency_ms'][b]['p50']:.1f} ms{' fits' if c['fits'][b] else ''}" for b in backends))
    out = out_dir(args.out, args.quick)
    result = {"benchmark": "frame_budget", "quick": args.quick, "machine": machine,
              "command": command_line("python -m benchmarks.frame_budget", argv),
              "settings": {"archs": args.archs, "sizes": args.sizes, "budget_ms": args.budget_ms, "batch": BATCH,
                           "classes": CLASSES, "weights": "none (untrained)", "backends": backends,
                           "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
                           "calibration": args.calibration if "ov-int8" in backends else None,
                           "input": "uniform noise"},
              "candidates": cands, "skipped": skipped, "int8_note": int8_reference(out, args.threads),
              "wall_s": round(time.perf_counter() - t_start, 1)}
    write_results(out, "frame_budget", result, markdown(result))
    log(f"wrote {out / 'frame_budget.json'}, frame_budget.md ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
