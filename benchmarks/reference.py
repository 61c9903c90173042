"""sixview against the reference system's serving path, on the same weights and frames.

Reference path (as the reference system served): PIL decodes the JPEG, crops
the six views, resizes each to the model input with bicubic filtering, stacks
them as float32 and calls Keras `model.predict`; per class the maximum over
views. sixview path: `Engine.load` (reduced JPEG decoding, views) and
`Engine.classify` on ONNX Runtime (CPU), with the FP32
file and, if one exists, the INT8 file.

The paths alternate within every iteration (their order rotates), so the
per-frame ratio reference / sixview is measured under the same machine load.
Reported: per path and frame mean/std/p50..p99 of the frame time and its
stages, the ratio per iteration (p50 is the headline), cold start (import,
load, first result) and the score differences between the paths.

    python -m benchmarks.reference --keras runs/hd/best.keras --onnx models/hd.onnx
    python -m benchmarks.reference --quick       # tiny Keras model converted in-process

Needs the training extras (TensorFlow, Keras; tf2onnx for --quick).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

from benchmarks._cli import SetupError, add_out_quick, failed, log, parser
from benchmarks._common import (
    DEFAULT_MODELS,
    REPO,
    bench_frames,
    machine_md,
    md_table,
    model_dir_for,
    out_dir,
    scratch_dir,
    write_results,
    wrote,
)
from benchmarks.pipeline import time_frame
from benchmarks.reference_keras import (
    import_keras,
    keras_from_provenance,
    load_keras,
    quick_models,
    time_reference,
)
from edge.engine import Engine
from edge.metadata import MetadataError, ModelMeta
from edge.model import ModelError, open_model
from edge.stats import machine_info, summarize

__all__ = ["main", "time_reference"]

GOAL = 5.0
REFERENCE = "reference (Keras)"


def runtime_import_s() -> float:
    """Seconds a fresh Python takes to import sixview's runtime (ONNX Runtime, OpenCV, edge)."""
    code = ("import time; t = time.perf_counter(); import edge.engine, edge.decode; "
            "print(time.perf_counter() - t)")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


