"""CPU classes: each model on ONNX Runtime FP32 and OpenVINO FP32, BF16 and INT8 under oneDNN ISA caps.

For each cap in --caps, `benchmarks.latency` runs in a child process with
ONEDNN_MAX_CPU_ISA set to it, $SIXVIEW_CPU_CLASS set to the CPU class the cap
stands for (`edge.providers.CPU_CLASSES`: what `--device auto` chooses by) and
a fresh OpenVINO compile cache; `native` is the machine as it is. Each model's
backends are timed interleaved in that child (batch 6: one six-view frame).
With --repeats N the caps run N times in turn and each figure is the median of
the N p50s.

What a cap emulates: it limits the oneDNN kernels inside OpenVINO (most of a
convolution net's time) to that instruction set; OpenVINO's own kernels take no
cap in its release builds, and ONNX Runtime's kernels (MLAS) are never capped
by it, so its ONNX Runtime figures are this CPU's. It is an emulation of a
CPU class, not a measurement on one.

Writes cpu_classes.json and cpu_classes.md to --out (default
benchmarks/results/<machine>/): per cap and model the p50 ms per frame of each
backend, the gates the model passed, what `--device auto --precision auto`
chooses on that class (`edge.providers.auto_cpu_precision`) and the fastest
backend the gates allow.

    python -m benchmarks.cpu_classes                              # the shipped models/, every cap
    python -m benchmarks.cpu_classes --caps native,AVX2 --runs 30 --repeats 2
    python -m benchmarks.cpu_classes --quick                      # smoke run on a toy model
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cli import add_models, add_out_quick, failed, log, parser
from benchmarks._common import REPO, md_table, out_dir, scratch_dir, shown, write_results, wrote
from edge.gates import gate_status
from edge.providers import CPU_CLASS_ENV, CPU_CLASSES, auto_cpu_precision, classify_cpu, cpu_class
from edge.stats import cpu_flags, machine_info, usable_cores

CAP_CLASS = {"AVX512_CORE_AMX": "amx", "AVX512_CORE_BF16": "avx512_bf16", "AVX512_CORE_VNNI": "avx512_vnni",
             "AVX512_CORE": "avx512", "AVX2": "avx2"}  # ONEDNN_MAX_CPU_ISA -> the class it stands for
BACKENDS = ("ONNX Runtime fp32", "OpenVINO fp32", "OpenVINO bf16", "OpenVINO int8")
TIE = 1.05  # auto's choice within 5% of the fastest p50 counts as the fastest (the noise of a shared machine)


def cap_class(cap: str) -> str:
    """The CPU class a cap stands for: `native` is this machine's own; a cap never raises the class."""
    own = classify_cpu(cpu_flags()).name
    if cap == "native":
        return own
    names = [c.name for c in CPU_CLASSES]
    return max(CAP_CLASS[cap], own, key=names.index)  # later in CPU_CLASSES: the lesser class


