"""Backbones side by side: each recipe's HD model, FP32 and INT8, on this CPU.

For every --recipe NAME=DIR (DIR holds `hd.onnx`, an FP32 sixview model) the FP32
graph is quantised with `convert.int8.quantize_int8`, calibrated on --calibration
voc07_train photos at the model's input size. One six-view frame (batch 6) is then
timed for FP32 and INT8 of ALL recipes in one `convert.timing.compare_latency` call
(interleaved rounds, so the ratios come from one run; the input is real photos, or
noise when the recipes' input sizes differ), and both precisions are
scored on voc07_val through the runtime as `sixview eval` does: mAP with the six
views (tiling on) and with the whole image alone (tiling off).

Writes backbones.json and backbones.md to --out (default benchmarks/results/<machine>/).

    python benchmarks/backbones.py --recipe convnext-edge=runs/convnext-edge/calibrated \\
        --recipe efficientnet-lite0=runs/efficientnet-lite0/calibrated
    python benchmarks/backbones.py --quick     # smoke run: a toy model on a synthetic set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx

from benchmarks._cli import SetupError, add_out_quick, command_line, failed, log, parser
from benchmarks._common import (
    REPO,
    encode_jpeg,
    machine_md,
    md_table,
    onnx_params,
    out_dir,
    scratch_dir,
    toy_models,
    write_results,
    wrote,
)
from convert.int8 import quantize_int8
from convert.timing import compare_latency
from convert.verify import images_from_dir
from edge.engine import Engine
from edge.metadata import ModelMeta
from edge.stats import machine_info
from training.data.datasets import open_source
from training.eval.scoring import evaluate_role, load_set

DATA = REPO.parent / "shared" / "data"
PRECISIONS = ("fp32", "int8")


def quick_set(root: Path, n: int = 16) -> Path:
    """A labelled set for the toy colour model: grey photos with red/green/blue squares."""
    rng = np.random.default_rng(0)
    colours = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR
    (root / "images").mkdir(parents=True)
    rows = ["path,labels"]
    for i in range(n):
        img = np.clip(rng.normal(128, 20, (120, 160, 3)), 0, 255).astype(np.uint8)
        labels = [c for c in colours if rng.random() < 0.4]
        for c in labels:
            y, x = int(rng.integers(0, 70)), int(rng.integers(0, 110))
            img[y:y + 50, x:x + 50] = colours[c]
        (root / "images" / f"{i}.jpg").write_bytes(encode_jpeg(img))
        rows.append(f"images/{i}.jpg,{'|'.join(labels)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def int8_dir(fp32: onnx.ModelProto, calibration: np.ndarray, role: str) -> tuple[Path, float]:
    """A scratch models folder holding `<role>.int8.onnx` (metadata copied, precision int8)."""
    t0 = time.perf_counter()
    q = quantize_int8(fp32, calibration)
    seconds = time.perf_counter() - t0
    props = {p.key: p.value for p in q.metadata_props} | {"precision": json.dumps("int8")}
    del q.metadata_props[:]
    onnx.helper.set_model_props(q, props)
    d = scratch_dir("sixview-backbones-")
    onnx.save(q, str(d / f"{role}.int8.onnx"))
    return d, seconds


def score(models_dir: Path, precision: str, role: str, source: Any, split: str, limit: int | None) -> dict:
    """`sixview eval`'s scoring of one model file: metrics with tiling on (six views) and off (whole)."""
    engine = Engine(models_dir, routing=role, device="cpu", precision=precision, tiling=True)
    ds = load_set(source, split, engine.model(role).meta.classes, limit)
    res, _ = evaluate_role(engine, role, ds)
    return res


def markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    rows = []
    for b in r["recipes"]:
        lat, m = b["latency_ms"], b["map"]
        rows.append([b["name"], "x".join(map(str, b["input_size"])), b["params"] / 1e6, b["file_mb"]["fp32"],
                     b["file_mb"]["int8"], lat["fp32"]["mean"], lat["fp32"]["p50"], lat["fp32"]["p95"],
                     lat["int8"]["mean"], lat["int8"]["p50"], lat["int8"]["p95"], f"{b['int8_speedup']:.2f}x",
                     m["fp32"]["six_views"], m["fp32"]["whole"], m["int8"]["six_views"], m["int8"]["whole"]])
    inputs = "real photos" if s["real_inputs"] else "uniform noise (the input sizes differ)"
    return "".join([
        "# Backbones: HD models, FP32 and INT8\n\n", machine_md(r["machine"]),
        f"\nLatency: one six-view frame (batch {s['batch']}), ORT CPU provider, {s['threads']} threads,"
        f" {s['warmup']} warm-up runs, then {s['runs']} timed runs per model in {s['rounds']} rounds interleaved"
        f" over all models (ratios from one run); input {inputs}; ms per frame. INT8: `quantize_int8`"
        f" (static QDQ) calibrated on {s['calibration']} photos from `{s['calibration_dir']}`."
        f" mAP on `{s['data']}` ({s['split']}, {r['recipes'][0]['images']} images) through the runtime as"
        " `sixview eval` scores it: six = max over the six views (tiling on), whole = whole image alone.\n\n",
        md_table(["recipe", "input", "params (M)", "FP32 MB", "INT8 MB", "FP32 mean", "p50", "p95", "INT8 mean",
                  "p50", "p95", "INT8 speed-up", "mAP FP32 six", "FP32 whole", "mAP INT8 six", "INT8 whole"], rows),
        f"\n`{r['command']}`\n"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python benchmarks/backbones.py", __doc__)
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=DIR",
                   help="a recipe's name and the folder holding its FP32 <role>.onnx (repeatable)")
    p.add_argument("--role", default="hd", choices=("hd", "standard"), help="which model of each recipe (hd)")
    p.add_argument("--data", type=Path, default=DATA / "voc07_val", help="labelled set to score (voc07_val)")
    p.add_argument("--split", default=None, help="its split (default: test if it has one, else all)")
    p.add_argument("--limit", type=int, default=None, help="score an evenly spaced subset of N images")
    p.add_argument("--calibration-dir", type=Path, default=DATA / "voc07_train" / "images",
                   help="INT8 calibration photos (voc07_train)")
    p.add_argument("--calibration", type=int, default=200, help="how many calibration photos (200)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for the timing (2)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per model (10)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per model (100)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the runs are split into (5)")
    add_out_quick(p, "smoke run: a toy model, a synthetic set, 10 runs")
    args = p.parse_args(argv)
    if args.quick:
        toy = toy_models(args.role, (32, 32))
        args.recipe = args.recipe or [f"toy={toy}"]
        args.data = quick_set(scratch_dir("sixview-bbset-"))
        args.calibration_dir, args.calibration = args.data / "images", 8
        args.warmup, args.runs, args.rounds = 2, 10, 2
    return args


def recipes_of(args: argparse.Namespace) -> list[list[str]]:
    """[name, folder] per --recipe; SetupError naming what is wrong with them or the sets."""
    recipes = [r.split("=", 1) for r in args.recipe if "=" in r]
    names = [n for n, _ in recipes]
    bad = [f"--recipe {r} (expected NAME=DIR)" for r in args.recipe if "=" not in r]
    bad += [f"missing {d}/{args.role}.onnx" for _, d in recipes if not (Path(d) / f"{args.role}.onnx").is_file()]
    bad += [f"missing {p}" for p in (args.data, args.calibration_dir) if not p.exists()]
    bad += [f"recipe name {n} given twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if not recipes or bad:
        raise SetupError("; ".join(bad) if bad else "give at least one --recipe NAME=DIR (or --quick)")
    return recipes


def quantise(recipes: list[list[str]], args: argparse.Namespace
             ) -> tuple[list[dict[str, Any]], dict[str, onnx.ModelProto], dict[str, dict[str, Path]]]:
    """Each recipe's FP32 graph quantised to INT8: its result row, both graphs by name, both models folders."""
    rows, graphs, dirs = [], {}, {}
    for name, folder in recipes:
        path = Path(folder) / f"{args.role}.onnx"
        fp32 = onnx.load(str(path))
        meta = ModelMeta.from_props({p.key: p.value for p in fp32.metadata_props}, str(path))
        calib = images_from_dir(args.calibration_dir, meta.input_size, args.calibration)
        log(f"{name}: {path}, input {meta.input_size}; quantising on {len(calib)} photos")
        qdir, q_s = int8_dir(fp32, calib, args.role)
        dirs[name] = {"fp32": path.parent, "int8": qdir}
        graphs[f"{name} fp32"], graphs[f"{name} int8"] = fp32, onnx.load(str(qdir / f"{args.role}.int8.onnx"))
        params = onnx_params(fp32)
        rows.append({"name": name, "dir": str(folder), "input_size": list(meta.input_size), "params": params,
                     "file_mb": {"fp32": round(path.stat().st_size / 1e6, 2),
                                 "int8": round((qdir / f"{args.role}.int8.onnx").stat().st_size / 1e6, 2)},
                     "quantise_s": round(q_s, 1)})
    return rows, graphs, dirs


def measure(r: dict[str, Any], lat: dict[str, dict[str, Any]], dirs: dict[str, Path], source: Any, split: str,
            args: argparse.Namespace) -> None:
    """A recipe's row completed: its latencies (from the interleaved run `lat`) and its scores, both precisions."""
    r["latency_ms"] = {p: lat[f"{r['name']} {p}"] for p in PRECISIONS}
    r["int8_speedup"] = r["latency_ms"]["fp32"]["mean"] / r["latency_ms"]["int8"]["mean"]
    r["eval"] = {}
    for p in PRECISIONS:
        log(f"{r['name']} {p}: scoring {args.data} ({split})")
        r["eval"][p] = score(dirs[p], p, args.role, source, split, args.limit)
    r["map"] = {p: {"six_views": e["tiling_on"]["mAP"], "whole": e["tiling_off"]["mAP"]}
                for p, e in r["eval"].items()}
    r["images"] = r["eval"]["fp32"]["images"]
    lt, m = r["latency_ms"], r["map"]
    log(f"  {r['name']}: FP32 {lt['fp32']['mean']:.2f} ms, INT8 {lt['int8']['mean']:.2f} ms"
        f" ({r['int8_speedup']:.2f}x); mAP six/whole FP32 {m['fp32']['six_views']:.3f}/{m['fp32']['whole']:.3f},"
        f" INT8 {m['int8']['six_views']:.3f}/{m['int8']['whole']:.3f}")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; return the exit code."""
    args = parse_args(argv)
    try:
        recipes = recipes_of(args)
    except SetupError as e:
        return failed(e)
    machine = machine_info()
    log(f"backbones on {machine['cpu']} ({machine['cores']} cores), ORT {machine['onnxruntime']}")
    source = open_source(args.data)
    split = args.split or ("test" if "test" in source.splits else source.splits[0])
    rows, graphs, dirs = quantise(recipes, args)
    sizes = {tuple(r["input_size"]) for r in rows}
    real = len(sizes) == 1
    images = images_from_dir(args.data, next(iter(sizes)), 6) if real else None
    log(f"timing {len(graphs)} models, batch 6, {args.runs} runs each in {args.rounds} interleaved rounds")
    lat = compare_latency(graphs, batch=6, threads=args.threads, runs=args.runs, warmup=args.warmup,
                          rounds=args.rounds, images=images)
    for r in rows:
        measure(r, lat, dirs[r["name"]], source, split, args)
    result = {"benchmark": "backbones", "quick": args.quick, "machine": machine,
              "command": command_line("python benchmarks/backbones.py", argv),
              "settings": {"role": args.role, "data": str(args.data), "split": split, "limit": args.limit,
                           "calibration_dir": str(args.calibration_dir), "calibration": args.calibration,
                           "batch": 6, "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
                           "rounds": args.rounds, "real_inputs": real},
              "recipes": rows}
    out = out_dir(args.out, args.quick)
    write_results(out, "backbones", result, markdown(result))
    log(wrote(out, "backbones"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