def _stage_table(paths: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, r in paths.items():
        st = r["stages_ms"]
        rows.append([name, *(st[k]["mean"] for k in ("decode", "preprocess", "infer", "merge")),
                     st["total"]["mean"], st["total"]["p50"], st["total"]["p95"]])
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The report: per-frame ratio, stage table per path, cold start, score agreement."""
    s = result["settings"]
    text = ["# sixview against the reference serving path\n\n", machine_md(result["machine"]),
            f"\nKeras `{s['keras']}` vs ONNX `{s['onnx']}`" + (f" and `{s['int8']}`" if s["int8"] else "")
            + f"; {s['warmup']} warm-up and {s['runs']} timed iterations, paths alternating within each"
            f" iteration. Ratio = reference frame time / sixview frame time, per iteration. Goal >= {GOAL:g}x.\n"]
    for f in result["frames"]:
        text.append(f"\n## {f['frame']} ({f['width']}x{f['height']})\n\n")
        rows = [[k, r["p50"], r["mean"], r["p5"], r["p95"],
                 "" if result["quick"] else ("yes" if r["p50"] >= GOAL else "NO")]
                for k, r in f["ratios"].items()]
        text.append(md_table(["ratio", "p50", "mean", "p5", "p95", "goal met"], rows))
        text.append("\nms per frame (means; total also p50, p95):\n\n")
        text.append(md_table(["path", "decode", "preprocess", "infer", "merge", "total", "total p50",
                              "total p95"], _stage_table(f["paths"])))
        text.append("\nmax |score difference| from the reference path's merged scores: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in f["score_diff"].items()) + "\n")
    c = result["cold_start_s"]
    text.append("\n## Cold start (s)\n\n" + md_table(
        ["path", "import", "load / session", "first result", "total"],
        [[k, v["import"], v["load"], v["first"], v["import"] + v["load"] + v["first"]] for k, v in c.items()]))
    text.append(f"\nConversion parity (same float batch, Keras vs ONNX FP32): max |diff| "
                f"{result['conversion_max_abs_diff']:.2e}.\n")
    return "".join(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m benchmarks.reference", __doc__)
    p.add_argument("--keras", type=Path, default=None,
                   help="the Keras checkpoint (.keras) the ONNX file was converted from "
                        "(default: one named in the ONNX provenance, if it exists here)")
    p.add_argument("--onnx", type=Path, default=DEFAULT_MODELS / "hd.onnx",
                   help="FP32 ONNX file (default models/hd.onnx)")
    p.add_argument("--int8", type=Path, default=None,
                   help="INT8 ONNX file (default: <onnx stem>.int8.onnx beside --onnx, when it exists)")
    p.add_argument("--photo", default=None, help="the VOC-sized photo (default: first of voc07_val/images)")
    p.add_argument("--frames", default="voc,1080p", help="which frames (default voc,1080p; also 4k)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed iterations per frame (default 100)")
    add_out_quick(p, "smoke run: tiny random Keras model converted here, VOC frame only, 2+5 iterations")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.runs, args.frames = 2, 5, "voc"
    return args


def model_files(args: argparse.Namespace) -> tuple[ModelMeta, Path | None]:
    """The FP32 file's metadata and the INT8 file (None without one); --quick's models made, --keras found
    in the provenance when not given; SetupError where a file is missing or invalid."""
    tmp = scratch_dir("sixview-ref-")
    if args.quick:
        args.keras, args.onnx = quick_models(tmp)
    try:
        meta = open_model(args.onnx, "cpu", args.threads).meta
        if args.keras is None:
            args.keras = keras_from_provenance(meta, args.onnx)
            if args.keras is None:
                raise SetupError(f"give --keras PATH.keras (the checkpoint {args.onnx} was converted from)")
    except (ModelError, MetadataError) as e:
        raise SetupError(e) from e
    if not args.keras.is_file():
        raise SetupError(f"Keras model not found: {args.keras}")
    int8 = args.int8 or args.onnx.with_name(args.onnx.name.removesuffix(".onnx") + ".int8.onnx")
    return meta, int8 if int8.is_file() else None


def open_engines(args: argparse.Namespace, role: str, int8: Path | None, x6: np.ndarray
                 ) -> tuple[dict[str, Engine], dict[str, dict[str, float]]]:
    """sixview's engines (FP32, and INT8 where there is a file) and their cold starts (s): the runtime's
    import in a fresh process, the model's load and its first six-view result."""
    engines: dict[str, Engine] = {}
    cold: dict[str, dict[str, float]] = {}
    ort_import_s = runtime_import_s()
    for label, path, precision in (("sixview FP32", args.onnx, "fp32"), ("sixview INT8", int8, "int8")):
        if path is None:
            continue
        eng = Engine(model_dir_for(path, role, precision), routing=role, device="cpu", precision=precision,
                     threads=args.threads)
        t0 = time.perf_counter()
        try:
            m = eng.model(role)
        except (ModelError, MetadataError, ValueError) as e:
            raise SetupError(e) from e
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        m(x6)
        cold[label] = {"import": ort_import_s, "load": load_s, "first": time.perf_counter() - t0}
        engines[label] = eng
    return engines, cold


def time_paths(kmodel: Any, engines: dict[str, Engine], meta: ModelMeta, data: bytes, args: argparse.Namespace
               ) -> tuple[dict[str, list[dict[str, float]]], dict[str, np.ndarray]]:
    """One frame through every path, --warmup + --runs iterations, the paths alternating within each (their
    order rotating): per path the timed iterations' stage times, and its merged scores."""
    labels = [REFERENCE, *engines]
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in labels}
    merged: dict[str, np.ndarray] = {}
    for i in range(args.warmup + args.runs):
        order = labels[i % len(labels):] + labels[: i % len(labels)]  # rotate who goes first
        for label in order:
            if label == REFERENCE:
                ms, merged[label] = time_reference(kmodel, data, meta.input_size, meta.view_fraction)
            else:
                ms = time_frame(engines[label], meta.role, data)
            if i >= args.warmup:
                samples[label].append(ms)
    for label, eng in engines.items():  # merged scores for the agreement check
        v = eng.classify([eng.load(data, routing=meta.role)])[0]
        merged[label] = np.array([v.decision.scores[c] for c in meta.classes])
    return samples, merged


