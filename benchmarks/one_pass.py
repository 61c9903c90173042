"""One-pass HD against per-view HD: the work and the time of a six-view frame, interleaved in one run.

--before holds a per-view hd.onnx (six 224-px views a frame), --after a one-pass one (the frame once,
`convert.onepass`), or any other HD file to compare frame for frame (the same graph before and after a
change of its head, say). For each backend, ONNX Runtime FP32, OpenVINO FP32 and OpenVINO INT8 (where both
folders hold an INT8 IR), both files are opened and one frame each (random pixels of each model's
input) is timed in turn, in a rotating order (`time_interleaved`), so that load hits both alike;
the figure is after's p50 / before's p50. Multiply-adds per frame come from `convert.macs.frame_macs`.

--caps native,AVX2 runs each cap in a child process with ONEDNN_MAX_CPU_ISA set (`AVX2` stands for a
CPU without AVX-512: it caps the oneDNN kernels inside OpenVINO, not ONNX Runtime's own kernels, and
not OpenVINO's own kernels in release builds; see benchmarks/cpu_classes.py).

Writes one_pass.json and one_pass.md to --out (default benchmarks/results/<machine>/).

    python -m benchmarks.one_pass --before models --after runs/onepass/calibrated
    python -m benchmarks.one_pass --before A --after B --caps native,AVX2 --runs 60
    python -m benchmarks.one_pass --before OLD --after models --out benchmarks/results/<machine>/open_head
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cli import add_out_quick, failed, log, parser
from benchmarks._common import (
    frame_input,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    time_interleaved,
    write_results,
    wrote,
)
from benchmarks.cpu_classes import parse_caps, run_capped
from edge.errors import SixviewError
from edge.model import open_model
from edge.stats import machine_info, summarize

BACKENDS = {"ONNX Runtime fp32": ("cpu", "fp32"), "OpenVINO fp32": ("openvino", "fp32"),
            "OpenVINO int8": ("openvino", "int8")}


def measure(before: Path, after: Path, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    """Per backend: both files' frame p50 (interleaved) and the ratio; a backend that does not open: why."""
    out: dict[str, Any] = {}
    for label, (device, precision) in BACKENDS.items():
        try:
            models = {k: open_model(d / "hd.onnx", device, threads, precision) for k, d in
                      (("before", before), ("after", after))}
        except SixviewError as e:
            out[label] = {"skipped": str(e)}
            log(f"  {label}: skipped ({e})")
            continue
        inputs = {k: frame_input(m) for k, m in models.items()}
        fns = {k: (lambda m=m, x=inputs[k]: m(x)) for k, m in models.items()}
        samples = time_interleaved(fns, warmup, runs)
        p50 = {k: summarize(v)["p50"] for k, v in samples.items()}
        paired = float(np.median(np.asarray(samples["after"]) / np.asarray(samples["before"])))
        out[label] = {"p50_ms": p50, "ratio": p50["after"] / p50["before"], "ratio_paired": paired,
                      "runs": len(samples["after"])}
        log(f"  {label}: before {p50['before']:.2f} ms, after {p50['after']:.2f} ms, x{out[label]['ratio']:.2f}")
    return out


def run_child(cap: str, args: Any) -> dict[str, Any]:
    """`measure` under one oneDNN cap, in a child process (its JSON on stdout), or the failure."""
    cmd = [sys.executable, "-m", "benchmarks.one_pass", "--before", str(args.before), "--after", str(args.after),
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--runs", str(args.runs), "--child"]
    proc = run_capped(cap, cmd, scratch_dir("sixview-ov-"), args.timeout_s)
    return {"failed": proc} if isinstance(proc, str) else json.loads(proc.stdout)


def markdown(result: dict[str, Any]) -> str:
    """The report: the frame's multiply-adds, and per cap and backend both p50s and their ratio."""
    g = result["gmac_per_frame"]
    rows = [[cap, label, r["p50_ms"]["before"], r["p50_ms"]["after"], f"x{r['ratio']:.2f}",
             f"x{r['ratio_paired']:.2f}", r["runs"]]
            for cap, per in result["caps"].items() if "failed" not in per for label, r in per.items() if "p50_ms" in r]
    s = result["settings"]
    return "".join([
        "# HD frame for frame: before -> after (a per-view graph -> its one-pass rewrite, or any other change)\n\n",
        machine_md(result["machine"]),
        f"\nGMAC per six-view frame: before {g['before']:.3f}, after {g['after']:.3f}"
        f" (x{g['after'] / g['before']:.2f})."
        f" {s['threads']} threads; {s['warmup']} warm-up and {s['runs']} timed frames per file, interleaved. p50 ms per"
        " frame; ratio = after / before (paired: median of the per-round ratios). `AVX2`: oneDNN inside OpenVINO capped"
        " to AVX2 (ONNX Runtime's kernels are not capped).\n\n",
        md_table(["cap", "backend", "before p50", "after p50", "ratio", "paired", "runs"], rows),
        "".join(f"\n- {cap}: failed ({per['failed']})" for cap, per in result["caps"].items() if "failed" in per),
        "".join(f"\n- {cap}, {label}: skipped ({r['skipped']})" for cap, per in result["caps"].items()
                if "failed" not in per for label, r in per.items() if "skipped" in r)])


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.one_pass", __doc__)
    p.add_argument("--before", type=Path, default=Path("models"), help="folder with the per-view hd.onnx")
    p.add_argument("--after", type=Path, required=True,
                   help="folder with the hd.onnx to compare (the one-pass one, or another)")
    p.add_argument("--caps", default="native", help="comma-separated: native, AVX2, AVX512_CORE, ...")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--timeout-s", type=float, default=900.0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_out_quick(p, "fewer runs (a smoke run)")
    args = p.parse_args(argv)
    for d in (args.before, args.after):
        if not (d / "hd.onnx").is_file():
            return failed(f"no hd.onnx in {d}")
    if args.quick:
        args.warmup, args.runs = 1, 3
    if args.child:
        print(json.dumps(measure(args.before, args.after, args.threads, args.warmup, args.runs)))
        return 0
    from convert.macs import frame_macs

    try:
        caps = parse_caps(args.caps)
    except ValueError as e:
        return failed(e)
    result = {"machine": machine_info(), "settings": {k: getattr(args, k) for k in ("threads", "warmup", "runs")},
              "before": str(args.before), "after": str(args.after),
              "gmac_per_frame": {k: frame_macs(d / "hd.onnx") / 1e9 for k, d in
                                 (("before", args.before), ("after", args.after))}, "caps": {}}
    for cap in caps:
        result["caps"][cap] = run_child(cap, args)
    out = out_dir(args.out, args.quick)
    write_results(out, "one_pass", result, markdown(result))
    log(wrote(out, "one_pass"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