def child_env(cap: str, cls: str, cache: Path) -> dict[str, str]:
    """The environment of one cap's child: the oneDNN cap, the class, its own compile cache."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if cap != "native":
        env["ONEDNN_MAX_CPU_ISA"] = cap
    env[CPU_CLASS_ENV] = cls
    env["SIXVIEW_OV_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def parse_caps(text: str) -> list[str]:
    """The caps of a comma-separated --caps; a ValueError naming any that is neither native nor in CAP_CLASS."""
    caps = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in caps if c != "native" and c not in CAP_CLASS]
    if unknown or not caps:
        raise ValueError(f"unknown caps {unknown}: choose native or {', '.join(CAP_CLASS)}")
    return caps


def run_capped(cap: str, cmd: list[str], cache: Path, timeout_s: float) -> subprocess.CompletedProcess | str:
    """`cmd` in a child process under one cap (`child_env`, its own OpenVINO cache): the finished process,
    or why it failed (ran past `timeout_s`, or exited non-zero: the tail of its output)."""
    log(f"cap {cap} (class {cap_class(cap)}): {' '.join(cmd[1:])}")
    try:
        proc = subprocess.run(cmd, env=child_env(cap, cap_class(cap), cache), cwd=REPO, capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log(f"  cap {cap} ran past {timeout_s} s")
        return f"ran past {timeout_s} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        log(f"  cap {cap} failed (exit {proc.returncode}): {' | '.join(tail)}")
        return f"exit {proc.returncode}: {' | '.join(tail)}"
    return proc


def run_cap(cap: str, args: Any, work: Path) -> dict[str, Any]:
    """`benchmarks.latency` under one cap, in a child process; its latency.json (or the failure)."""
    out = work / cap
    cmd = [sys.executable, "-m", "benchmarks.latency", "--models", str(args.models), "--precisions", "fp32",
           "--devices", "cpu,openvino", "--ov-precisions", "fp32,bf16,int8", "--threads", str(args.threads),
           "--batches", "6", "--warmup", str(args.warmup), "--runs", str(args.runs), "--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    proc = run_capped(cap, cmd, out / "ov-cache", args.timeout_s)
    if isinstance(proc, str):
        return {"failed": proc}
    if not (out / "latency.json").is_file():
        return {"failed": "exit 0 but no latency.json"}
    return json.loads((out / "latency.json").read_text(encoding="utf-8"))


def gated(models: Path, file: str) -> set[str]:
    """The lower precisions whose gate passed for this very file (`edge.gates.gate_status`)."""
    return {p for p in ("int8", "bf16") if (models / file).is_file() and gate_status(models / file, p)[0]}


def summarize_cap(cap: str, cls: str, runs: list[dict[str, Any]], models: Path) -> dict[str, Any]:
    """One cap's figures per model: the median over repeats of each backend's p50 per six-view frame,
    the gates passed, `auto`'s choice on the class and the fastest backend those gates allow."""
    got: dict[str, dict[str, list[float]]] = {}
    paired: dict[str, dict[str, list[float]]] = {}
    gmac: dict[str, float | None] = {}
    for run in runs:
        for r in run.get("results", []):
            if r["batch"] != 6:
                continue
            name = ("ONNX Runtime" if r["provider"] == "cpu" else "OpenVINO") + f" {r['precision']}"
            got.setdefault(r["file"], {}).setdefault(name, []).append(r["stats_ms"]["p50"])
            if r.get("speedup_paired"):
                paired.setdefault(r["file"], {}).setdefault(name, []).append(r["speedup_paired"])
            gmac[r["file"]] = r.get("gmac_per_frame")
    klass = next(c for c in CPU_CLASSES if c.name == cls)
    out = []
    for file, times in sorted(got.items()):
        p50 = {k: statistics.median(v) for k, v in times.items()}
        passed = gated(models, file)
        auto = f"OpenVINO {auto_cpu_precision(passed, klass.bf16)}"
        allowed = {k: v for k, v in p50.items() if k.endswith("fp32") or k.split()[-1] in passed}
        fastest = min(allowed, key=allowed.get) if allowed else None
        ratio = p50[auto] / p50[fastest] if auto in p50 and fastest else None
        out.append({"file": file, "gmac_per_frame": gmac[file], "p50_ms": p50, "repeats": len(runs),
                    "x_onnx_runtime_paired": {k: statistics.median(v) for k, v in paired.get(file, {}).items()},
                    "gates_passed": sorted(passed), "auto": auto, "fastest_allowed": fastest,
                    "auto_vs_fastest": ratio,
                    "auto_is_fastest": auto == fastest or (ratio is not None and ratio <= TIE)})
    failures = [r["failed"] for r in runs if "failed" in r]
    return {"cap": cap, "class": cls, "onednn_max_cpu_isa": None if cap == "native" else cap, "models": out,
            "failed": failures, "skipped": [s for r in runs for s in r.get("skipped", [])]}


def fastest_cell(row: dict[str, Any]) -> str:
    """The fastest backend the gates allow, and how much slower auto's choice is when it is another."""
    fastest, ratio = row["fastest_allowed"] or "", row.get("auto_vs_fastest")
    if fastest == row["auto"] or ratio is None:
        return fastest
    return f"{fastest} (auto's x{ratio:.2f}: {'a tie' if row['auto_is_fastest'] else 'auto is slower'})"


