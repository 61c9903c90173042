"""Conversion figures: node counts, file sizes, parity and batch-6 CPU latency of
raw tf2onnx / cleaned-up FP32 / FP16 / INT8 graphs, for convnext-edge and ConvNeXt-Tiny.

    .venv/bin/python benchmarks/convert_latency.py --out benchmarks/results/convert

Random weights (weights=None, constant-initialised weights replaced by random
values so every block matters); parity on real photos from ../shared/data when
present. Writes convert_latency.json and convert_latency.md to --out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # see convert/export.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click
import numpy as np

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _images(size: tuple[int, int], n: int, folder: str) -> np.ndarray:
    from convert.verify import images_from_dir

    if not (DATA / folder / "images").is_dir():
        return np.random.default_rng(0).uniform(0, 255, (n, *size, 3)).astype(np.uint8)
    return images_from_dir(DATA / folder / "images", size, n)


def _build(name: str, size: int):
    import keras

    keras.utils.set_random_seed(0)
    if name == "convnext-edge":
        from training.models.factory import build_model

        return build_model("convnext-edge", 10, size, weights="none")
    return keras.applications.ConvNeXtTiny(weights=None, input_shape=(size, size, 3), classes=10,
                                           classifier_activation="sigmoid")


def measure(name: str, size: int, runs: int, calib: int) -> dict:
    """All figures for one architecture at one input size."""
    from convert.export import export_onnx
    from convert.fp16 import to_fp16
    from convert.int8 import quantize_int8
    from convert.optimize import optimize, ort_node_count
    from convert.timing import compare_latency
    from convert.verify import keras_scores, run_onnx
    from training.data.synthetic import randomize_constant_weights

    model = randomize_constant_weights(_build(name, size))
    t0 = time.perf_counter()
    raw = export_onnx(model, (size, size), optimize_graph=False)
    t_export = time.perf_counter() - t0
    fp32, stats = optimize(raw)
    fp16 = to_fp16(fp32)
    t0 = time.perf_counter()
    int8 = quantize_int8(fp32, _images((size, size), calib, "voc07_train"))
    t_int8 = time.perf_counter() - t0
    graphs = {"raw": raw, "fp32": fp32, "fp16": fp16, "int8": int8}
    imgs = _images((size, size), 32, "voc07_val")
    ref = keras_scores(model, imgs)
    out = {k: run_onnx(g, imgs) for k, g in graphs.items()}
    lat = compare_latency(graphs, batch=6, threads=2, runs=runs, warmup=10, images=imgs)
    return {
        "model": name, "input": size, "params": int(model.count_params()),
        "export_s": round(t_export, 1), "int8_quantise_s": round(t_int8, 1), "optimize": stats,
        "nodes": {k: len(g.graph.node) for k, g in graphs.items()},
        "ort_nodes": {k: ort_node_count(g) for k, g in graphs.items()},
        "size_mb": {k: round(g.ByteSize() / 1e6, 2) for k, g in graphs.items()},
        "parity_max_abs": {"raw_vs_keras": float(np.abs(out["raw"] - ref).max()),
                           "fp32_vs_keras": float(np.abs(out["fp32"] - ref).max()),
                           "fp16_vs_fp32": float(np.abs(out["fp16"] - out["fp32"]).max()),
                           "int8_vs_fp32": float(np.abs(out["int8"] - out["fp32"]).max())},
        "latency_ms": lat,
    }


def _markdown(rows: list[dict]) -> str:
    lines = ["# Conversion figures (batch 6, ORT CPU provider, 2 threads)", "",
             "| model | input | graph | nodes | ORT nodes | MB | mean ms | p50 | p90 | p99 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        for k in ("raw", "fp32", "fp16", "int8"):
            lt = r["latency_ms"][k]
            lines.append(f"| {r['model']} | {r['input']} | {k} | {r['nodes'][k]} | {r['ort_nodes'][k]} | "
                         f"{r['size_mb'][k]} | {lt['mean']:.1f} | {lt['p50']:.1f} | {lt['p90']:.1f} | "
                         f"{lt['p99']:.1f} |")
    lines += ["", "Parity (max |delta| on 32 real images):", ""]
    for r in rows:
        lines.append(f"- {r['model']}@{r['input']}: " + ", ".join(
            f"{k} {v:.2g}" for k, v in r["parity_max_abs"].items()))
    env = rows[0]["latency_ms"]["fp32"]
    lines += ["", f"ORT {env['ort']}, {env['cpu']}; raw = tf2onnx output before clean-up."]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/results/convert"), show_default=True)
@click.option("--runs", default=100, show_default=True)
@click.option("--calibration", default=200, show_default=True, help="INT8 calibration images.")
@click.option("--model", "which", multiple=True, default=("convnext-edge:64", "convnext-tiny:224"),
              show_default=True, help="NAME:SIZE, repeatable.")
def main(out: Path, runs: int, calibration: int, which: tuple[str, ...]) -> None:
    """Measure and write JSON + Markdown."""
    rows = []
    for spec in which:
        name, size = spec.split(":")
        rows.append(measure(name, int(size), runs, calibration))
        click.echo(json.dumps({k: rows[-1][k] for k in ("model", "input", "nodes", "size_mb",
                                                        "parity_max_abs")}), err=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "convert_latency.json").write_text(json.dumps(rows, indent=2))
    (out / "convert_latency.md").write_text(_markdown(rows))
    click.echo(_markdown(rows))


if __name__ == "__main__":
    main()
