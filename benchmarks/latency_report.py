"""The Markdown report and chart of `benchmarks.latency`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._charts import save_figure, subplots
from benchmarks._common import machine_md, md_table
from edge.metadata import VIEWS_PER_FRAME

VIEWS = VIEWS_PER_FRAME


def frame_gmac(path: Path) -> float | None:
    """Multiply-adds of one six-view frame through an ONNX file, in GMAC (`convert.macs.frame_macs`);
    None without the `onnx` package (a runtime-only install) or for a graph it cannot count."""
    try:
        from convert.macs import frame_macs

        return frame_macs(path) / 1e9
    except Exception:  # noqa: BLE001 (no onnx, or shape inference failed: the latency still counts)
        return None


def gmac_cell(row: dict[str, Any]) -> str:
    """A row's GMAC per six-view frame for a table ('' when unknown)."""
    g = row.get("gmac_per_frame")
    return "" if g is None else f"{g:.3f}" if g < 10 else f"{g:.1f}"


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
        rows.append([file, gmac_cell(next(iter(g.values()))), threads, batch, *cells])
    names = [c.replace("cpu ", "ONNX Runtime ").replace("openvino ", "OpenVINO ") for c in cols]
    return ("\n## Side by side (interleaved in one run; p50 ms per batch; xN: ONNX Runtime's p50 / this p50, "
            "paired: median of the per-round ratios)\n\n"
            + md_table(["model", "GMAC/frame", "threads", "batch", *names], rows))


def markdown(result: dict[str, Any]) -> str:
    """The report: machine, settings, one row per configuration, skipped configurations."""
    rows = [[r["file"], gmac_cell(r), r["precision"], r["provider"] + (" +iob" if r["io_binding"] else ""),
             r["threads"], r["batch"], r["session_ms"], r["first_infer_ms"],
             *(r["stats_ms"][k] for k in ("mean", "std", "p50", "p90", "p95", "p99", "n")),
             r["views_per_s"], r["frames_per_s"]] for r in result["results"]]
    s = result["settings"]
    timed = f"{s['budget_s']} s of timed runs" if s["budget_s"] else f"{s['runs']} timed runs"
    m = result["machine"]
    cls = (f"CPU class `{m['cpu_class']}` (what `--device auto` chooses by; docs/devices.md)"
           + (f", oneDNN capped at {m['onednn_max_cpu_isa']}" if m.get("onednn_max_cpu_isa") else "") + ".\n"
           if m.get("cpu_class") else "")
    text = ["# Model latency\n", machine_md(m), cls,
            f"\n{s['warmup']} warm-up runs, then {timed} per configuration; times in ms per batch;"
            " session = session creation (OpenVINO: compile, from its cache when it holds the model),"
            " first = first inference (batch 6). frames/s counts six-view frames; GMAC/frame: multiply-adds"
            " of a six-view frame (convolutions and matrix products; an INT8 IR: its ONNX file's graph).\n\n",
            md_table(["model", "GMAC/frame", "precision", "provider", "threads", "batch", "session", "first", "mean",
                      "std", "p50", "p90", "p95", "p99", "n", "views/s", "frames/s"], rows)]
    if result["skipped"]:
        text.append("\nSkipped:\n\n" + "".join(f"- {k['file']} on {k['device']}: {k['reason']}\n"
                                                for k in result["skipped"]))
    text.append(side_by_side(result))
    return "".join(text)


def plot(result: dict[str, Any], path: Path) -> Path:
    """ms per six-view frame and views/s against batch size, one line per configuration."""
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in result["results"]:
        key = f"{r['file']} {r['provider']} {r['precision']}{' iob' if r['io_binding'] else ''} t{r['threads']}"
        series.setdefault(key, []).append(r)
    for key, rs in series.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        b = [r["batch"] for r in rs]
        per_frame = np.array([r["ms_per_frame"] for r in rs])
        p90 = np.array([r["stats_ms"]["p90"] * r["ms_per_frame"] / r["stats_ms"]["mean"] for r in rs])
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
    return save_figure(fig, path)