def markdown(result: dict[str, Any]) -> str:
    """The report: one row per cap and model, p50 ms per six-view frame of each backend."""
    m, s = result["machine"], result["settings"]
    rows = []
    for c in result["caps"]:
        for r in c["models"]:
            x = r.get("x_onnx_runtime_paired", {})
            cells = [(f"{r['p50_ms'][b]:.2f}" + (f" (x{x[b]:.2f})" if b in x and b != BACKENDS[0] else ""))
                     if b in r["p50_ms"] else "" for b in BACKENDS]
            rows.append([c["cap"], c["class"], r["file"], r["gmac_per_frame"], *cells,
                         ", ".join(r["gates_passed"]) or "none", r["auto"],
                         fastest_cell(r)])
    text = ["# CPU classes\n\n",
            f"Machine `{m['name']}`: {m['cpu']}, {s['threads']} threads, own class `{m['cpu_class']}`; ONNX Runtime "
            f"{m['onnxruntime']}, OpenVINO {m.get('openvino')}. One six-view frame (batch 6), p50 ms, the backends "
            f"of a model interleaved in one child process per cap, {s['warmup']} warm-up and {s['runs']} timed runs"
            f", median over {s['repeats']} repeat(s) of the caps in turn; xN: the median of the per-round ratios "
            "ONNX Runtime / this backend (above 1: faster than ONNX Runtime); within 5% of the fastest p50 counts "
            "as a tie.\n\n",
            "A cap (ONEDNN_MAX_CPU_ISA) limits the oneDNN kernels inside OpenVINO only: OpenVINO's own kernels "
            "are not capped in its release builds and ONNX Runtime's MLAS never is (its figures are this CPU's). "
            "Each row emulates the class's OpenVINO; it is not a measurement on such a CPU.\n\n",
            md_table(["cap", "class", "model", "GMAC/frame", *BACKENDS, "gates passed", "auto picks",
                      "fastest the gates allow"], rows)]
    fails = [f"- {c['cap']}: {f}\n" for c in result["caps"] for f in c["failed"]]
    if fails:
        text.append("\nFailed:\n\n" + "".join(fails))
    return "".join(text)


def parse_args(argv: list[str] | None) -> Any:
    p = parser("python -m benchmarks.cpu_classes", __doc__)
    add_models(p, "folder with the FP32 .onnx files, their INT8 IRs and gates (default: models/)")
    p.add_argument("--caps", default="native,AVX512_CORE_VNNI,AVX512_CORE,AVX2",
                   help=f"comma-separated: native and ONEDNN_MAX_CPU_ISA values ({', '.join(CAP_CLASS)})")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: the usable cores)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per backend (default 5)")
    p.add_argument("--runs", type=int, default=40, help="timed interleaved rounds per cap (default 40)")
    p.add_argument("--repeats", type=int, default=1, help="times the caps run in turn (default 1)")
    p.add_argument("--timeout-s", type=float, default=600, help="limit per child process (default 600)")
    add_out_quick(p, "smoke run: a toy model, caps native and AVX2, 10 runs (the latency benchmark's --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.caps, args.threads, args.warmup, args.runs, args.repeats = "native,AVX2", 1, 3, 10, 1
    args.threads = args.threads or usable_cores()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every cap's child, then write the report; the exit code."""
    args = parse_args(argv)
    try:
        caps = parse_caps(args.caps)
    except ValueError as e:
        return failed(e)
    if not args.quick and not sorted(args.models.glob("*.onnx")):
        return failed(f"no .onnx files in {args.models} (train and convert models first, or use --quick)")
    work, out = scratch_dir("sixview-cpu-classes-"), out_dir(args.out, args.quick)
    classes = {cap: cap_class(cap) for cap in caps}
    runs: dict[str, list[dict[str, Any]]] = {cap: [] for cap in caps}
    for i in range(args.repeats):
        for cap in caps:
            runs[cap].append(run_cap(cap, args, work / str(i)))
    models = Path(runs[caps[0]][0].get("settings", {}).get("models", args.models))
    result = {"benchmark": "cpu_classes", "quick": args.quick,
              "machine": machine_info() | {"cpu_class": cpu_class().name},
              "settings": {"models": shown(models), "caps": caps, "threads": args.threads, "warmup": args.warmup,
                           "runs": args.runs, "repeats": args.repeats, "batch": 6},
              "caps": [summarize_cap(cap, classes[cap], runs[cap], models) for cap in caps]}
    write_results(out, "cpu_classes", result, markdown(result))
    log(wrote(out, "cpu_classes"))
    return 0 if all(c["models"] and not c["failed"] for c in result["caps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
