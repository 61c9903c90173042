"""Cold start per CPU backend: a fresh process to its first six-view result, and OpenVINO's compile cache.

Each measurement is a new Python process that imports the runtime, opens the
model (ONNX Runtime: session creation; OpenVINO: reading and compiling the
ONNX file) and runs one six-view batch. OpenVINO runs twice per repeat: with
an empty compiled-model cache (`$SIXVIEW_OV_CACHE` pointed at a new folder:
a first start on a machine) and then with that cache filled (every later
start). Medians over --repeats; each child reports its own phases (import,
open, first inference) and the parent the process's wall time.

Writes cold_start.json and cold_start.md to --out (default benchmarks/results/<machine>/).

    python -m benchmarks.cold_start                   # shipped HD model, 3 repeats
    python -m benchmarks.cold_start --model models/standard.onnx --repeats 5
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._cli import OUT_HELP, failed, log, parser
from benchmarks._common import (
    DEFAULT_MODELS,
    REPO,
    machine_md,
    md_table,
    out_dir,
    scratch_dir,
    shown,
    write_results,
    wrote,
)
from edge.stats import machine_info


def child(model: str, device: str, precision: str, threads: int) -> dict[str, Any]:
    """In the fresh process: import, open, first inference; ms each."""
    t0 = time.perf_counter()
    from edge.model import open_model

    if device == "openvino":
        import openvino  # noqa: F401 (its import is part of this backend's start)
    t1 = time.perf_counter()
    m = open_model(model, device, threads, precision)
    t2 = time.perf_counter()
    h, w = m.meta.input_size
    m(np.random.default_rng(0).uniform(0, 255, (6, h, w, 3)).astype(np.float32))
    t3 = time.perf_counter()
    return {"import_ms": (t1 - t0) * 1e3, "open_ms": (t2 - t1) * 1e3, "first_infer_ms": (t3 - t2) * 1e3,
            "provider": m.provider, "precision": m.precision,
            "from_cache": getattr(m.session, "from_cache", None)}


def spawn(model: Path, device: str, precision: str, threads: int, cache: Path | None) -> dict[str, Any]:
    """One child process; its phases plus the process's wall time."""
    env = dict(os.environ)
    if cache is not None:
        env["SIXVIEW_OV_CACHE"] = str(cache)
    cmd = [sys.executable, "-m", "benchmarks.cold_start", "--child", str(model), device, precision, str(threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    wall = (time.perf_counter() - t0) * 1e3
    if out.returncode != 0:
        raise RuntimeError(f"{device} {precision}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"process_ms": wall}


def configs(bf16: bool) -> list[tuple[str, str, str, str]]:
    """(label, device, precision, cache state) to measure."""
    out = [("ONNX Runtime fp32", "cpu", "fp32", "-")]
    for p in ("fp32", "bf16") if bf16 else ("fp32",):
        out += [(f"OpenVINO {p}, empty cache", "openvino", p, "empty"),
                (f"OpenVINO {p}, cached", "openvino", p, "filled")]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report: median ms per phase and per configuration."""
    keys = ("import_ms", "open_ms", "first_infer_ms", "process_ms")
    rows = [[r["label"], r["provider"], r["precision"], *(r["median"][k] for k in keys), r["n"]]
            for r in result["results"]]
    s = result["settings"]
    return ("# Cold start\n\n" + machine_md(result["machine"])
            + f"\nModel `{s['model']}`, threads {s['threads'] or 'default'}; medians over {s['repeats']} fresh "
              "processes. import = the runtime and the backend's package; open = session creation (OpenVINO: "
              "read + compile, or load from its cache); first = the first six-view batch; process = the whole "
              "child process, interpreter start included.\n\n"
            + md_table(["backend", "provider", "precision", "import", "open", "first", "process", "n"], rows))


def main(argv: list[str] | None = None) -> int:
    """Measure cold starts; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        model, device, precision, threads = argv[1:5]
        print(json.dumps(child(model, device, precision, int(threads))))
        return 0
    p = parser("python -m benchmarks.cold_start", __doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODELS / "hd.onnx", help="ONNX file (default models/hd.onnx)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per configuration (default 3)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: the backends' default)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    args = p.parse_args(argv)
    if not args.model.is_file():
        return failed(f"{args.model} not found")
    from edge.openvino_backend import native_bf16

    samples: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, tuple[str, str, str]] = {}
    for _ in range(args.repeats):  # repeats outermost: load changes hit every configuration alike
        caches: dict[str, Path] = {}
        for label, device, precision, state in configs(native_bf16()):
            cache = None
            if state != "-":
                cache = caches.setdefault(precision, scratch_dir("sixview-ov-cache-"))
            try:
                r = spawn(args.model, device, precision, args.threads, cache)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"  {label}: {e}")
                continue
            samples.setdefault(label, []).append(r)
            meta[label] = (device, precision, state)
            log(f"  {label:<28} import {r['import_ms']:7.0f}  open {r['open_ms']:7.0f}  first "
                f"{r['first_infer_ms']:6.0f}  process {r['process_ms']:7.0f} ms")
    results = []
    for label, rs in samples.items():
        keys = ("import_ms", "open_ms", "first_infer_ms", "process_ms")
        results.append({"label": label, "device": meta[label][0], "cache": meta[label][2],
                        "provider": rs[0]["provider"], "precision": rs[0]["precision"], "n": len(rs),
                        "from_cache": [r["from_cache"] for r in rs],
                        "median": {k: float(np.median([r[k] for r in rs])) for k in keys}, "runs": rs})
    result = {"benchmark": "cold_start", "machine": machine_info(), "results": results,
              "settings": {"model": shown(args.model), "repeats": args.repeats, "threads": args.threads}}
    out = out_dir(args.out, False)
    write_results(out, "cold_start", result, markdown(result))
    log(wrote(out, "cold_start"))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
