"""The Markdown report and chart of `benchmarks.pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._charts import save_figure, subplots
from benchmarks._common import machine_md, md_table

STAGES = ("decode", "preprocess", "batch", "infer", "merge", "total")
GOALS = {"voc": 0.90, "1080p": 0.85}
SCAN_GOAL = 0.90


def backend_md(b: dict[str, Any], quick: bool) -> str:
    """One backend's per-stage table, its model alone, and its scan."""
    rows = []
    for f in b["frames"]:
        st = f["stages_ms"]
        goal = f["goal"]
        met = "" if goal is None or quick else ("yes" if f["efficiency"] >= goal else "NO")
        rows.append([f"{f['frame']} {f['width']}x{f['height']}",
                     f"{f['decoded'][0]}x{f['decoded'][1]}",
                     *(f"{st[k]['mean']:.2f} ({st[k]['p95']:.2f})" for k in STAGES),
                     f["efficiency"], goal, met])
    text = [f"\n## {b['label']} ({b['provider']}, {b['precision']}; opened in {b['session_ms']:.0f} ms)\n\n",
            md_table(["frame", "decoded at", *STAGES, "efficiency", "goal", "met"], rows)]
    a = b["infer_alone_ms"]
    text.append(f"\nModel alone, one six-view batch: mean {a['mean']:.2f} ms, p50 {a['p50']:.2f}, "
                f"p95 {a['p95']:.2f} ms.\n")
    sc = b.get("scan")
    if sc:
        per = ", ".join(f"{k} {v:.2f}" for k, v in sc["mean_ms_per_image"].items())
        text.append(f"\nScan of `{sc['folder']}`: {sc['images']} images ({sc['errors']} errors) in "
                    f"{sc['seconds']:.2f} s = **{sc['images_per_s']:.1f} images/s** with {sc['workers']} decode "
                    f"workers, {sc['batch_images']} image(s) per batch. Ideal (the model alone on batches of that "
                    f"shape, measured just before) "
                    f"{sc['ideal_images_per_s']:.1f} images/s: efficiency **{sc['efficiency']:.3f}** "
                    f"(goal {SCAN_GOAL}). Mean ms per image inside the scan: {per}.\n")
    return "".join(text)


def side_by_side_md(result: dict[str, Any]) -> str:
    """Frame totals, the model alone and scan throughput per backend, with ratios to the first."""
    bs = result["backends"]
    if len(bs) < 2:
        return ""
    ref = bs[0]

    def cell(v: float, r: float, fmt: str = "{:.2f}") -> str:
        return fmt.format(v) + ("" if r == v else f" (x{r / v:.2f})")

    rows = []
    for i, f in enumerate(ref["frames"]):
        rows.append([f"{f['frame']} total p50 ms",
                     *(cell(b["frames"][i]["stages_ms"]["total"]["p50"], f["stages_ms"]["total"]["p50"]) for b in bs)])
    rows.append(["model alone, batch 6, p50 ms",
                 *(cell(b["infer_alone_ms"]["p50"], ref["infer_alone_ms"]["p50"]) for b in bs)])
    if all(b.get("scan") for b in bs):
        rate = [b["scan"]["images_per_s"] for b in bs]
        rows.append(["scan images/s", *(f"{r:.1f} (x{r / rate[0]:.2f})" for r in rate)])
    return ("\n## Side by side (frames and model alone interleaved in one run; xN: the first backend's time / "
            "this one's; scan: this one's rate / the first's, the median of rounds that alternate the backends)\n\n"
            + md_table(["measure", *(b["label"] for b in bs)], rows))


def markdown(result: dict[str, Any]) -> str:
    """The report: per backend the per-stage table, efficiency against the goals, scan throughput;
    then the backends side by side."""
    s = result["settings"]
    text = ["# Six-view pipeline\n", machine_md(result["machine"]),
            f"\nModel `{s['model']}` (threads {s['threads'] or 'default'},"
            f" input {s['input_size'][0]}x{s['input_size'][1]}); {s['warmup']} warm-up and {s['runs']} timed"
            " frames each. Stage times: mean ms (p95). `preprocess` = six views rendered and converted to float RGB;"
            " `batch` = the rest of classify outside the model and the merge (batch packing, verdict)."
            " Efficiency = infer / (total - decode), from the means.\n"]
    text += [backend_md(b, result["quick"]) for b in result["backends"]]
    if result.get("scan_skipped"):
        text.append(f"\nScan skipped: {result['scan_skipped']}\n")
    text.append(side_by_side_md(result))
    return "".join(text)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Stacked bars: where a frame's time goes, per frame size."""
    bars = [(f"{f['frame']}\n{b['label']}" if len(result["backends"]) > 1 else f["frame"], f)
            for f_i in range(len(result["frames"])) for b in result["backends"] for f in [b["frames"][f_i]]]
    frames = [f for _, f in bars]
    fig, ax = subplots(figsize=(max(7, 1.3 * len(bars)), 3.8))
    bottom = np.zeros(len(frames))
    for k in ("decode", "preprocess", "batch", "infer", "merge"):
        v = np.array([f["stages_ms"][k]["mean"] for f in frames])
        ax.bar([name for name, _ in bars], v, bottom=bottom, label=k)
        bottom += v
    for i, f in enumerate(frames):
        ax.text(i, bottom[i], f"eff {f['efficiency']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("ms per frame (mean)")
    ax.set_title(f"sixview frame stages, {result['settings']['model']} on {result['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