def bench_frame(name: str, data: bytes, source: str, kmodel: Any, engines: dict[str, Engine], meta: ModelMeta,
                args: argparse.Namespace) -> dict[str, Any]:
    """One frame's ratios (reference / sixview, per iteration), stage times per path and score differences."""
    samples, merged = time_paths(kmodel, engines, meta, data, args)
    ref_total = np.array([s["total"] for s in samples[REFERENCE]])
    ratios = {}
    for label in engines:
        r = ref_total / np.array([s["total"] for s in samples[label]])
        st = summarize(r)
        ratios[f"reference / {label}"] = {"p50": st["p50"], "mean": st["mean"],
                                          "p5": float(np.percentile(r, 5)), "p95": st["p95"]}
    paths = {label: {"stages_ms": {k: summarize([s[k] for s in runs])
                                   for k in ("decode", "preprocess", "infer", "merge", "total")}}
             for label, runs in samples.items()}
    im = Image.open(io.BytesIO(data))
    log(f"  {name}: " + ", ".join(f"{k} p50 {v['p50']:.2f}x" for k, v in ratios.items()) + "; "
        + ", ".join(f"{k} {p['stages_ms']['total']['mean']:.1f} ms" for k, p in paths.items()))
    return {"frame": name, "source": source, "width": im.width, "height": im.height, "paths": paths,
            "ratios": ratios, "score_diff": {k: float(np.abs(merged[k] - merged[REFERENCE]).max()) for k in engines}}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit code."""
    args = parse_args(argv)
    try:
        keras, tf_import_s = import_keras()
        meta, int8 = model_files(args)
        role, size = meta.role, meta.input_size
        # Cold start: load + first six-view result, each path (imports timed separately).
        x6 = np.random.default_rng(0).uniform(0, 255, (6, *size, 3)).astype(np.float32)
        kmodel, keras_s = load_keras(keras, args.keras, size, x6)
        engines, cold = open_engines(args, role, int8, x6)
    except SetupError as e:
        return failed(e)
    cold = {REFERENCE: {"import": tf_import_s, **keras_s}, **cold}
    parity = float(np.abs(kmodel.predict(x6, verbose=0) - engines["sixview FP32"].model(role)(x6)).max())
    machine = machine_info()
    frames = bench_frames(args.photo, [f.strip() for f in args.frames.split(",")], log)
    frames_out = [bench_frame(name, data, source, kmodel, engines, meta, args)
                  for name, (data, source) in frames.items()]
    import tensorflow as tf

    result = {"benchmark": "reference", "quick": args.quick, "machine": machine,
              "settings": {"keras": str(args.keras), "onnx": str(args.onnx), "int8": str(int8) if int8 else None,
                           "role": role, "input_size": list(size), "threads": args.threads,
                           "warmup": args.warmup, "runs": args.runs, "tensorflow": tf.__version__,
                           "keras_version": keras.__version__},
              "goal_ratio": GOAL, "cold_start_s": cold, "conversion_max_abs_diff": parity, "frames": frames_out}
    out = out_dir(args.out, args.quick)
    write_results(out, "reference", result, markdown(result))
    log(wrote(out, "reference"))
    return 0

if __name__ == "__main__":
    sys.exit(main())
