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
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

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
)
from benchmarks.pipeline import time_frame
from edge.engine import Engine
from edge.metadata import MetadataError, ModelMeta
from edge.model import ModelError, open_model
from edge.stats import machine_info, summarize
from edge.tiling import view_boxes

GOAL = 5.0
QUICK_SIZE = (64, 64)
QUICK_CLASSES = ("airplane", "automobile", "bird")


def reference_views(data: bytes, input_size: tuple[int, int], fraction: float) -> np.ndarray:
    """The reference preprocessing: PIL decode, six crops, bicubic resize, float32 batch."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    h, w = input_size
    crops = [im.crop((v.x0, v.y0, v.x1, v.y1)).resize((w, h), Image.BICUBIC)
             for v in view_boxes(im.width, im.height, fraction)]
    return np.stack([np.asarray(c, dtype=np.float32) for c in crops])


def time_reference(model: Any, data: bytes, input_size: tuple[int, int], fraction: float
                   ) -> tuple[dict[str, float], np.ndarray]:
    """One frame the reference way; ms per stage and the merged scores."""
    t0 = time.perf_counter()
    im = Image.open(io.BytesIO(data))
    im.load()
    t1 = time.perf_counter()
    im = im.convert("RGB")
    h, w = input_size
    crops = [im.crop((v.x0, v.y0, v.x1, v.y1)).resize((w, h), Image.BICUBIC)
             for v in view_boxes(im.width, im.height, fraction)]
    batch = np.stack([np.asarray(c, dtype=np.float32) for c in crops])
    t2 = time.perf_counter()
    scores = model.predict(batch, verbose=0)
    t3 = time.perf_counter()
    merged = scores.max(axis=0)
    t4 = time.perf_counter()
    ms = {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3, "infer": (t3 - t2) * 1e3,
          "merge": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
    return ms, merged


def quick_models(tmp: Path) -> tuple[Path, Path]:
    """A tiny Keras model (0..255 input, sigmoid head) saved as .keras, and its ONNX
    conversion (tf2onnx) with sixview metadata, for --quick."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from convert.keras3_fixes import keras3_fixes

    keras.utils.set_random_seed(0)
    h, w = QUICK_SIZE
    inp = keras.Input((h, w, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    out = keras.layers.Dense(len(QUICK_CLASSES), activation="sigmoid", name="scores")(x)
    model = keras.Model(inp, out, name="quick_reference")
    keras_path = tmp / "quick.keras"
    model.save(keras_path)
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name="image"),)
    with keras3_fixes():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    meta = ModelMeta(classes=QUICK_CLASSES, role="hd", input_size=QUICK_SIZE,
                     thresholds={c: 0.3 for c in QUICK_CLASSES}, precision="fp32",
                     provenance={"source": "benchmarks.reference --quick (random weights)"})
    onnx.helper.set_model_props(proto, meta.to_props())
    onnx_path = tmp / "hd.onnx"
    onnx.save(proto, str(onnx_path))
    return keras_path, onnx_path


def runtime_import_s() -> float:
    """Seconds a fresh Python takes to import sixview's runtime (ONNX Runtime, OpenCV, edge)."""
    code = ("import time; t = time.perf_counter(); import edge.engine, edge.decode; "
            "print(time.perf_counter() - t)")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


def keras_from_provenance(meta: ModelMeta, onnx_path: Path) -> Path | None:
    """A .keras checkpoint named in the ONNX file's provenance that exists here, if any."""
    for v in meta.provenance.values():
        if isinstance(v, str) and v.endswith(".keras"):
            for p in (Path(v), onnx_path.parent / v, Path(__file__).resolve().parent.parent / v):
                if p.is_file():
                    return p
    return None


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
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<machine>/)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny random Keras model converted here, VOC frame only, 2+5 iterations")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.runs, args.frames = 2, 5, "voc"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit code."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()  # TensorFlow's import is the reference path's first cold-start cost
    try:
        import keras

        import training.models.layers  # noqa: F401  (registers sixview's custom layers)
    except ImportError as e:
        log(f"error: the reference path needs the training extras: pip install -e '.[train]' ({e})")
        return 2
    tf_import_s = time.perf_counter() - t0
    tmp = scratch_dir("sixview-ref-")
    if args.quick:
        args.keras, args.onnx = quick_models(tmp)
    try:
        meta = open_model(args.onnx, "cpu", args.threads).meta
        if args.keras is None:
            args.keras = keras_from_provenance(meta, args.onnx)
            if args.keras is None:
                log(f"error: give --keras PATH.keras (the checkpoint {args.onnx} was converted from)")
                return 2
    except (ModelError, MetadataError) as e:
        log(f"error: {e}")
        return 2
    if not args.keras.is_file():
        log(f"error: Keras model not found: {args.keras}")
        return 2
    int8 = args.int8 or args.onnx.with_name(args.onnx.name.removesuffix(".onnx") + ".int8.onnx")
    int8 = int8 if int8.is_file() else None
    role, size, fraction = meta.role, meta.input_size, meta.view_fraction

    # Cold start: load + first six-view result, each path (imports timed separately).
    rng = np.random.default_rng(0)
    x6 = rng.uniform(0, 255, (6, *size, 3)).astype(np.float32)
    t0 = time.perf_counter()
    kmodel = keras.models.load_model(args.keras, compile=False)
    keras_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kmodel.predict(x6, verbose=0)
    keras_first_s = time.perf_counter() - t0
    if tuple(kmodel.input_shape[1:3]) != tuple(size):
        log(f"error: Keras input {kmodel.input_shape[1:3]} != ONNX input {size}: not the same model")
        return 2
    engines: dict[str, Engine] = {}
    ort_import_s = runtime_import_s()
    cold: dict[str, dict[str, float]] = {"reference (Keras)": {"import": tf_import_s, "load": keras_load_s,
                                                               "first": keras_first_s}}
    for label, path, precision in (("sixview FP32", args.onnx, "fp32"), ("sixview INT8", int8, "int8")):
        if path is None:
            continue
        eng = Engine(model_dir_for(path, role, precision), routing=role, device="cpu", precision=precision,
                     threads=args.threads)
        t0 = time.perf_counter()
        try:
            m = eng.model(role)
        except (ModelError, MetadataError, ValueError) as e:
            log(f"error: {e}")
            return 2
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        m(x6)
        cold[label] = {"import": ort_import_s, "load": load_s, "first": time.perf_counter() - t0}
        engines[label] = eng
    parity = float(np.abs(kmodel.predict(x6, verbose=0) - engines["sixview FP32"].model(role)(x6)).max())

    machine = machine_info()
    labels = ["reference (Keras)", *engines]
    frames_out = []
    for name, (data, source) in bench_frames(args.photo, [f.strip() for f in args.frames.split(",")], log).items():
        samples: dict[str, list[dict[str, float]]] = {k: [] for k in labels}
        merged: dict[str, np.ndarray] = {}
        for i in range(args.warmup + args.runs):
            order = labels[i % len(labels):] + labels[: i % len(labels)]  # rotate who goes first
            for label in order:
                if label == "reference (Keras)":
                    ms, merged[label] = time_reference(kmodel, data, size, fraction)
                else:
                    ms = time_frame(engines[label], role, data)
                if i >= args.warmup:
                    samples[label].append(ms)
        for label, eng in engines.items():  # merged scores for the agreement check
            v = eng.classify([eng.load(data, routing=role)])[0]
            merged[label] = np.array([v.decision.scores[c] for c in meta.classes])
        ref_total = np.array([s["total"] for s in samples["reference (Keras)"]])
        ratios = {}
        for label in engines:
            r = ref_total / np.array([s["total"] for s in samples[label]])
            st = summarize(r)
            ratios[f"reference / {label}"] = {"p50": st["p50"], "mean": st["mean"],
                                              "p5": float(np.percentile(r, 5)), "p95": st["p95"]}
        paths = {label: {"stages_ms": {k: summarize([s[k] for s in samples[label]])
                                       for k in ("decode", "preprocess", "infer", "merge", "total")}}
                 for label in labels}
        im = Image.open(io.BytesIO(data))
        frames_out.append({"frame": name, "source": source, "width": im.width, "height": im.height,
                           "paths": paths, "ratios": ratios,
                           "score_diff": {k: float(np.abs(merged[k] - merged["reference (Keras)"]).max())
                                          for k in engines}})
        log(f"  {name}: " + ", ".join(f"{k} p50 {v['p50']:.2f}x" for k, v in ratios.items()) + "; "
            + ", ".join(f"{k} {paths[k]['stages_ms']['total']['mean']:.1f} ms" for k in labels))
    import tensorflow as tf

    result = {"benchmark": "reference", "quick": args.quick, "machine": machine,
              "settings": {"keras": str(args.keras), "onnx": str(args.onnx), "int8": str(int8) if int8 else None,
                           "role": role, "input_size": list(size), "threads": args.threads,
                           "warmup": args.warmup, "runs": args.runs, "tensorflow": tf.__version__,
                           "keras_version": keras.__version__},
              "goal_ratio": GOAL, "cold_start_s": cold, "conversion_max_abs_diff": parity, "frames": frames_out}
    out = out_dir(args.out, args.quick)
    write_results(out, "reference", result, markdown(result))
    log(f"wrote {out / 'reference.json'}, reference.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
